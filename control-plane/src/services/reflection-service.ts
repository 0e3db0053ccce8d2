import { create, type DescFile, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import * as v1 from "@redflag/gen/grpc/reflection/v1/reflection_pb";
import * as v1alpha from "@redflag/gen/grpc/reflection/v1alpha/reflection_pb";

// gRPC server reflection (grpc.reflection.v1 and the older v1alpha that some tools still ask
// first), answered from the descriptors generated into gen/: the schema clients such as grpcurl,
// grpcui, Postman, Kreya and `buf curl` read to call RedFlag without the .proto files. It gives the
// schema only, which is public anyway (proto/ in the repository): calling an RPC still needs
// the credentials its line in auth/policy.ts asks for.

// Requests one stream may make, and the longest name a request may carry.
export const MAX_REQUESTS_PER_STREAM = 1_000;
const MAX_NAME = 512;

interface Index {
  services: string[];
  byFilename: Map<string, DescFile>;
  bySymbol: Map<string, DescFile>;
  // Message types, for extension questions (RedFlag defines no extensions).
  messages: Set<string>;
}

function buildIndex(served: readonly DescService[]): Index {
  const byFilename = new Map<string, DescFile>();
  const bySymbol = new Map<string, DescFile>();
  const messages = new Set<string>();
  const add = (file: DescFile) => {
    if (byFilename.has(file.proto.name)) return;
    byFilename.set(file.proto.name, file);
    for (const type of nestedTypes(file)) {
      bySymbol.set(type.typeName, file);
      if (type.kind === "message") {
        messages.add(type.typeName);
        for (const field of type.fields) bySymbol.set(`${type.typeName}.${field.name}`, file);
      }
      if (type.kind === "enum") for (const value of type.values) bySymbol.set(`${type.typeName}.${value.name}`, file);
      if (type.kind === "service") for (const method of type.methods) bySymbol.set(`${type.typeName}.${method.name}`, file);
    }
    for (const dep of file.dependencies) add(dep);
  };
  for (const s of served) add(s.file);
  return { services: served.map((s) => s.typeName).sort(), byFilename, bySymbol, messages };
}

// The two versions' messages are the same, field for field; v1alpha's are answered through v1's.
type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

// One stream's answers: a file and the files it imports, each file once per stream (as the
// reference servers do: the client keeps what it was sent).
function answerer(index: Index) {
  const sent = new Set<string>();
  const files = (file: DescFile): Uint8Array[] => {
    const out: Uint8Array[] = [];
    const walk = (f: DescFile) => {
      if (sent.has(f.proto.name)) return;
      sent.add(f.proto.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      for (const dep of f.dependencies) walk(dep);
    };
    walk(file);
    return out;
  };
  const error = (code: Code, message: string): Response["messageResponse"] => ({ case: "errorResponse", value: create(v1.ErrorResponseSchema, { errorCode: code, errorMessage: message }) });
  const fileAnswer = (file: DescFile | undefined, what: string): Response["messageResponse"] =>
    file ? { case: "fileDescriptorResponse", value: create(v1.FileDescriptorResponseSchema, { fileDescriptorProto: files(file) }) } : error(Code.NotFound, `${what} not found`);

  return (req: Request): Response => {
    const r = req.messageRequest;
    let messageResponse: Response["messageResponse"];
    const name = typeof r.value === "string" ? r.value : r.case === "fileContainingExtension" ? r.value.containingType : "";
    if (name.length > MAX_NAME) messageResponse = error(Code.InvalidArgument, `names are at most ${MAX_NAME} characters`);
    else if (r.case === "listServices") {
      messageResponse = { case: "listServicesResponse", value: create(v1.ListServiceResponseSchema, { service: index.services.map((n) => ({ name: n })) }) };
    } else if (r.case === "fileByFilename") messageResponse = fileAnswer(index.byFilename.get(r.value), `file ${r.value}`);
    else if (r.case === "fileContainingSymbol") messageResponse = fileAnswer(index.bySymbol.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
    else if (r.case === "fileContainingExtension") messageResponse = error(Code.NotFound, `no extension ${r.value.extensionNumber} of ${r.value.containingType}`);
    else if (r.case === "allExtensionNumbersOfType") {
      messageResponse = index.messages.has(r.value)
        ? { case: "allExtensionNumbersResponse", value: create(v1.ExtensionNumberResponseSchema, { baseTypeName: r.value, extensionNumber: [] }) }
        : error(Code.NotFound, `type ${r.value} not found`);
    } else messageResponse = error(Code.InvalidArgument, "the request asks nothing (set one of the message_request fields)");
    return create(v1.ServerReflectionResponseSchema, { validHost: req.host.slice(0, MAX_NAME), originalRequest: req, messageResponse });
  };
}

async function* serve(index: Index, requests: AsyncIterable<Request>): AsyncGenerator<Response> {
  const answer = answerer(index);
  let count = 0;
  for await (const req of requests) {
    if (++count > MAX_REQUESTS_PER_STREAM) throw new ConnectError(`at most ${MAX_REQUESTS_PER_STREAM} reflection requests per stream; open another`, Code.ResourceExhausted);
    yield answer(req);
  }
}

// `served`: the services this server serves, the reflection and health services included.
export function createReflectionServices(served: readonly DescService[]) {
  const index = buildIndex(served);
  const v1Impl: ServiceImpl<typeof v1.ServerReflection> = {
    serverReflectionInfo: (requests) => serve(index, requests),
  };
  // Same fields, same numbers: the messages cross by their bytes.
  const v1alphaImpl: ServiceImpl<typeof v1alpha.ServerReflection> = {
    async *serverReflectionInfo(requests) {
      const asV1 = async function* () {
        for await (const r of requests) yield fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, r));
      };
      for await (const res of serve(index, asV1())) yield fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(v1.ServerReflectionResponseSchema, res));
    },
  };
  return { v1: v1Impl, v1alpha: v1alphaImpl };
}

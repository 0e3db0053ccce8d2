import { Code, ConnectError } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { requestIdFrom } from "../request-context.ts";

// The refusals a request meets before any handler or interceptor runs, in the form each protocol's
// clients expect:
// - an RPC path the server does not serve: gRPC and gRPC-Web get HTTP 200 with grpc-status 12
//   (UNIMPLEMENTED) in a trailers-only answer, as gRPC servers do (grpcio and grpc-go read a 404
//   as a transport failure); Connect gets 404 with the JSON error `unimplemented` (the Connect
//   protocol's mapping). Other requests go on to the web console and plain routes.
// - a known RPC with the wrong HTTP method (405) or content type (415): connect answers those with
//   an empty body; they get `Allow` or `Accept-Post` (RFC 9110, RFC 9112's POST hint) and a line
//   saying what would work. A bidirectional stream over HTTP/1.1 (505) is UNIMPLEMENTED in the
//   caller's protocol.
// - every answer carries `x-request-id`: the caller's when it looks like an ID, else a new one.

// "/package.Service/Method", as every RPC protocol here forms its paths.
const RPC_PATH = /^\/([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\/([A-Za-z_][A-Za-z0-9_]*)$/;

export type RpcFamily = "grpc" | "grpc-web" | "connect";

// Which RPC protocol a content type belongs to; undefined for anything else (a browser, a probe).
export function rpcFamily(contentType: string | undefined): RpcFamily | undefined {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  if (type === "application/json" || type === "application/proto" || type.startsWith("application/connect+")) return "connect";
  return undefined;
}

export interface PlainAnswer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

// The answer to an RPC request for a path no service here serves; undefined when the request is
// not an RPC (wrong shape, method or content type), so the console and plain routes may have it.
export function unknownRpc(
  method: string,
  path: string,
  contentType: string | undefined,
  services: ReadonlySet<string>,
  requestId: string,
): PlainAnswer | undefined {
  const family = rpcFamily(contentType);
  const match = RPC_PATH.exec(path);
  if (!family || !match || method !== "POST") return undefined;
  const [, service, name] = match;
  const message = services.has(service!) ? `unknown method ${name} for service ${service}` : `unknown service ${service}`;
  if (family === "connect") {
    return {
      status: 404,
      headers: { "content-type": "application/json", "x-request-id": requestId },
      body: errorToJsonBytes(new ConnectError(message, Code.Unimplemented), {}),
    };
  }
  // Trailers-only: the status in the headers, no messages.
  const type = (contentType ?? "").split(";")[0]!.trim();
  return {
    status: 200,
    headers: { "content-type": type, "grpc-status": String(Code.Unimplemented), "grpc-message": encodeURIComponent(message), "x-request-id": requestId },
    body: new Uint8Array(0),
  };
}

// One request ID per call: set on the request, so the interceptors log and echo the same one,
// and returned for the refusals connect makes before they run.
export function takeRequestId(header: Headers): string {
  const requestId = requestIdFrom(header.get("x-request-id"));
  header.set("x-request-id", requestId);
  return requestId;
}

// The content types an RPC of this kind is called with, Connect's first.
function contentTypes(h: UniversalHandler): string[] {
  const connect = h.method.methodKind === "unary" ? ["application/json", "application/proto"] : ["application/connect+json", "application/connect+proto"];
  return [...connect, "application/grpc", "application/grpc+proto", "application/grpc+json", "application/grpc-web+proto", "application/grpc-web+json"];
}

const text = (s: string) => new TextEncoder().encode(s);

async function* once(bytes: Uint8Array) {
  yield bytes;
}

// connect's own refusals (405, 415, 505), explained; every answer with the request ID.
export function explainRefusal(res: UniversalServerResponse, h: UniversalHandler, method: string, contentType: string, requestId: string): UniversalServerResponse {
  const header = new Headers(res.header);
  if (!header.has("x-request-id")) header.set("x-request-id", requestId);
  const rpc = `${h.service.typeName}/${h.method.name}`;
  const explained = (line: string) => {
    header.set("content-type", "text/plain; charset=utf-8");
    header.delete("content-length");
    return { ...res, header, body: once(text(`${line}\n`)) };
  };
  if (res.status === 405 && !res.body) {
    header.set("allow", h.allowedMethods.join(", "));
    const get = h.allowedMethods.includes("GET") ? " (or GET with the Connect protocol's query parameters)" : "";
    return explained(`${method} is not allowed for ${rpc}: call it with POST${get}`);
  }
  // connect checks the HTTP version of a bidirectional stream before the content type: a request
  // no protocol takes is first of all that (415), whatever its HTTP version.
  if (res.status === 505 && !res.body && !rpcFamily(contentType)) res = { ...res, status: 415 };
  if (res.status === 415 && !res.body) {
    const types = contentTypes(h);
    header.set("accept-post", types.join(", "));
    return explained(`${contentType ? `content type "${contentType.slice(0, 100)}"` : "a request without a content type"} is not supported for ${rpc}; use one of ${types.join(", ")}`);
  }
  if (res.status === 505 && !res.body) {
    // A bidirectional stream over HTTP/1.1 (connect closes the connection after it, so a client
    // coded for full duplex does not hang): said as the caller's protocol says UNIMPLEMENTED.
    const message = `${rpc} streams both ways and needs HTTP/2`;
    const family = rpcFamily(contentType);
    if (family === "grpc" || family === "grpc-web") {
      header.set("content-type", contentType.split(";")[0]!.trim());
      header.set("grpc-status", String(Code.Unimplemented));
      header.set("grpc-message", encodeURIComponent(message));
      return { ...res, status: 200, header, body: once(new Uint8Array(0)) };
    }
    header.set("content-type", "application/json");
    return { ...res, header, body: once(errorToJsonBytes(new ConnectError(message, Code.Unimplemented), {})) };
  }
  return { ...res, header };
}

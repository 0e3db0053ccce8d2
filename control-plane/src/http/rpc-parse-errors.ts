import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  createEndStreamSerialization,
  endStreamFlag,
  errorFromJsonBytes,
  errorToJsonBytes,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

// connect answers some requests that are the caller's mistake with Internal, before any
// interceptor runs: Protobuf bytes it cannot decode ("parse binary: premature EOF"), a message
// flagged compressed when the request declares no compression, a compressed body that does not
// decompress (a JSON body that does not decode already gets InvalidArgument). This turns exactly
// those errors (CALLER_FAULTS) into InvalidArgument with a message saying what was wrong, in each
// protocol's own form: Connect unary (the JSON error body), Connect streaming (the end-of-stream
// message), gRPC (the trailers) and gRPC-Web (the trailer frame). Every other response passes
// through unchanged. (A streaming call reads its request inside the interceptors:
// errorInterceptor does the same there.)
export async function parseErrorsAsInvalidArgument(
  res: UniversalServerResponse,
  method: DescMethod,
  onRefused: (message: string) => void,
): Promise<UniversalServerResponse> {
  const contentType = res.header?.get("content-type") ?? "";
  if (res.body && contentType.startsWith("application/grpc")) res = { ...res, body: unicodeSafe(res.body, contentType, res.trailer, onRefused) };
  const refuse = (err: ConnectError) => {
    const refused = asInvalidArgument(err, method);
    onRefused(refused.rawMessage);
    return refused;
  };

  if (res.body && res.status === 500 && contentType.startsWith("application/json")) {
    const bytes = await readAll(res.body, MAX_ERROR_BYTES);
    if (bytes) {
      const err = errorFromJsonBytes(bytes, undefined, new ConnectError("", Code.Unknown));
      if (isCallerFault(err)) {
        const json = errorToJsonBytes(refuse(err), {});
        const header = new Headers(res.header);
        if (header.has("content-length")) header.set("content-length", String(json.byteLength));
        return { ...res, status: codeToHttpStatus(Code.InvalidArgument), header, body: once(json) };
      }
      return { ...res, body: once(bytes) };
    }
    return res;
  }

  if (res.body && (contentType.startsWith("application/grpc-web") || contentType.startsWith("application/connect+"))) {
    const first = await firstEnvelope(res.body);
    if (!first.envelope) return { ...res, body: first.body };
    const { flags, data } = first.envelope;
    if (contentType.startsWith("application/grpc-web") && flags === trailerFlag) {
      const trailer = trailerParse(data);
      const err = findTrailerError(trailer);
      if (err && isCallerFault(err)) {
        setTrailerStatus(trailer, refuse(err));
        return { ...res, body: once(encodeEnvelope(trailerFlag, trailerSerialize(trailer)), first.rest) };
      }
    } else if (contentType.startsWith("application/connect+") && flags === endStreamFlag) {
      const serialization = createEndStreamSerialization({});
      try {
        const end = serialization.parse(data);
        if (end.error && isCallerFault(end.error)) {
          const bytes = serialization.serialize({ metadata: end.metadata, error: refuse(end.error) });
          return { ...res, body: once(encodeEnvelope(endStreamFlag, bytes), first.rest) };
        }
      } catch {
        // not an end-of-stream message of ours: leave it
      }
    }
    return { ...res, body: first.body };
  }

  // gRPC: the status goes in the trailers, which the handler fills in while the body is read.
  if (res.body && res.trailer && contentType.startsWith("application/grpc")) {
    const trailer = res.trailer;
    const body = res.body;
    return {
      ...res,
      body: (async function* () {
        yield* body;
        const err = findTrailerError(trailer);
        if (err && isCallerFault(err)) setTrailerStatus(trailer, refuse(err));
      })(),
    };
  }
  return res;
}

// gRPC and gRPC-Web carry the error message percent-encoded, and connect's encoder throws on text
// that is not well-formed UTF-16 (encodeURIComponent's URIError): an error message that quotes an
// unpaired surrogate from the request (JSON "\ud800" where a number belongs) ended the response
// without any status (HTTP/2: a bare reset; HTTP/1.1: an answer that never ends). connect has set
// the status code by then (gRPC) or lost it (gRPC-Web: InvalidArgument, since the text came from
// the request); the message says what was wrong.
const NOT_UNICODE = "the request contains text that is not valid Unicode (an unpaired UTF-16 surrogate)";
const notUnicodeStatus = () => new Headers({ "grpc-status": String(Code.InvalidArgument), "grpc-message": encodeURIComponent(NOT_UNICODE) });
const notUnicodeTrailerFrame = () => encodeEnvelope(trailerFlag, trailerSerialize(notUnicodeStatus()));

// The same, when it happens before connect hands over the response (it waits for the first
// bytes of the body, and here those are the error): the whole answer is built here instead.
export function unicodeFailure(requestContentType: string, err: unknown, onRefused: (message: string) => void): UniversalServerResponse {
  if (!(err instanceof URIError) || !requestContentType.startsWith("application/grpc")) throw err;
  onRefused(NOT_UNICODE);
  const header = new Headers({ "content-type": requestContentType.split(";")[0]! });
  if (requestContentType.startsWith("application/grpc-web")) return { status: 200, header, body: once(notUnicodeTrailerFrame()) };
  // gRPC: trailers-only
  notUnicodeStatus().forEach((value, key) => header.set(key, value));
  return { status: 200, header, body: once(new Uint8Array(0)) };
}

async function* unicodeSafe(
  body: AsyncIterable<Uint8Array>,
  contentType: string,
  trailer: Headers | undefined,
  onRefused: (message: string) => void,
): AsyncGenerator<Uint8Array> {
  try {
    yield* body;
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    onRefused(NOT_UNICODE);
    if (contentType.startsWith("application/grpc-web")) yield notUnicodeTrailerFrame();
    else if (trailer) {
      // connect set the status code before it threw on the message: keep it
      const code = trailer.get("grpc-status");
      notUnicodeStatus().forEach((value, key) => trailer.set(key, value));
      if (code) trailer.set("grpc-status", code);
    }
  }
}

// An error body or frame is small; anything larger is not one of these.
const MAX_ERROR_BYTES = 64 * 1024;

// connect's Internal errors that only a request's bytes cause, and what the caller is told.
const CALLER_FAULTS: { matches: (message: string) => boolean; explain: (err: ConnectError, method: DescMethod) => string }[] = [
  {
    matches: (m) => m.startsWith("parse binary: "),
    explain: (err, method) => `the request is not a valid ${method.input.typeName}: ${err.rawMessage.slice("parse binary: ".length)}`,
  },
  {
    matches: (m) => m === "received compressed envelope, but do not know how to decompress",
    explain: () => "a request message is flagged compressed, but the request declares no compression (grpc-encoding or connect-content-encoding)",
  },
  {
    matches: (m) => m === "decompression failed",
    explain: (_err, method) => `the request's ${method.input.typeName} could not be decompressed with the compression it declares`,
  },
];

export const isCallerFault = (err: ConnectError) => err.code === Code.Internal && CALLER_FAULTS.some((f) => f.matches(err.rawMessage));

export function asInvalidArgument(err: ConnectError, method: DescMethod): ConnectError {
  const fault = CALLER_FAULTS.find((f) => f.matches(err.rawMessage))!;
  return new ConnectError(fault.explain(err, method), Code.InvalidArgument, err.metadata);
}

async function* once(bytes: Uint8Array, rest?: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield bytes;
  if (rest) yield* rest;
}

// The whole body when it is at most `max` bytes; undefined otherwise (and then the body is spent,
// which only happens for an error response far larger than any connect writes).
async function readAll(body: AsyncIterable<Uint8Array>, max: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// Reads just enough of an enveloped body for its first envelope. `body` replays everything read
// and then the rest; `rest` is what follows the first envelope.
async function firstEnvelope(body: AsyncIterable<Uint8Array>): Promise<{
  envelope: { flags: number; data: Uint8Array } | undefined;
  body: AsyncIterable<Uint8Array>;
  rest: AsyncIterable<Uint8Array>;
}> {
  const it = body[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  const remaining = (prefix: Uint8Array): AsyncIterable<Uint8Array> => ({
    async *[Symbol.asyncIterator]() {
      if (prefix.byteLength > 0) yield prefix;
      for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
    },
  });
  for (;;) {
    if (head.length >= 5) {
      const size = head.readUInt32BE(1);
      if (size > MAX_ERROR_BYTES) return { envelope: undefined, body: remaining(head), rest: remaining(new Uint8Array(0)) };
      if (head.length >= 5 + size) {
        return {
          envelope: { flags: head[0]!, data: head.subarray(5, 5 + size) },
          body: remaining(head),
          rest: remaining(head.subarray(5 + size)),
        };
      }
    }
    const next = await it.next();
    if (next.done) return { envelope: undefined, body: remaining(head), rest: remaining(new Uint8Array(0)) };
    head = Buffer.concat([head, next.value]);
  }
}

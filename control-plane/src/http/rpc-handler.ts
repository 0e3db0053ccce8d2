import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import http2 from "node:http2";
import type net from "node:net";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../log.ts";
import { requestIdFrom } from "../request-context.ts";
import type { Cors } from "./cors.ts";
import { explainRefusal, takeRequestId, unknownRpc } from "./protocol-refusals.ts";
import { parseErrorsAsInvalidArgument, unicodeFailure } from "./rpc-parse-errors.ts";
import { bodyTimedOut } from "./server.ts";

// connect-node's own types for Node requests and responses (HTTP/1.1 or HTTP/2 compatibility).
type NodeRequest = Parameters<typeof universalRequestFromNodeRequest>[0];
type NodeResponse = Parameters<typeof universalResponseToNodeResponse>[1];

export interface RpcHandlers {
  // HTTP/1.1 requests and HTTP/2 requests for non-RPC paths (Node's compatibility API):
  // RPCs through connect-node's adapter functions, everything else to `fallback`.
  request(req: NodeRequest, res: NodeResponse): void;
  // HTTP/2 streams: an RPC is served straight on the stream, without Node's compatibility
  // objects (Http2ServerRequest/Response, their stream states and header copies), which are
  // most of what a held long-poll costs. Returns false for any other path.
  stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean;
}

export interface RpcHandlerOptions {
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
  readMaxBytes?: number;
  // An HTTP/2 response the client does not read for this long is reset; unset: never.
  responseStallMs?: number;
  // From the connection's peer address and the request's X-Forwarded-For.
  contextValues?: (remoteAddress: string | undefined, forwardedFor: string | string[] | undefined) => ContextValues;
  fallback: (req: NodeRequest, res: NodeResponse) => void;
  logger: Logger;
  // Cross-origin calls from the origins REDFLAG_CORS_ORIGINS names (cors.ts); unset: none.
  cors?: Cors | undefined;
}

const RESPONSE_COMPRESS_MIN_BYTES = 16 * 1024;

// The protocol work (Connect, gRPC, gRPC-Web; compression, timeouts, errors, limits) stays in
// connect's universal handlers, the same ones connect-node's adapter calls; only the HTTP/2
// plumbing around them is ours.
export function createRpcHandlers(opts: RpcHandlerOptions): RpcHandlers {
  const router = createConnectRouter({
    interceptors: opts.interceptors,
    readMaxBytes: opts.readMaxBytes,
    acceptCompression: [compressionGzip, compressionBrotli],
    // Responses are compressed from 16 KiB (connect's default is 1 KiB): a zlib stream costs
    // about as much to set up as a whole Register or a poll with a command (benchmark 9), and
    // saves nothing worth it on a few KiB. Big answers (a long command list, reports) still are.
    compressMinBytes: RESPONSE_COMPRESS_MIN_BYTES,
  });
  opts.routes(router);
  const stallMs = opts.responseStallMs;
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  // Bytes that do not decode as the request message are the caller's mistake (rpc-parse-errors.ts).
  const services = new Set(router.handlers.map((h) => h.service.typeName));
  const serve = (h: UniversalHandler, req: Parameters<UniversalHandler>[0]) => {
    const refused = (reason: string) => opts.logger.warn({ rpc: `${h.service.typeName}/${h.method.name}`, code: Code[Code.InvalidArgument], reason }, "rpc refused");
    const requestId = takeRequestId(req.header);
    const contentType = req.header.get("content-type") ?? "";
    const preflight = opts.cors?.preflight(req.method, req.header, h.allowedMethods);
    if (preflight) return Promise.resolve(explainRefusal(preflight, h, req.method, contentType, requestId));
    const decorate = (res: UniversalServerResponse) => (opts.cors ? opts.cors.decorate(res, req.header) : res);
    return h(req).then(
      async (res) => decorate(await parseErrorsAsInvalidArgument(explainRefusal(res, h, req.method, contentType, requestId), h.method, refused)),
      (err: unknown) => decorate(explainRefusal(unicodeFailure(contentType, err, refused), h, req.method, contentType, requestId)),
    );
  };
  const failed = (h: UniversalHandler, reason: unknown) => {
    const code = ConnectError.from(reason).code;
    if (code === Code.Aborted || code === Code.Canceled) return;
    opts.logger.warn({ err: reason, rpc: `${h.service.typeName}/${h.method.name}` }, "cannot write an RPC response");
  };

  return {
    request(req, res) {
      const handler = paths.get(pathOf(req.url ?? ""));
      if (!handler) {
        const answer = unknownRpc(req.method ?? "", pathOf(req.url ?? ""), req.headers["content-type"], services, requestIdFrom(header(req.headers["x-request-id"])));
        if (!answer) return opts.fallback(req, res);
        res.once("finish", () => dropUnreadRequest(req, { bytes: 0, linger: false }));
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
        return;
      }
      const read: BodyRead = { bytes: 0, linger: false };
      let ureq: ReturnType<typeof universalRequestFromNodeRequest>;
      try {
        ureq = {
          ...universalRequestFromNodeRequest(req, res, undefined, opts.contextValues?.(req.socket?.remoteAddress, req.headers["x-forwarded-for"])),
          body: nodeRequestBody(req, read),
        };
      } catch {
        // Without an authority (an HTTP/1.0 request with no Host header) connect cannot form the
        // request's URL and throws: refuse the request, not the process.
        res.writeHead(400, { "content-type": "text/plain" });
        res.end("a Host header is required\n");
        return;
      }
      // (on "finish": connect's universalResponseToNodeResponse waits for an "end" event that an
      // HTTP/1.1 response never emits)
      res.once("finish", () => dropUnreadRequest(req, read));
      serve(handler, ureq)
        .then((ures) => {
          // More left unread than will be dropped: the client must not send its next request on
          // this connection, which closes after the answer. An answer that closes the connection
          // anyway (connect's to a bidirectional stream over HTTP/1.1) lingers the same way, or
          // a client still sending its body meets a reset instead of the answer.
          if (!req.complete && !("stream" in req)) {
            const closes = ures.header?.get("connection")?.toLowerCase() === "close";
            if (closes || unreadBytes(req, read.bytes) > UNREAD_BODY_LIMIT) {
              res.setHeader("connection", "close");
              read.linger = true;
              lingerOnClose(req.socket);
            }
          }
          return universalResponseToNodeResponse(ures, res);
        })
        .catch((reason: unknown) => {
          failed(handler, reason);
          // An answer cut short must not leave the client waiting on a connection that never ends it.
          if (!res.writableEnded) res.destroy();
        });
    },

    stream(stream, headers) {
      const path = headers[":path"] ?? "";
      const handler = paths.get(pathOf(path));
      const authority = headers[":authority"] ?? headers.host;
      if (!handler && authority) {
        const answer = unknownRpc(headers[":method"] ?? "", pathOf(path), headers["content-type"], services, requestIdFrom(header(headers["x-request-id"])));
        if (!answer) return false;
        stream.on("error", ignore);
        // gRPC's trailers-only form: one HEADERS frame that ends the stream.
        const empty = answer.body.byteLength === 0;
        stream.respond({ ":status": answer.status, ...answer.headers }, { endStream: empty });
        if (!empty) stream.end(answer.body);
        dropUnreadBody(stream);
        return true;
      }
      if (!handler || !authority) return false;
      const socket = stream.session?.socket as TLSSocket | undefined;
      const aborted = new AbortController();
      // A reset or a session that went away: the call ends through "close" and the signal
      // (without a listener, the stream's "error" would be an uncaught exception).
      stream.on("error", ignore);
      stream.once("close", () => {
        const reason = errorFromResetCode(stream.rstCode);
        // Answered (its end written) and closed cleanly: the call is over and nothing waits on
        // the signal. Aborting anyway would build a DOMException, stack and all, on every call
        // (about 4 % of the server's CPU on idle polls, docs/benchmarks.md, benchmark 1). Not
        // writableFinished: Node usually closes a stream whose both sides ended before the last
        // write's callback, so a clean answer rarely counts as finished at "close".
        if (!reason && stream.writableEnded) return;
        aborted.abort(reason);
      });
      serve(handler, {
        httpVersion: "2.0",
        method: headers[":method"] ?? "",
        url: `${socket?.encrypted ? "https" : "http"}://${authority}${path}`,
        header: webHeaders(headers),
        body: requestBody(stream),
        signal: aborted.signal,
        contextValues: opts.contextValues?.(socket?.remoteAddress, headers["x-forwarded-for"]),
      })
        .then((ures) => writeToStream(ures, stream, stallMs))
        .catch((reason: unknown) => {
          // A stream the client already closed needs neither a log line nor a reset.
          if (stream.destroyed) return;
          failed(handler, reason);
          stream.destroy();
        });
      return true;
    },
  };
}

function ignore() {}

const header = (value: string | string[] | undefined) => (typeof value === "string" ? value : undefined);

interface BodyRead {
  // Bytes of the body read so far.
  bytes: number;
  // The answer closes the connection: everything still arriving is dropped until it does.
  linger: boolean;
  // The reader, while the body is being read.
  body?: AsyncGenerator<Uint8Array>;
}

// The request's chunks, like connect-node's own reader, except that a reader stopping early (after
// a message it cannot decode, or one too many) leaves the request alone instead of destroying it,
// and with it the connection the answer is about to be written to.
function nodeRequestBody(req: NodeRequest, read: BodyRead): AsyncGenerator<Uint8Array> {
  read.body = (async function* () {
    for await (const chunk of req.iterator({ destroyOnReturn: false })) {
      read.bytes += (chunk as Uint8Array).byteLength;
      yield chunk as Uint8Array;
    }
  })();
  return read.body;
}

// What the request's Content-Length says is still to come; without one (chunked), unknown.
function unreadBytes(req: NodeRequest, read: number): number {
  const length = Number(req.headers["content-length"]);
  return Number.isSafeInteger(length) && length >= 0 ? Math.max(0, length - read) : Infinity;
}

// The answer is out but the request body is not all read: on a keep-alive connection the next
// request would wait behind it for ever (Node reads no further while a body it started is unread).
// The rest is read and dropped, up to UNREAD_BODY_LIMIT; past that the connection is closed. When
// the answer said it closes the connection (lingering), everything is dropped until it does.
function dropUnreadRequest(req: NodeRequest, read: BodyRead) {
  if (req.complete || req.destroyed || "stream" in req) return;
  let dropped = 0;
  req.on("data", (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > UNREAD_BODY_LIMIT && !read.linger) req.socket.destroy();
  });
  // A reader that stopped left the request paused: a "data" listener alone would not resume it.
  req.resume();
  // A reader left half-way (a client stream its handler refused after one message) still listens
  // for "readable", which keeps the request paused whatever resume() says; ending it lets the
  // "data" listener above take over.
  void read.body?.return(undefined).catch(ignore);
}

// RFC 9112 9.6: a connection closed at once with request bytes unread is reset by the kernel, and
// a client still sending then meets EPIPE or ECONNRESET instead of reading the answer it was
// sent. So when Node closes this connection after the answer (Connection: close), only the
// writing side is closed; what still arrives is dropped (dropUnreadRequest) until the client
// closes its side, or LINGER_MS have passed.
export const LINGER_MS = 2000;

function lingerOnClose(socket: net.Socket) {
  socket.destroySoon = function lingeringClose(this: net.Socket) {
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    this.once("close", () => clearTimeout(timer));
  };
}

// The stream's chunks, like `for await (const chunk of stream)`, except that a reader stopping
// early (a body over the size limit) does not reset the stream: the error response still reaches
// the client.
async function* requestBody(stream: http2.ServerHttp2Stream): AsyncGenerator<Uint8Array> {
  for (;;) {
    if (bodyTimedOut.has(stream)) throw new ConnectError("the request body did not arrive in time", Code.DeadlineExceeded);
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) {
      yield chunk;
      continue;
    }
    if (stream.readableEnded) return;
    if (stream.destroyed) throw errorFromResetCode(stream.rstCode) ?? new ConnectError("the client closed the stream", Code.Canceled);
    await new Promise<void>((resolve) => {
      const next = () => {
        stream.off("readable", next);
        stream.off("end", next);
        stream.off("close", next);
        resolve();
      };
      stream.once("readable", next);
      stream.once("end", next);
      stream.once("close", next);
    });
  }
}

function pathOf(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}

function webHeaders(headers: http2.IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const key in headers) {
    if (key.startsWith(":")) continue;
    const value = headers[key];
    if (typeof value === "string") out.append(key, value);
    else if (Array.isArray(value)) for (const v of value) out.append(key, v);
  }
  return out;
}

function nodeHeaders(headers: Headers | undefined, into: http2.OutgoingHttpHeaders = {}): http2.OutgoingHttpHeaders {
  headers?.forEach((value, key) => {
    into[key] = value;
  });
  return into;
}

// Headers go out after the body's first chunk, so a handler can still set them (as in
// connect-node); gRPC trailers follow the body.
// Once the response has started, a stream with no activity (nothing written, nothing read by the
// client, so writes wait for flow control) for `stallMs` is reset: a client that stops reading
// holds nothing for long.
async function writeToStream(res: UniversalServerResponse, stream: http2.ServerHttp2Stream, stallMs: number | undefined): Promise<void> {
  const body = res.body?.[Symbol.asyncIterator]();
  try {
    let chunk = await body?.next();
    // Closed meanwhile: the client went away, or the request body timed out (server.ts).
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    const trailer = res.trailer;
    if (stallMs) stream.setTimeout(stallMs, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.respond(nodeHeaders(res.header, { ":status": res.status }), { waitForTrailers: trailer !== undefined });
    if (trailer) stream.once("wantTrailers", () => stream.sendTrailers(nodeHeaders(trailer)));
    while (chunk !== undefined && chunk.done !== true) {
      if (!stream.write(chunk.value)) await drained(stream);
      chunk = await body!.next();
    }
    stream.end();
    dropUnreadBody(stream);
  } finally {
    // Ends a server stream whose client went away.
    void body?.return?.().catch(() => {});
  }
}

// The answer is out, but the request body may still be arriving (connect stops reading once it
// has what it needs, for example after a message it cannot decode). Unread, it would hold the
// flow-control windows the connection's other streams share and grow the session's memory until
// Node refuses new streams (ENHANCE_YOUR_CALM), and the half-closed stream would count against
// the stream limit for good. So the rest is read and dropped, up to UNREAD_BODY_LIMIT; past that
// the client is asked to stop with RST_STREAM NO_ERROR (RFC 9113 8.1), which it must not take as
// a reason to discard the answer. A body that stops arriving meets the request timeout.
export const UNREAD_BODY_LIMIT = 1024 * 1024;

function dropUnreadBody(stream: http2.ServerHttp2Stream) {
  if (stream.readableEnded || stream.destroyed) return;
  let dropped = 0;
  stream.on("data", (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > UNREAD_BODY_LIMIT && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  });
  stream.resume();
}

function drained(stream: http2.ServerHttp2Stream): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", closed);
      resolve();
    };
    const closed = () => {
      stream.off("drain", done);
      reject(new ConnectError("the client closed the stream", Code.Canceled));
    };
    stream.once("drain", done);
    stream.once("close", closed);
  });
}

// As connect-node maps them: a reset is the client's cancel or a transport failure.
function errorFromResetCode(rstCode: number): ConnectError | undefined {
  const c = http2.constants;
  const error = (code: Code) => new ConnectError(`http/2 stream closed with error code 0x${rstCode.toString(16)}`, code);
  switch (rstCode) {
    case c.NGHTTP2_NO_ERROR:
    case c.NGHTTP2_STREAM_CLOSED:
      return undefined;
    case c.NGHTTP2_CANCEL:
      return error(Code.Canceled);
    case c.NGHTTP2_REFUSED_STREAM:
      return error(Code.Unavailable);
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return error(Code.ResourceExhausted);
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      return error(Code.PermissionDenied);
    default:
      return error(Code.Internal);
  }
}

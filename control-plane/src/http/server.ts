import { readFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { ListenerLimits } from "../config.ts";
import type { Logger } from "../log.ts";

const LISTEN_BACKLOG = 4096;

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;
// Takes an HTTP/2 stream before Node wraps it for `handler`; false leaves it to `handler`.
type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;


export interface RunningServer {
  readonly port: number;
  readonly url: string;
  close(graceMs?: number): Promise<void>;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n");
const EMPTY = Buffer.alloc(0);

// Serves Connect, gRPC and gRPC-Web on one port. With TLS, ALPN picks HTTP/2 or HTTP/1.1.
// In cleartext a connection is routed by its first bytes: the HTTP/2 client preface goes to the
// h2c server (agents), anything else to the HTTP/1.1 server (browsers, curl).
export async function startServer(opts: {
  handler: Handler;
  streamHandler?: StreamHandler;
  host: string;
  port: number;
  tls: { certFile: string; keyFile: string } | undefined;
  limits: ListenerLimits;
  logger: Logger;
}): Promise<RunningServer> {
  const limits = opts.limits;
  const h2Options = {
    settings: { maxConcurrentStreams: limits.maxStreamsPerConnection, maxHeaderListSize: limits.maxHeaderBytes },
  };
  const h1Options = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    maxHeaderSize: limits.maxHeaderBytes,
    // How often HTTP/1.1 connections are checked against the two timeouts above.
    connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4))),
  };
  const sockets = new Set<Duplex>();
  const sessions = new Set<http2.Http2Session>();
  const track = (socket: Duplex) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };

  let listener: net.Server;
  let h1: http.Server | undefined;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  if (opts.tls) {
    // One after the other: when both are missing, the certificate is the one named, every time.
    const cert = await readFile(opts.tls.certFile);
    const key = await readFile(opts.tls.keyFile);
    h2 = http2.createSecureServer({ cert, key, allowHTTP1: true, handshakeTimeout: limits.headersTimeoutMs, ...h2Options }, opts.handler);
    // The HTTP/1.1 side of a TLS port is Node's HTTP/1.1 server code run with this server as its
    // settings: set them before it listens (connection tracking starts then).
    Object.assign(h2, h1Options);
    h2.on("secureConnection", track);
    listener = h2;
  } else {
    h2 = http2.createServer(h2Options, opts.handler);
    h1 = http.createServer(h1Options, opts.handler as http.RequestListener);
    // This server never listens itself (sockets are handed to it), but its connection tracking,
    // which enforces headersTimeout/requestTimeout and lets closeIdleConnections work, starts
    // on "listening".
    h1.emit("listening");
    const h1Server = h1;
    const h2Server = h2;
    listener = net.createServer((socket) => {
      track(socket);
      // Until the first bytes say which protocol this is: a silent connection goes.
      socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
      let head = EMPTY;
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const n = Math.min(head.length, H2_PREFACE.length);
        const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        if (isH2 && head.length < H2_PREFACE.length) return; // could still be HTTP/2: wait for more
        socket.off("data", onData);
        socket.setTimeout(0);
        socket.pause();
        socket.unshift(head);
        // The socket's listeners share this closure's scope for the connection's lifetime: drop
        // the reference, which may pin a whole read buffer (64 KiB) per connection.
        head = EMPTY;
        if (isH2) {
          // The HTTP/2 session reads what is buffered on the socket before taking over its handle.
          h2Server.emit("connection", socket);
        } else {
          // The HTTP/1.1 parser takes over the handle; the unshifted bytes reach it once the stream flows.
          h1Server.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", onData);
      socket.on("error", () => socket.destroy());
    });
  }
  const streamHandler = opts.streamHandler;
  if (streamHandler) {
    // Node serves its compatibility API (the "request" event) from a "stream" listener of its
    // own; it runs only for the streams the stream handler leaves.
    const compat = h2.listeners("stream") as ((...args: unknown[]) => void)[];
    h2.removeAllListeners("stream");
    const server = h2;
    h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      if (streamHandler(stream, headers)) return;
      for (const listener of compat) listener.call(server, stream, headers, ...rest);
    });
  }
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    watchSession(session, limits);
  });
  listener.maxConnections = limits.maxConnections;
  let lastDropLog = 0;
  let dropped = 0;
  listener.on("drop", () => {
    dropped++;
    const now = Date.now();
    if (now - lastDropLog < 60_000) return;
    opts.logger.warn({ maxConnections: limits.maxConnections, refused: dropped }, "too many connections: refusing new ones (REDFLAG_MAX_CONNECTIONS)");
    lastDropLog = now;
    dropped = 0;
  });

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    // A fleet reconnecting at once after an outage sends thousands of SYNs together; Node's
    // default backlog of 511 drops the rest, and each dropped client waits out a SYN retransmit
    // (1 s, 3 s, 7 s…) inside its call's deadline. The kernel caps this at net.core.somaxconn.
    listener.listen({ port: opts.port, host: opts.host, backlog: LISTEN_BACKLOG }, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const address = listener.address() as net.AddressInfo;
  const scheme = opts.tls ? "https" : "http";
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;

  return {
    port: address.port,
    url: `${scheme}://${shownHost}:${address.port}`,
    async close(graceMs = 5000) {
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      for (const session of sessions) session.close();
      // HTTP/1.1 keep-alive connections close as soon as they have no request in flight.
      h1?.closeIdleConnections();
      const sweep = setInterval(() => h1?.closeIdleConnections(), 100);
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      await closed;
      clearInterval(sweep);
      clearTimeout(timer);
    },
  };
}

// An HTTP/2 session must open its first stream within the headers timeout, and is closed once it
// has had no open stream for the idle timeout. A stream whose request body has not arrived within
// the request timeout is answered 408 and closed.
function watchSession(session: http2.ServerHttp2Session, limits: ListenerLimits) {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const closeAfter = (ms: number) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (session.closed || session.destroyed) return;
      // GOAWAY, then the socket; a peer that does not let go is cut shortly after.
      session.close();
      setTimeout(() => session.destroy(), 1000).unref();
    }, ms);
    timer.unref();
  };
  closeAfter(limits.headersTimeoutMs);
  session.once("close", () => clearTimeout(timer));
  session.on("stream", (stream: http2.ServerHttp2Stream, _headers: http2.IncomingHttpHeaders, flags: number) => {
    open++;
    clearTimeout(timer);
    let body: NodeJS.Timeout | undefined;
    if ((flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0) {
      body = setTimeout(() => requestTimedOut(stream), limits.requestTimeoutMs);
      body.unref();
      stream.once("end", () => clearTimeout(body));
    }
    stream.once("close", () => {
      clearTimeout(body);
      if (--open === 0 && !session.closed) closeAfter(limits.idleTimeoutMs);
    });
  });
}

// Streams whose request body was cut by the request timeout: their reader (rpc-handler.ts) says so
// instead of handing on the part that arrived.
export const bodyTimedOut = new WeakSet<http2.ServerHttp2Stream>();

function requestTimedOut(stream: http2.ServerHttp2Stream) {
  if (stream.closed || stream.destroyed || stream.readableEnded) return;
  bodyTimedOut.add(stream);
  if (!stream.headersSent) {
    stream.respond({ ":status": 408, "content-type": "text/plain" });
    stream.end("the request body did not arrive in time\n");
  }
  // Tells the client to stop sending (RFC 9113 8.1): the answer above is complete.
  stream.close(http2.constants.NGHTTP2_NO_ERROR);
}

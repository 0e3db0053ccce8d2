import { readFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "./log.ts";

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
  logger: Logger;
}): Promise<RunningServer> {
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
    const [cert, key] = await Promise.all([readFile(opts.tls.certFile), readFile(opts.tls.keyFile)]);
    h2 = http2.createSecureServer({ cert, key, allowHTTP1: true }, opts.handler);
    h2.on("secureConnection", track);
    listener = h2;
  } else {
    h2 = http2.createServer({}, opts.handler);
    h1 = http.createServer({ keepAliveTimeout: 65_000 }, opts.handler as http.RequestListener);
    // This server never listens itself (sockets are handed to it), but its connection tracking,
    // which enforces headersTimeout/requestTimeout and lets closeIdleConnections work, starts
    // on "listening".
    h1.emit("listening");
    const h1Server = h1;
    const h2Server = h2;
    listener = net.createServer((socket) => {
      track(socket);
      let head = EMPTY;
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const n = Math.min(head.length, H2_PREFACE.length);
        const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        if (isH2 && head.length < H2_PREFACE.length) return; // could still be HTTP/2: wait for more
        socket.off("data", onData);
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
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(opts.port, opts.host, () => {
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

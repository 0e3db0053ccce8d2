import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AuthService, LoginRequestSchema } from "@redflag/gen/auth_service_pb";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { gzipSync } from "node:zlib";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRpcHandlers } from "./rpc-handler.ts";
import { startServer, type RunningServer } from "./server.ts";

// rpc-handler.ts serves RPCs with connect's own universal handlers and only does the HTTP/2
// plumbing itself; these tests pin that it answers like connect-node's adapter, so that an upgrade
// of @connectrpc/* that changes one and not the other fails here. Both run behind the same
// listener (server.ts: HTTP/1.1 and h2c on one port) with the same routes, limit and fallback:
// over HTTP/1.1 ours goes through rpc.request, over HTTP/2 through rpc.stream (no compatibility
// objects); the adapter always through Node's compatibility API.

const routes = (router: ConnectRouter) =>
  router.service(AuthService, {
    login(req) {
      if (req.username === "missing") throw new ConnectError("no such person", Code.NotFound);
      return { sessionToken: `token for ${req.username}` };
    },
  });
// Small, so an oversized body is cheap to send.
const READ_MAX_BYTES = 1024;
const fallback = (_req: unknown, res: { writeHead(s: number, h: Record<string, string>): unknown; end(b: string): unknown }) => {
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not here\n");
};
const logger = pino({ level: "silent" });
const limits = { headersTimeoutMs: 10_000, requestTimeoutMs: 10_000, idleTimeoutMs: 10_000, responseStallMs: 10_000, maxStreamsPerConnection: 100, maxConnections: 100, maxHeaderBytes: 16_384 };

let ours: RunningServer;
let theirs: RunningServer;
let adapterThrew: unknown;
beforeAll(async () => {
  const rpc = createRpcHandlers({ routes, interceptors: [], readMaxBytes: READ_MAX_BYTES, fallback, logger });
  ours = await startServer({ handler: rpc.request, streamHandler: rpc.stream, host: "127.0.0.1", port: 0, tls: undefined, limits, logger });
  const adapter = connectNodeAdapter({ routes, readMaxBytes: READ_MAX_BYTES, fallback });
  const guarded: typeof adapter = (req, res) => {
    try {
      adapter(req, res);
    } catch (err) {
      // Only the request without a Host header gets here (see the last test).
      adapterThrew = err;
      res.destroy();
    }
  };
  theirs = await startServer({ handler: guarded, host: "127.0.0.1", port: 0, tls: undefined, limits, logger });
});
afterAll(async () => {
  await ours?.close(0);
  await theirs?.close(0);
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  trailers: Record<string, string>;
}
// The date changes between answers; the others are Node's framing of the connection, not the RPC's.
const IGNORED = new Set(["date", "connection", "keep-alive", "transfer-encoding"]);
const clean = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).filter(([k]) => !IGNORED.has(k) && !k.startsWith(":")).map(([k, v]) => [k, String(v)]));

function h1(server: RunningServer, path: string, headers: Record<string, string>, body: Uint8Array): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, server.url), { method: "POST", agent: false, headers: { ...headers, "content-length": body.byteLength } });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: clean(res.headers), body: Buffer.concat(chunks).toString("latin1"), trailers: clean(res.trailers) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function h2(server: RunningServer, path: string, headers: Record<string, string>, body: Uint8Array): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(server.url);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, ...headers });
    let status = 0;
    let head: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      status = Number(h[":status"]);
      head = clean(h);
    });
    req.on("trailers", (t) => (trailers = clean(t)));
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("end", () => {
      session.close();
      resolve({ status, headers: head, body: Buffer.concat(chunks).toString("latin1"), trailers });
    });
    req.on("error", reject);
    req.end(body);
  });
}

const login = "/redflag.v1.AuthService/Login";
const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const binary = (username: string) => toBinary(LoginRequestSchema, create(LoginRequestSchema, { username }));
// A gRPC / gRPC-Web message: flags (0: not compressed), length, bytes.
const envelope = (bytes: Uint8Array) => {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(bytes.byteLength, 1);
  return Buffer.concat([head, bytes]);
};

const garbage = new Uint8Array([0x0a, 0x10, 1]); // field 1, 16 bytes long, then one byte
const badUtf8 = new Uint8Array([0x0a, 0x02, 0xff, 0xfe]); // field 1 (a string): not UTF-8
const connectJson = { "content-type": "application/json" };
const connectProto = { "content-type": "application/proto" };
const grpc = { "content-type": "application/grpc", te: "trailers" };
const grpcWeb = { "content-type": "application/grpc-web+proto" };

type Case = [name: string, via: typeof h1, path: string, headers: Record<string, string>, body: Uint8Array, expected: { status: number; grpcStatus?: string }];

// Answered the same by both: status, headers (but the date and connection handling, and the
// request ID only ours adds), body, trailers.
const same: Case[] = [
  ["Connect unary JSON over HTTP/1.1", h1, login, connectJson, json({ username: "sam" }), { status: 200 }],
  ["Connect unary JSON over HTTP/2", h2, login, connectJson, json({ username: "sam" }), { status: 200 }],
  ["Connect unary binary over HTTP/1.1", h1, login, connectProto, binary("sam"), { status: 200 }],
  ["Connect unary binary over HTTP/2", h2, login, connectProto, binary("sam"), { status: 200 }],
  ["Connect unary gzip-compressed JSON", h1, login, { ...connectJson, "content-encoding": "gzip" }, gzipSync(json({ username: "sam" })), { status: 200 }],
  ["Connect unary error from the handler", h2, login, connectJson, json({ username: "missing" }), { status: 404 }],
  ["gRPC", h2, login, grpc, envelope(binary("sam")), { status: 200, grpcStatus: "0" }],
  ["gRPC error from the handler", h2, login, grpc, envelope(binary("missing")), { status: 200, grpcStatus: "5" }],
  ["gRPC-Web over HTTP/1.1", h1, login, grpcWeb, envelope(binary("sam")), { status: 200 }],
  ["gRPC-Web over HTTP/2", h2, login, grpcWeb, envelope(binary("sam")), { status: 200 }],
  ["gRPC-Web error from the handler", h1, login, grpcWeb, envelope(binary("missing")), { status: 200 }],
  ["an oversized Connect body over HTTP/1.1", h1, login, connectJson, json({ username: "x".repeat(2000) }), { status: 429 }],
  ["an oversized Connect body over HTTP/2", h2, login, connectJson, json({ username: "x".repeat(2000) }), { status: 429 }],
  ["an oversized gRPC message", h2, login, grpc, envelope(binary("x".repeat(2000))), { status: 200, grpcStatus: "8" }],
  ["a JSON field of the wrong type", h1, login, connectJson, json({ username: 5 }), { status: 400 }],
  ["a body that is not JSON", h2, login, connectJson, new TextEncoder().encode("{not json"), { status: 400 }],
  ["a body that is not gzip but says so", h1, login, { ...connectJson, "content-encoding": "gzip" }, json({ username: "sam" }), { status: 400 }],
];

describe("rpc-handler answers like connect-node's adapter", () => {
  it.each(same)("%s", async (_name, send, path, headers, body, expected) => {
    const [a, b] = [await send(ours, path, headers, body), await send(theirs, path, headers, body)];
    const { "x-request-id": requestId, ...rest } = a.headers;
    expect({ ...a, headers: rest }).toEqual(b);
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.status).toBe(expected.status);
    if (expected.grpcStatus) expect(a.trailers["grpc-status"]).toBe(expected.grpcStatus);
  });
});

// Where rpc-handler differs on purpose. connect answers Protobuf bytes it cannot decode (and a
// message flagged compressed without a declared compression) with Internal, before any
// interceptor could change it; they are the caller's mistake, and the house rules answer malformed
// input with InvalidArgument and a clear message, never Internal (which would also count it as a
// server fault in metrics and logs). rpc-parse-errors.ts turns exactly these into InvalidArgument,
// in each protocol's own form. Everything else above must stay as connect-node answers it.
describe("rpc-handler differs from connect-node's adapter on purpose", () => {
  const connectError = (a: Answer) => JSON.parse(a.body) as { code: string; message: string };

  it.each([
    ["Protobuf bytes cut short, over HTTP/1.1", h1, garbage, "premature EOF"],
    ["Protobuf bytes cut short, over HTTP/2", h2, garbage, "premature EOF"],
    ["a string field that is not UTF-8", h1, badUtf8, "The encoded data was not valid for encoding utf-8"],
  ] as const)("Connect: %s is InvalidArgument, not Internal", async (_name, send, body, reason) => {
    const [a, b] = [await send(ours, login, connectProto, body), await send(theirs, login, connectProto, body)];
    expect([b.status, connectError(b)]).toEqual([500, { code: "internal", message: `parse binary: ${reason}` }]);
    expect([a.status, connectError(a)]).toEqual([400, { code: "invalid_argument", message: `the request is not a valid redflag.v1.LoginRequest: ${reason}` }]);
  });

  it.each([
    ["Protobuf bytes cut short", envelope(garbage), "the request is not a valid redflag.v1.LoginRequest: premature EOF"],
    ["a string field that is not UTF-8", envelope(badUtf8), "the request is not a valid redflag.v1.LoginRequest: The encoded data was not valid for encoding utf-8"],
    [
      "a message flagged compressed without grpc-encoding",
      new Uint8Array([1, 0, 0, 0, 1, 0]),
      "a request message is flagged compressed, but the request declares no compression (grpc-encoding or connect-content-encoding)",
    ],
  ] as const)("gRPC: %s is InvalidArgument, not Internal", async (_name, body, message) => {
    const [a, b] = [await h2(ours, login, grpc, body), await h2(theirs, login, grpc, body)];
    expect(b.trailers["grpc-status"]).toBe(String(Code.Internal));
    const { "x-request-id": _requestId, ...headers } = a.headers;
    expect({ ...a, headers, trailers: {} }).toEqual({ ...b, trailers: {} });
    expect(a.trailers).toEqual({ "grpc-status": String(Code.InvalidArgument), "grpc-message": encodeURIComponent(message) });
  });

  // protocol-refusals.ts: what connect and the adapter answer with an empty body or leave to the
  // fallback, in the form each protocol's clients expect, with the request ID (a caller's own kept).
  it.each([
    ["HTTP/1.1", h1],
    ["HTTP/2", h2],
  ] as const)("an unknown method or service over %s: gRPC and gRPC-Web get grpc-status 12, Connect a 404 unimplemented; other callers the fallback", async (_name, send) => {
    const nope = "/redflag.v1.AuthService/Nope";
    expect((await send(theirs, nope, connectJson, json({}))).body).toBe("not here\n");
    const connect = await send(ours, nope, { ...connectJson, "x-request-id": "trace-0123456789" }, json({}));
    expect([connect.status, connect.headers["x-request-id"], connectError(connect)]).toEqual([404, "trace-0123456789", { code: "unimplemented", message: "unknown method Nope for service redflag.v1.AuthService" }]);
    const web = await send(ours, "/redflag.v1.NoService/Login", grpcWeb, envelope(binary("sam")));
    expect([web.status, web.headers["grpc-status"], decodeURIComponent(web.headers["grpc-message"] ?? ""), web.body]).toEqual([200, "12", "unknown service redflag.v1.NoService", ""]);
    expect((await send(ours, nope, { "content-type": "text/plain" }, json({}))).body).toBe("not here\n");
  });

  it("an unknown gRPC method over HTTP/2 ends the stream with one trailers-only HEADERS frame", async () => {
    const a = await h2(ours, "/redflag.v1.AuthService/Nope", grpc, envelope(binary("sam")));
    expect(a).toMatchObject({ status: 200, body: "", trailers: {} });
    expect(a.headers).toMatchObject({ "content-type": "application/grpc", "grpc-status": "12", "grpc-message": encodeURIComponent("unknown method Nope for service redflag.v1.AuthService") });
  });

  it.each([
    ["HTTP/1.1", h1],
    ["HTTP/2", h2],
  ] as const)("a content type no protocol takes, over %s: 415 with Accept-Post and a line saying what works", async (_name, send) => {
    const [a, b] = [await send(ours, login, { "content-type": "text/plain" }, json({})), await send(theirs, login, { "content-type": "text/plain" }, json({}))];
    expect([b.status, b.body]).toEqual([415, ""]);
    expect(a.status).toBe(415);
    expect(a.headers["accept-post"]).toBe("application/json, application/proto, application/grpc, application/grpc+proto, application/grpc+json, application/grpc-web+proto, application/grpc-web+json");
    expect(a.body).toBe('content type "text/plain" is not supported for redflag.v1.AuthService/Login; use one of application/json, application/proto, application/grpc, application/grpc+proto, application/grpc+json, application/grpc-web+proto, application/grpc-web+json\n');
    expect(a.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("a method other than POST: 405 with Allow", async () => {
    const a = await new Promise<{ status: number; allow?: string; body: string }>((resolve, reject) => {
      http.get(new URL(login, ours.url), { agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => resolve({ status: res.statusCode!, allow: res.headers.allow, body: Buffer.concat(chunks).toString() }));
      }).on("error", reject);
    });
    expect(a).toEqual({ status: 405, allow: "POST", body: "GET is not allowed for redflag.v1.AuthService/Login: call it with POST\n" });
  });

  // connect cannot form the URL of an HTTP/1.0 request without a Host header: the adapter throws
  // from the request listener (an uncaught exception that would end the process); ours refuses
  // the request.
  it("answers an HTTP/1.0 request without a Host header with 400 instead of throwing", async () => {
    const raw = async (server: RunningServer) => {
      const socket = net.connect(Number(new URL(server.url).port), "127.0.0.1");
      socket.end(`POST ${login} HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`);
      const chunks: Buffer[] = [];
      for await (const c of socket) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString("latin1");
    };
    expect(await raw(ours)).toMatch(/^HTTP\/1\.1 400 [^]*\r\n\r\na Host header is required\n$/);
    expect(await raw(theirs)).toBe("");
    expect(adapterThrew).toMatchObject({ code: Code.Internal, rawMessage: "unable to determine request authority from Node.js server request" });
  });
});

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRpcHandlers, LINGER_MS } from "../src/http/rpc-handler.ts";
import { startServer } from "../src/http/server.ts";
import { newRegistrationToken, nonce, registerTestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// The listener's timeouts and caps, with small values, over real sockets: cleartext HTTP/1.1 and
// HTTP/2 on one port, and TLS.
const SHORT = { REDFLAG_HEADERS_TIMEOUT: "1s", REDFLAG_REQUEST_TIMEOUT: "2s", REDFLAG_IDLE_TIMEOUT: "1s" };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A raw TCP connection: what it received, and whether the server closed it.
async function rawConnection(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  const state = { received: Buffer.alloc(0), closed: false, socket };
  socket.on("data", (d: Buffer) => (state.received = Buffer.concat([state.received, d])));
  socket.on("error", () => {});
  socket.on("close", () => (state.closed = true));
  return state;
}

// HTTP/2 frames by hand, to do what well-behaved clients never do.
function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)) {
  const out = Buffer.alloc(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId, 5);
  payload.copy(out, 9);
  return out;
}
const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7 } as const;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
// HPACK literal header fields without indexing: no Huffman, names and values under 127 bytes.
const headerBlock = (fields: [string, string][]) =>
  Buffer.concat(fields.map(([n, v]) => Buffer.concat([Buffer.from([0x00, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)])));
const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

function parseFrames(bytes: Buffer) {
  const frames: { type: number; flags: number; streamId: number; payload: Buffer }[] = [];
  for (let i = 0; i + 9 <= bytes.length; ) {
    const length = bytes.readUIntBE(i, 3);
    if (i + 9 + length > bytes.length) break;
    frames.push({ type: bytes[i + 3]!, flags: bytes[i + 4]!, streamId: bytes.readUInt32BE(i + 5) & 0x7fffffff, payload: bytes.subarray(i + 9, i + 9 + length) });
    i += 9 + length;
  }
  return frames;
}

describe("listener timeouts (cleartext)", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane(SHORT);
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("closes a TCP connection that never says anything", async () => {
    const conn = await rawConnection(cp.app.server.port);
    await expect.poll(() => conn.closed, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(conn.received.length).toBe(0);
  });

  it("answers HTTP/1.1 request headers that never finish with 408 and closes", async () => {
    const conn = await rawConnection(cp.app.server.port);
    conn.socket.write("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ");
    await expect.poll(() => conn.closed, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(conn.received.toString()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("answers an HTTP/1.1 body that never finishes with 408 and closes", async () => {
    const conn = await rawConnection(cp.app.server.port);
    conn.socket.write(
      "POST /redflag.v1.AgentService/Register HTTP/1.1\r\nHost: a\r\nContent-Type: application/proto\r\nContent-Length: 100\r\n\r\n0123456789",
    );
    await expect.poll(() => conn.closed, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(conn.received.toString()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("refuses request headers over the size limit", async () => {
    const conn = await rawConnection(cp.app.server.port);
    conn.socket.write(`GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ${"x".repeat(20_000)}\r\n\r\n`);
    await expect.poll(() => conn.received.toString(), { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("closes an idle HTTP/1.1 keep-alive connection", async () => {
    const conn = await rawConnection(cp.app.server.port);
    conn.socket.write("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    await expect.poll(() => conn.received.toString(), { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 200 /);
    await expect.poll(() => conn.closed, { timeout: 10_000, interval: 100 }).toBe(true);
  });

  it("closes an HTTP/2 connection that opens no stream, and one that stays idle after its streams", async () => {
    const silent = await rawConnection(cp.app.server.port);
    silent.socket.write(PREFACE);
    silent.socket.write(frame(FRAME.SETTINGS, 0, 0));
    await expect.poll(() => silent.closed, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(parseFrames(silent.received).some((f) => f.type === FRAME.GOAWAY)).toBe(true);

    const session = http2.connect(cp.url);
    session.on("error", () => {});
    const closed = once(session, "close");
    const req = session.request({ ":path": "/healthz" });
    req.resume();
    await once(req, "end");
    await closed;
  });

  it("answers an HTTP/2 request body that never finishes with 408 and ends the stream", async () => {
    const session = http2.connect(cp.url);
    session.on("error", () => {});
    try {
      const req = session.request({ ":method": "POST", ":path": "/redflag.v1.AgentService/Register", "content-type": "application/proto" });
      req.on("error", () => {});
      req.write(Buffer.from([0x0a, 0x10]));
      const [headers] = (await once(req, "response")) as [http2.IncomingHttpHeaders];
      expect(headers[":status"]).toBe(408);
      req.resume();
      await once(req, "close");
    } finally {
      session.destroy();
    }
  });

  it("keeps a long-poll, over HTTP/2 and HTTP/1.1, far beyond every timeout, and delivers into it", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const started = Date.now();
    await expect(agent.client.pollCommands({ nonce: nonce(), waitSeconds: 4 })).resolves.toMatchObject({ commands: [] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(3_900);

    const overHttp1 = createClient(
      AgentService,
      createConnectTransport({
        baseUrl: cp.url,
        httpVersion: "1.1",
        interceptors: [headerInterceptor({ authorization: `Bearer ${agent.accessToken}`, "x-machine-id": agent.machineId })],
      }),
    );
    const poll = overHttp1.pollCommands({ nonce: nonce(), waitSeconds: 10 });
    await sleep(3_000);
    await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } });
    expect((await poll).commands).toHaveLength(1);
  });
});

describe("HTTP/2 streams per connection", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_MAX_STREAMS_PER_CONNECTION: "100" });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("serves the first 100 streams of a connection and refuses the 101st with REFUSED_STREAM", async () => {
    const conn = await rawConnection(cp.app.server.port);
    try {
      conn.socket.write(PREFACE);
      conn.socket.write(frame(FRAME.SETTINGS, 0, 0));
      // 101 requests at once, none of them ending its stream, before the server's settings are
      // acknowledged (as a client sending in its first flight does).
      const block = headerBlock([[":method", "GET"], [":scheme", "http"], [":path", "/healthz"], [":authority", "a"]]);
      conn.socket.write(Buffer.concat(Array.from({ length: 101 }, (_, i) => frame(FRAME.HEADERS, END_HEADERS, 1 + 2 * i, block))));
      const settled = () => {
        const frames = parseFrames(conn.received);
        return {
          served: new Set(frames.filter((f) => f.type === FRAME.HEADERS).map((f) => f.streamId)).size,
          // (A served stream the client leaves open may be reset with NO_ERROR once answered.)
          refused: frames.filter((f) => f.type === FRAME.RST_STREAM && f.payload.readUInt32BE(0) !== http2.constants.NGHTTP2_NO_ERROR).map((f) => [f.streamId, f.payload.readUInt32BE(0)]),
        };
      };
      await expect.poll(settled, { timeout: 10_000, interval: 100 }).toEqual({ served: 100, refused: [[201, http2.constants.NGHTTP2_REFUSED_STREAM]] });
      // The connection itself carries on.
      conn.socket.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
      await expect.poll(() => parseFrames(conn.received).some((f) => f.type === FRAME.PING && f.flags === 1), { timeout: 5_000 }).toBe(true);
      expect(parseFrames(conn.received).some((f) => f.type === FRAME.GOAWAY)).toBe(false);
    } finally {
      conn.socket.destroy();
    }
  });

  it("tells clients the limit in its settings", async () => {
    const session = http2.connect(cp.url);
    try {
      await once(session, "remoteSettings");
      expect(session.remoteSettings.maxConcurrentStreams).toBe(100);
    } finally {
      session.close();
    }
  });
});

describe("connections at once", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_MAX_CONNECTIONS: "3" });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("closes connections over the cap at once, and takes new ones when there is room", async () => {
    const held = await Promise.all([0, 1, 2].map(() => rawConnection(cp.app.server.port)));
    const over = await rawConnection(cp.app.server.port);
    await expect.poll(() => over.closed, { timeout: 5_000, interval: 50 }).toBe(true);
    expect(held.some((c) => c.closed)).toBe(false);
    held[0]!.socket.destroy();
    await expect.poll(async () => (await fetch(`${cp.url}/healthz`).catch(() => undefined))?.status, { timeout: 5_000, interval: 100 }).toBe(200);
    for (const c of held) c.socket.destroy();
  });
});

describe("listener timeouts (TLS)", () => {
  let cp: TestControlPlane;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "redflag-tls-"));
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
    ]);
    cp = await startTestControlPlane({ ...SHORT, REDFLAG_TLS_CERT: path.join(dir, "cert.pem"), REDFLAG_TLS_KEY: path.join(dir, "key.pem"), REDFLAG_MAX_STREAMS_PER_CONNECTION: "7" });
  });
  afterAll(async () => {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const connectTls = async (alpn: string) => {
    const socket = tls.connect({ port: cp.app.server.port, host: "127.0.0.1", rejectUnauthorized: false, ALPNProtocols: [alpn] });
    await once(socket, "secureConnect");
    const state = { received: "", closed: false, socket };
    socket.on("data", (d: Buffer) => (state.received += d.toString()));
    socket.on("error", () => {});
    socket.on("close", () => (state.closed = true));
    return state;
  };

  it("closes a connection that never starts the TLS handshake", async () => {
    const conn = await rawConnection(cp.app.server.port);
    await expect.poll(() => conn.closed, { timeout: 10_000, interval: 100 }).toBe(true);
  });

  it("answers unfinished HTTP/1.1 headers with 408, and closes an idle keep-alive connection", async () => {
    const slow = await connectTls("http/1.1");
    slow.socket.write("GET /healthz HTTP/1.1\r\nHost: a\r\n");
    await expect.poll(() => slow.closed, { timeout: 10_000, interval: 100 }).toBe(true);
    expect(slow.received).toMatch(/^HTTP\/1\.1 408 /);

    const idle = await connectTls("http/1.1");
    idle.socket.write("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    await expect.poll(() => idle.received, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 200 /);
    await expect.poll(() => idle.closed, { timeout: 10_000, interval: 100 }).toBe(true);
  });

  it("closes an idle HTTP/2 session and advertises the stream limit", async () => {
    const session = http2.connect(`https://localhost:${cp.app.server.port}`, { rejectUnauthorized: false });
    session.on("error", () => {});
    const closed = once(session, "close");
    await once(session, "remoteSettings");
    expect(session.remoteSettings.maxConcurrentStreams).toBe(7);
    await closed;
  });
});

// A response the client does not read: its stream is reset once nothing moved for the stall
// time. The control plane sets that to its idle timeout, but at least a minute (WatchEvents
// writes a keep-alive every 20 s); here the same listener and handlers with one second.
describe("responses the client stops reading", () => {
  it("resets the stream", async () => {
    const logger = pino({ level: "silent" });
    const rpc = createRpcHandlers({
      routes: (router) =>
        router.service(AgentService, {
          pollCommands: () => ({ commands: [{ command: new Uint8Array(100_000), signature: new Uint8Array(64), keyId: "k" }] }),
        }),
      interceptors: [],
      responseStallMs: 1000,
      fallback: (_req, res) => res.end(),
      logger,
    });
    const limits = { headersTimeoutMs: 10_000, requestTimeoutMs: 10_000, idleTimeoutMs: 10_000, responseStallMs: 1000, maxStreamsPerConnection: 100, maxConnections: 100, maxHeaderBytes: 16_384 };
    const server = await startServer({ handler: rpc.request, streamHandler: rpc.stream, host: "127.0.0.1", port: 0, tls: undefined, limits, logger });
    // A client that grants no flow-control window: the server can send headers, never data.
    const session = http2.connect(server.url, { settings: { initialWindowSize: 0 } });
    session.on("error", () => {});
    try {
      const req = session.request({ ":method": "POST", ":path": "/redflag.v1.AgentService/PollCommands", "content-type": "application/proto" });
      req.on("error", () => {});
      req.end(Buffer.from([0x0a, 0x10, ...Buffer.alloc(16)]));
      await once(req, "response");
      await once(req, "close");
      expect(req.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    } finally {
      session.destroy();
      await server.close(100);
    }
  });
});

// connect stops reading a request once it has what it needs (here: a unary call's second message,
// which it refuses). The rest of the body must neither block the connection nor be read for ever.
describe("a request body still arriving after its answer", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane();
  });
  afterAll(async () => {
    await cp?.close();
  });
  const path = "/redflag.v1.FleetService/ListAgents";
  const headers = () => ({ "content-type": "application/grpc-web+proto", authorization: `Bearer ${cp.adminKey}` });
  // An empty ListAgentsRequest, then a second message that is no ListAgentsRequest (refused with
  // InvalidArgument before the rest is read), then more.
  const twoMessages = (junk: number) => Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), Buffer.from([0, 0, 0, 0, 100]), Buffer.alloc(junk)]);
  const grpcStatus = (body: Buffer) => /grpc-status: ?(\d+)/.exec(body.toString("latin1"))?.[1];

  function postH1(agent: http.Agent, body: Buffer, to = path) {
    return new Promise<{ status?: number; connection?: string; grpcStatus?: string; port?: number; error?: string }>((resolve) => {
      const req = http.request(new URL(to, cp.url), { method: "POST", agent, headers: { ...headers(), "content-length": body.length } });
      let port: number | undefined;
      const timer = setTimeout(() => {
        req.destroy();
        resolve({ port, error: "no answer within 10 s" });
      }, 10_000);
      req.on("socket", (socket) => (port = socket.localPort));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode, connection: res.headers.connection, grpcStatus: grpcStatus(Buffer.concat(chunks)), port });
        });
      });
      req.on("error", (err) => {
        clearTimeout(timer);
        resolve({ port, error: err.message });
      });
      req.end(body);
    });
  }

  // A raw connection that stays half-open, like an HTTP client still uploading: it keeps
  // writing after the server's FIN; what it received, whether the server ended, and any error.
  async function halfOpenConnection() {
    const socket = net.connect({ port: cp.app.server.port, host: "127.0.0.1", allowHalfOpen: true });
    await once(socket, "connect");
    const seen = { received: "", ended: false, failed: undefined as string | undefined };
    socket.on("data", (d: Buffer) => (seen.received += d.toString("latin1")));
    socket.on("end", () => (seen.ended = true));
    socket.on("error", (err) => (seen.failed = err.message));
    return { socket, seen };
  }

  it("is read and dropped on HTTP/1.1, so the next request on the keep-alive connection is served", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await postH1(agent, twoMessages(500_000));
      expect(first).toMatchObject({ status: 200, connection: "keep-alive", grpcStatus: "3" });
      const next = await postH1(agent, Buffer.from([0, 0, 0, 0, 0]));
      expect(next).toEqual({ status: 200, connection: "keep-alive", grpcStatus: "0", port: first.port });
    } finally {
      agent.destroy();
    }
  });

  it("is read and dropped after a client stream the handler refused, so the next request on the keep-alive connection is served", async () => {
    // PublishRelease reads its messages one by one: a first message that is no header is refused
    // while the rest of the upload is still unread (the fuzzer found the next request on the
    // connection waiting for ever).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const chunkOnly = Buffer.concat([Buffer.from([0, 0, 0, 0, 3, 0x12, 0x01, 0x00]), Buffer.from([0, 0, 6, 0x1a, 0x80]), Buffer.alloc(400_000)]);
      const first = await postH1(agent, chunkOnly, "/redflag.v1.ReleaseService/PublishRelease");
      expect(first).toMatchObject({ status: 200, connection: "keep-alive" });
      expect(first.grpcStatus).not.toBe("0");
      const next = await postH1(agent, Buffer.from([0, 0, 0, 0, 0]));
      expect(next).toEqual({ status: 200, connection: "keep-alive", grpcStatus: "0", port: first.port });
    } finally {
      agent.destroy();
    }
  });

  it("closes the HTTP/1.1 connection after the answer when more than 1 MiB is left, and says so first", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // Still sending when the answer comes: the client reads the answer, not a reset (EPIPE).
      for (const size of [3_000_000, 20_000_000]) expect(await postH1(agent, twoMessages(size))).toMatchObject({ status: 200, connection: "close", grpcStatus: "3" });
      const first = await postH1(agent, twoMessages(3_000_000));
      expect(first).toMatchObject({ status: 200, connection: "close", grpcStatus: "3" });
      // Not sent into a connection about to close (that would be ECONNRESET).
      const next = await postH1(agent, Buffer.from([0, 0, 0, 0, 0]));
      expect(next).toMatchObject({ status: 200, grpcStatus: "0" });
      expect(next.port).not.toBe(first.port);
    } finally {
      agent.destroy();
    }
  });

  it("lets an HTTP/1.1 client still sending read the answer: the connection closes lingering, not with a reset", async () => {
    const { socket, seen } = await halfOpenConnection();
    try {
      const head = `POST ${path} HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc-web+proto\r\nauthorization: Bearer ${cp.adminKey}\r\ncontent-length: 50000000\r\n\r\n`;
      socket.write(Buffer.concat([Buffer.from(head), twoMessages(100_000)]));
      await expect.poll(() => seen.received, { timeout: 10_000 }).toMatch(/grpc-status: ?3/);
      expect(seen.received).toMatch(/^HTTP\/1\.1 200 /);
      expect(seen.received.toLowerCase()).toContain("connection: close");
      // The server ends its side (FIN); the client goes on sending for a while, as a client
      // writing its body does, and every write is taken: no reset.
      await expect.poll(() => seen.ended, { timeout: 5_000 }).toBe(true);
      for (let i = 0; i < 10; i++) {
        socket.write(Buffer.alloc(100_000));
        await sleep(50);
      }
      expect(seen.failed).toBeUndefined();
      // But not for ever: past the linger time (this client never ends its side) the connection
      // is gone, and the next write is refused.
      await sleep(LINGER_MS + 500);
      const refused = () => {
        if (!socket.destroyed) socket.write(Buffer.alloc(1000));
        return seen.failed;
      };
      await expect.poll(refused, { timeout: 5_000 }).toMatch(/EPIPE|ECONNRESET/);
    } finally {
      socket.destroy();
    }
  });

  it("lets an HTTP/1.1 client still sending a bidirectional stream's body read its refusal, which closes the connection lingering", async () => {
    // connect answers a bidirectional stream over HTTP/1.1 at once, with Connection: close, before
    // reading the body (the fuzzer met EPIPE there: the socket was closed with the body unread).
    const { socket, seen } = await halfOpenConnection();
    try {
      const head = `POST /grpc.reflection.v1.ServerReflection/ServerReflectionInfo HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 900000\r\n\r\n`;
      socket.write(Buffer.concat([Buffer.from(head), Buffer.alloc(1000)]));
      await expect.poll(() => seen.received, { timeout: 10_000 }).toMatch(/grpc-status: ?12/);
      expect(seen.received.toLowerCase()).toContain("connection: close");
      expect(decodeURIComponent(seen.received)).toContain("streams both ways and needs HTTP/2");
      await expect.poll(() => seen.ended, { timeout: 5_000 }).toBe(true);
      // The rest of the body, after the server's FIN: taken, not reset.
      for (let i = 0; i < 9; i++) {
        socket.write(Buffer.alloc(100_000));
        await sleep(50);
      }
      await sleep(200);
      expect(seen.failed).toBeUndefined();
    } finally {
      socket.destroy();
    }
  });

  it("is stopped on HTTP/2 once the answer is out (RST_STREAM NO_ERROR), and the connection carries on", async () => {
    const session = http2.connect(cp.url);
    session.on("error", () => {});
    const post = (body: Buffer) =>
      new Promise<{ grpcStatus?: string; rstCode?: number; error?: string }>((resolve) => {
        const stream = session.request({ ":method": "POST", ":path": path, ...headers() });
        const chunks: Buffer[] = [];
        const timer = setTimeout(() => {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          resolve({ error: "the stream was still open after 10 s" });
        }, 10_000);
        stream.on("data", (d: Buffer) => chunks.push(d));
        stream.on("error", () => {});
        stream.on("close", () => {
          clearTimeout(timer);
          resolve({ grpcStatus: grpcStatus(Buffer.concat(chunks)), rstCode: stream.rstCode });
        });
        stream.end(body);
      });
    try {
      // Far more than the flow-control windows: unread, it would stall the stream and the connection.
      expect(await post(twoMessages(4_000_000))).toEqual({ grpcStatus: "3", rstCode: http2.constants.NGHTTP2_NO_ERROR });
      expect(await post(twoMessages(300_000))).toEqual({ grpcStatus: "3", rstCode: http2.constants.NGHTTP2_NO_ERROR });
      expect(await post(Buffer.from([0, 0, 0, 0, 0]))).toEqual({ grpcStatus: "0", rstCode: http2.constants.NGHTTP2_NO_ERROR });
    } finally {
      session.destroy();
    }
  });
});

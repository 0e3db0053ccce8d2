import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { toBinary } from "@bufbuild/protobuf";
import { PollCommandsRequestSchema } from "@redflag/gen/agent_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nonce, registerTestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// One port serves Connect, gRPC and gRPC-Web, over HTTP/2 cleartext and HTTP/1.1, and over TLS.
describe("transports", () => {
  let cp: TestControlPlane;
  let tlsDir: string;
  beforeAll(async () => {
    tlsDir = await mkdtemp(path.join(tmpdir(), "redflag-tls-"));
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout", path.join(tlsDir, "key.pem"), "-out", path.join(tlsDir, "cert.pem"),
    ]);
    cp = await startTestControlPlane();
  });
  afterAll(async () => {
    await cp?.close();
    await rm(tlsDir, { recursive: true, force: true });
  });

  const auth = () => [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })];

  it.each([
    ["Connect over HTTP/1.1", () => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: auth() })],
    ["Connect over HTTP/2 cleartext", () => createConnectTransport({ baseUrl: cp.url, httpVersion: "2", interceptors: auth() })],
    ["gRPC over HTTP/2 cleartext", () => createGrpcTransport({ baseUrl: cp.url, interceptors: auth() })],
    ["gRPC-Web over HTTP/1.1", () => createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: auth() })],
    ["gRPC-Web over HTTP/2 cleartext", () => createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "2", interceptors: auth() })],
    [
      "Connect, binary and gzip-compressed, over HTTP/2 cleartext",
      () => createConnectTransport({ baseUrl: cp.url, httpVersion: "2", useBinaryFormat: true, sendCompression: compressionGzip, compressMinBytes: 1, interceptors: auth() }),
    ],
  ])("%s", async (_name, transport) => {
    const fleet = createClient(FleetService, transport());
    await expect(fleet.listAgents({})).resolves.toMatchObject({ agents: [] });
    const err = await fleet.getAgent({ agentId: "nope" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
  });

  it("answers plain HTTP/1.1 health checks and unknown paths", async () => {
    const get = (p: string) =>
      new Promise<number>((resolve, reject) => http.get(cp.url + p, (res) => (res.resume(), resolve(res.statusCode!))).on("error", reject));
    expect(await get("/healthz")).toBe(200);
    // Pages without an extension are the console's (index.html, once it is built); files and
    // API paths that do not exist are 404.
    expect(await get("/nothing-here.js")).toBe(404);
    expect(await get("/redflag.v1.Nope/Call")).toBe(404);
  });

  it("answers plain HTTP routes over HTTP/2 too", async () => {
    const session = http2.connect(cp.url);
    try {
      const get = (p: string) =>
        new Promise<number>((resolve, reject) => {
          const req = session.request({ ":path": p });
          req.on("response", (headers) => resolve(Number(headers[":status"])));
          req.on("error", reject);
          req.resume();
        });
      expect(await get("/healthz")).toBe(200);
      expect(await get("/redflag.v1.Nope/Call")).toBe(404);
    } finally {
      session.close();
    }
  });

  // Over HTTP/2 the server serves RPCs on the stream itself: a client that goes away must end
  // the call on the server, not leave it holding memory.
  const h2Transports: [string, () => Transport][] = [
    ["Connect", () => createConnectTransport({ baseUrl: cp.url, httpVersion: "2", interceptors: auth() })],
    ["gRPC", () => createGrpcTransport({ baseUrl: cp.url, interceptors: auth() })],
  ];
  it.each(h2Transports)("streams events over HTTP/2 (%s) and stops when the client cancels", async (_name, transport) => {
    const abort = new AbortController();
    const events = createClient(CommandService, transport()).watchEvents({}, { signal: abort.signal });
    const first = await events[Symbol.asyncIterator]().next();
    expect(first.value).toMatchObject({ kind: "keepalive" });
    expect(cp.app.events.watching).toBe(1);
    abort.abort();
    await expect.poll(() => cp.app.events.watching, { timeout: 5_000 }).toBe(0);
  });

  it("ends a held long-poll on the server when the agent gives up on it", async () => {
    const agent = await registerTestAgent(cp, (await cp.admin.tokens.createRegistrationToken({ seats: 1 })).secret);
    const abort = new AbortController();
    const poll = agent.client.pollCommands({ nonce: nonce(), waitSeconds: 60 }, { signal: abort.signal });
    await expect.poll(longPollsWaiting, { timeout: 5_000 }).toBe(1);
    abort.abort();
    await expect(poll).rejects.toMatchObject({ code: Code.Canceled });
    await expect.poll(longPollsWaiting, { timeout: 5_000 }).toBe(0);
  });

  it("survives an agent's connection torn down under a held long-poll, and serves the next call", async () => {
    const agent = await registerTestAgent(cp, (await cp.admin.tokens.createRegistrationToken({ seats: 1 })).secret);
    const session = http2.connect(cp.url);
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": "/redflag.v1.AgentService/PollCommands",
      "content-type": "application/proto",
      "connect-protocol-version": "1",
      authorization: `Bearer ${agent.accessToken}`,
      "x-machine-id": agent.machineId,
    });
    stream.on("error", () => {});
    stream.end(toBinary(PollCommandsRequestSchema, { $typeName: "redflag.v1.PollCommandsRequest", nonce: nonce(), waitSeconds: 60, maxCommands: 0 } as never));
    await expect.poll(longPollsWaiting, { timeout: 5_000 }).toBe(1);
    // A GOAWAY with an error code, then the socket gone: the held stream errors on the server.
    session.destroy(new Error("agent killed"), http2.constants.NGHTTP2_CANCEL);
    await expect.poll(longPollsWaiting, { timeout: 5_000 }).toBe(0);
    await expect(agent.client.pollCommands({ nonce: nonce() })).resolves.toMatchObject({ commands: [] });
  });

  const longPollsWaiting = async () => {
    const text = await (await fetch(`${cp.url}/metrics`)).text();
    return Number(/^redflag_long_polls_waiting (\S+)$/m.exec(text)?.[1]);
  };

  it("refuses an RPC without a Host header (HTTP/1.0) with 400, and keeps serving", async () => {
    const raw = (request: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = net.connect(cp.app.server.port, "127.0.0.1", () => socket.end(request));
        let answer = "";
        socket.on("data", (d: Buffer) => (answer += d.toString()));
        socket.on("close", () => resolve(answer));
        socket.on("error", reject);
      });
    const answer = await raw("POST /redflag.v1.FleetService/ListAgents HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    expect(answer).toMatch(/^HTTP\/1\.[01] 400 /);
    expect(answer).toContain("a Host header is required");
    expect((await raw("GET /healthz HTTP/1.0\r\n\r\n")).split("\r\n")[0]).toMatch(/ 200 /);
    expect((await fetch(`${cp.url}/healthz`)).status).toBe(200);
  });

  it("refuses admin calls without a valid key", async () => {
    const anon = createClient(FleetService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    await expect(anon.listAgents({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    const wrong = createClient(
      FleetService,
      createConnectTransport({ baseUrl: cp.url, httpVersion: "2", interceptors: [headerInterceptor({ authorization: "Bearer rfadm_nope" })] }),
    );
    await expect(wrong.listAgents({})).rejects.toMatchObject({ code: Code.Unauthenticated, rawMessage: "the API token is not valid (unknown or revoked)" });
  });

  it("answers a long-poll at once when shutting down", async () => {
    const other = await startTestControlPlane();
    const { secret } = await other.admin.tokens.createRegistrationToken({ seats: 1 });
    const agent = await registerTestAgent(other, secret);
    const started = Date.now();
    const poll = agent.client.pollCommands({ nonce: nonce(), waitSeconds: 60 });
    await new Promise((r) => setTimeout(r, 200));
    await other.close();
    await expect(poll).resolves.toMatchObject({ commands: [] });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("serves HTTP/2 and HTTP/1.1 over TLS when a certificate is configured", async () => {
    const tls = await startTestControlPlane({
      REDFLAG_TLS_CERT: path.join(tlsDir, "cert.pem"),
      REDFLAG_TLS_KEY: path.join(tlsDir, "key.pem"),
    });
    try {
      const ca = await readFile(path.join(tlsDir, "cert.pem"));
      const baseUrl = `https://localhost:${tls.app.server.port}`;
      const interceptors = [headerInterceptor({ authorization: `Bearer ${tls.adminKey}` })];
      for (const httpVersion of ["2", "1.1"] as const) {
        const fleet = createClient(
          FleetService,
          createConnectTransport({ baseUrl, httpVersion, interceptors, nodeOptions: { ca } }),
        );
        await expect(fleet.listAgents({})).resolves.toMatchObject({ agents: [] });
      }
    } finally {
      await tls.close();
    }
  });
});

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
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

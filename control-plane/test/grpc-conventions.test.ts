import { createFileRegistry, create } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@redflag/gen/grpc/health/v1/health_pb";
import * as v1 from "@redflag/gen/grpc/reflection/v1/reflection_pb";
import * as v1alpha from "@redflag/gen/grpc/reflection/v1alpha/reflection_pb";
import { execFile } from "node:child_process";
import http2 from "node:http2";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHealthService } from "../src/services/health-service.ts";
import { newRegistrationToken, registerTestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Issue 17: the gRPC conventions other people's clients expect, against a real control plane:
// the standard health service with the /readyz logic, and server reflection (v1 and v1alpha)
// good enough for `buf curl` to call an RPC with no schema at hand.

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return err;
}

async function* requests<T>(...items: T[]) {
  for (const item of items) yield item;
}

describe("gRPC health and reflection", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-1" });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  it("answers Check in every protocol without credentials: SERVING while /readyz is ready, NOT_SERVING when it is not, NOT_FOUND for a service not served", async () => {
    for (const transport of [createGrpcTransport({ baseUrl: cp.url }), createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "1.1" }), createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })]) {
      const health = createClient(Health, transport);
      expect((await health.check({})).status).toBe(Status.SERVING);
      expect((await health.check({ service: "redflag.v1.AgentService" })).status).toBe(Status.SERVING);
      const unknown = await failure(health.check({ service: "redflag.v1.NoSuchService" }));
      expect([unknown.code, unknown.rawMessage]).toEqual([Code.NotFound, "unknown service redflag.v1.NoSuchService"]);
    }
    // A migration this build knows, missing from the database: /readyz and Check agree.
    const health = createClient(Health, createGrpcTransport({ baseUrl: cp.url }));
    const [last] = await cp.app.db.prisma.$queryRawUnsafe<{ id: string }[]>(`SELECT id FROM "_prisma_migrations" ORDER BY migration_name DESC LIMIT 1`);
    await cp.app.db.prisma.$executeRawUnsafe(`UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE id = $1`, last!.id);
    try {
      expect((await fetch(`${cp.url}/readyz`)).status).toBe(503);
      // (Check looks again at most once a second.)
      await expect.poll(async () => (await health.check({})).status, { timeout: 5_000, interval: 200 }).toBe(Status.NOT_SERVING);
    } finally {
      await cp.app.db.prisma.$executeRawUnsafe(`UPDATE "_prisma_migrations" SET rolled_back_at = NULL WHERE id = $1`, last!.id);
    }
    await expect.poll(async () => (await health.check({})).status, { timeout: 5_000, interval: 200 }).toBe(Status.SERVING);
  });

  it("answers Watch with the status now, then each change, and SERVICE_UNKNOWN for a service not served", async () => {
    let ready = true;
    const service = createHealthService({ readiness: async () => (ready ? { ready: true } : { ready: false, reason: "down" }), services: new Set(["a.B"]), watchIntervalMs: 5 });
    const abort = new AbortController();
    const seen: Status[] = [];
    const ctx = { signal: abort.signal } as Parameters<typeof service.watch>[1];
    for await (const res of service.watch({ service: "" } as never, ctx)) {
      seen.push((res as { status: Status }).status);
      if (seen.length === 1) ready = false;
      if (seen.length === 2) ready = true;
      if (seen.length === 3) abort.abort();
    }
    expect(seen).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);

    // Many callers at once cost one readiness check.
    let checks = 0;
    const shared = createHealthService({ readiness: async () => (checks++, { ready: true }), services: new Set() });
    await Promise.all(Array.from({ length: 50 }, () => shared.check({ service: "" } as never, ctx)));
    expect(checks).toBe(1);

    // Over gRPC against the server: the first answer, then the caller ends the call.
    const health = createClient(Health, createGrpcTransport({ baseUrl: cp.url }));
    const first = async (service: string): Promise<Status | undefined> => {
      const call = new AbortController();
      try {
        for await (const res of health.watch({ service }, { signal: call.signal })) {
          call.abort();
          return res.status;
        }
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Canceled) throw err;
      }
      return undefined;
    };
    expect(await first("")).toBe(Status.SERVING);
    expect(await first("x.Y")).toBe(Status.SERVICE_UNKNOWN);
  }, 30_000);

  it.each([
    ["v1", v1.ServerReflection, v1.ServerReflectionRequestSchema],
    ["v1alpha", v1alpha.ServerReflection, v1alpha.ServerReflectionRequestSchema],
  ] as const)("serves reflection %s: the services, and the files that define a symbol, enough to call an RPC from them", async (_version, service, requestSchema) => {
    const reflection = createClient(service as typeof v1.ServerReflection, createGrpcTransport({ baseUrl: cp.url }));
    const answers: v1.ServerReflectionResponse[] = [];
    const asked = [
      create(requestSchema as typeof v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } }),
      create(requestSchema as typeof v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "redflag.v1.FleetService" } }),
      create(requestSchema as typeof v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "redflag.v1.NoSuch" } }),
      create(requestSchema as typeof v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileByFilename", value: "redflag/v1/agent_service.proto" } }),
    ];
    for await (const res of reflection.serverReflectionInfo(requests(...asked))) answers.push(res);
    expect(answers).toHaveLength(4);

    const listed = answers[0]!.messageResponse;
    expect(listed.case).toBe("listServicesResponse");
    const names = listed.case === "listServicesResponse" ? listed.value.service.map((s) => s.name) : [];
    expect(names).toEqual(expect.arrayContaining(["redflag.v1.FleetService", "redflag.v1.AgentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]));

    // The file and everything it imports: a registry built from them alone knows the RPC.
    const files = answers[1]!.messageResponse;
    expect(files.case).toBe("fileDescriptorResponse");
    const protos = files.case === "fileDescriptorResponse" ? files.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)) : [];
    expect(protos.map((p) => p.name)).toContain("redflag/v1/fleet_service.proto");
    expect(protos.map((p) => p.name)).toContain("google/protobuf/timestamp.proto");
    // (The requested file comes first, then what it imports, as the reference servers send them;
    // the registry wants each file after its imports.)
    const byName = new Map(protos.map((p) => [p.name, p]));
    const ordered: typeof protos = [];
    const place = (name: string) => {
      const p = byName.get(name);
      if (!p || ordered.includes(p)) return;
      for (const dep of p.dependency) place(dep);
      ordered.push(p);
    };
    for (const p of protos) place(p.name);
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
    const fleet = registry.getService("redflag.v1.FleetService")!;
    // A client made from the reflected descriptor alone, as a schema-less tool makes one.
    const dynamic = createClient(fleet, createGrpcTransport({ baseUrl: cp.url, interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] })) as unknown as {
      listAgents(req: object): Promise<{ agents: { hostname: string }[] }>;
    };
    expect((await dynamic.listAgents({})).agents.map((a) => a.hostname)).toEqual(["web-1"]);

    expect(answers[2]!.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: "symbol redflag.v1.NoSuch not found" } });
    // Files already sent on this stream are not sent again: common.proto came with fleet_service.
    const again = answers[3]!.messageResponse;
    const sentAgain = again.case === "fileDescriptorResponse" ? again.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name) : [];
    expect(sentAgain).toContain("redflag/v1/agent_service.proto");
    expect(sentAgain).not.toContain("google/protobuf/timestamp.proto");
  });

  it("answers a later request message that is not one with InvalidArgument, after the answers before it", async () => {
    // Connect streaming over HTTP/2: one good request (list_services), then bytes that do not decode.
    const frame = (flags: number, data: Uint8Array) => Buffer.concat([Buffer.from([flags, 0, 0, 0, 0]), Buffer.from(data)]).fill(data.length, 4, 5);
    const good = toBinary(v1.ServerReflectionRequestSchema, create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } }));
    const body = Buffer.concat([frame(0, good), frame(0, new Uint8Array([0x0a, 0x10, 1]))]);
    const session = http2.connect(cp.url);
    try {
      const answer = await new Promise<Buffer>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/connect+proto", "connect-protocol-version": "1" });
        const chunks: Buffer[] = [];
        req.on("data", (d: Buffer) => chunks.push(d));
        req.on("end", () => resolve(Buffer.concat(chunks)));
        req.on("error", reject);
        req.end(body);
      });
      const end = JSON.parse(answer.subarray(answer.lastIndexOf(Buffer.from([2, 0, 0])) + 5).toString("utf8")) as { error: { code: string; message: string } };
      expect(end.error.code).toBe("invalid_argument");
      expect(end.error.message).toMatch(/^the request is not a valid grpc\.reflection\.v1\.ServerReflectionRequest: /);
      expect(answer.includes(Buffer.from("redflag.v1.FleetService"))).toBe(true);
    } finally {
      session.close();
    }
  });

  it("refuses a bidirectional stream over HTTP/1.1 in the caller's protocol, and one without a content type with 415", async () => {
    const post = (contentType: string | undefined) =>
      fetch(`${cp.url}/grpc.reflection.v1.ServerReflection/ServerReflectionInfo`, { method: "POST", headers: contentType ? { "content-type": contentType } : {}, body: new Uint8Array(0) });
    const web = await post("application/grpc-web+proto");
    expect([web.status, web.headers.get("grpc-status")]).toEqual([200, "12"]);
    const connect = await post("application/connect+json");
    expect([connect.status, await connect.json()]).toEqual([505, { code: "unimplemented", message: "grpc.reflection.v1.ServerReflection/ServerReflectionInfo streams both ways and needs HTTP/2" }]);
    const none = await post(undefined);
    expect(none.status).toBe(415);
    expect(none.headers.get("accept-post")).toContain("application/connect+proto");
  });

  it("lets buf curl call an RPC with no schema at hand, through reflection", async () => {
    const buf = path.join(process.cwd(), "node_modules", ".bin", "buf");
    const { stdout } = await promisify(execFile)(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `authorization: Bearer ${cp.adminKey}`,
      `${cp.url}/redflag.v1.FleetService/ListAgents`,
    ]);
    expect((JSON.parse(stdout) as { agents: { hostname: string }[] }).agents.map((a) => a.hostname)).toEqual(["web-1"]);
    const listed = await promisify(execFile)(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", `${cp.url}`]);
    expect(listed.stdout.split("\n")).toEqual(expect.arrayContaining(["redflag.v1.FleetService/ListAgents", "grpc.health.v1.Health/Check"]));
  }, 60_000);
});

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { CommandOutcome } from "@redflag/gen/command_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, nonce, registerTestAgent, signedRenew, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Hostile or broken input gets InvalidArgument with a message a person can act on, never
// Internal, and nothing is logged as a server fault.
let cp: TestControlPlane;
let agent: TestAgent;
const serverFaults: Record<string, unknown>[] = [];
let admin: {
  audit: Client<typeof AuditService>;
  security: Client<typeof SecurityService>;
  users: Client<typeof UserService>;
  updates: Client<typeof UpdateService>;
  reports: Client<typeof ReportService>;
};

beforeAll(async () => {
  cp = await startTestControlPlane({}, undefined, (line) => {
    if ((line.level as number) >= 50) serverFaults.push(line);
  });
  const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
  admin = {
    audit: createClient(AuditService, transport),
    security: createClient(SecurityService, transport),
    users: createClient(UserService, transport),
    updates: createClient(UpdateService, transport),
    reports: createClient(ReportService, transport),
  };
  agent = await registerTestAgent(cp, await newRegistrationToken(cp));
});
afterAll(async () => {
  await cp?.close();
});

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the call to be refused").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

async function expectInvalid(call: Promise<unknown>, message: RegExp) {
  const err = await refusal(call);
  expect({ code: Code[err.code], message: err.rawMessage }).toMatchObject({ code: "InvalidArgument", message: expect.stringMatching(message) });
}

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64url");
const MAX_SECONDS = 253_402_300_799n;

describe("page tokens", () => {
  const lists: [string, (pageToken: string) => Promise<unknown>][] = [
    ["FleetService/ListAgents", (pageToken) => cp.admin.fleet.listAgents({ pageToken })],
    ["CommandService/ListCommands", (pageToken) => cp.admin.commands.listCommands({ pageToken })],
    ["TokenService/ListRegistrationTokens", (pageToken) => cp.admin.tokens.listRegistrationTokens({ pageToken })],
    ["AuditService/ListAuditEntries", (pageToken) => admin.audit.listAuditEntries({ pageToken })],
    ["SecurityService/ListSecurityEvents", (pageToken) => admin.security.listSecurityEvents({ pageToken })],
    ["UserService/ListUsers", (pageToken) => admin.users.listUsers({ pageToken })],
    ["UpdateService/ListUpdates", (pageToken) => admin.updates.listUpdates({ pageToken })],
    ["UpdateService/ListPackageUpdates", (pageToken) => admin.updates.listPackageUpdates({ pageToken })],
  ];
  const tokens: [string, string][] = [
    ["not base64", "!!!"],
    ["very long", "A".repeat(20_000)],
    ["a NUL character", "\u0000"],
    ["a decoded NUL character", b64("\u0000")],
    ["a number beyond 64 bits", b64("18446744073709551616")],
    ["a number beyond a signed 64-bit ID", b64("9999999999999999999")],
    ["a negative number", b64("-1")],
    ["a negative offset", b64("o-1")],
    ["an upper-case UUID", b64(randomUUID().toUpperCase())],
    ["invalid UTF-8", Buffer.from([0xff, 0xfe, 0xfd]).toString("base64url")],
  ];
  for (const [rpc, list] of lists) {
    it.each(tokens)(`${rpc} refuses a page token with %s`, async (_what, token) => {
      await expectInvalid(list(token), /^page_token is not valid; pass the next_page_token of a previous page$/);
    });
  }
});

describe("times and sizes out of range", () => {
  const tooLate = { seconds: MAX_SECONDS + 1n, nanos: 0 };
  const tooEarly = { seconds: -(10n ** 13n), nanos: 0 };
  const badNanos = { seconds: 0n, nanos: -1 };
  const RANGE = /must be a time from 0001-01-01 to 9999-12-31 UTC/;

  it.each([
    ["after 9999", tooLate],
    ["before year 1", tooEarly],
    ["with negative nanoseconds", badNanos],
  ])("refuses a time %s in every request field that takes one", async (_what, t) => {
    await expectInvalid(admin.audit.listAuditEntries({ since: t }), /^since /);
    await expectInvalid(admin.audit.listAuditEntries({ until: t }), /^until /);
    await expectInvalid(admin.reports.listAgentMetrics({ agentId: agent.agentId, since: t }), RANGE);
    await expectInvalid(
      agent.client.reportResults({ scans: [{ id: randomUUID(), scanTime: t, result: {} }] }),
      /^scans\[0\]\.scan_time must be a time from 0001-01-01/,
    );
    await expectInvalid(
      agent.client.reportResults({ results: [{ commandId: randomUUID(), outcome: CommandOutcome.SUCCEEDED, startTime: t }] }),
      /^results\[0\]\.start_time must be a time/,
    );
    await expectInvalid(
      agent.client.reportResults({ results: [{ commandId: randomUUID(), outcome: CommandOutcome.SUCCEEDED, finishTime: t }] }),
      /^results\[0\]\.finish_time must be a time/,
    );
  });

  it("refuses a Renew signed with a time out of range (which the clock check could not compare)", async () => {
    const own = await registerTestAgent(cp, await newRegistrationToken(cp));
    await expectInvalid(cp.agentClient().renew(signedRenew(own, own.refreshToken, { signTime: new Date(8.64e15) })), /^payload\.sign_time must be a time/);
    // The refresh token was not spent.
    await expect(cp.agentClient().renew(signedRenew(own, own.refreshToken))).resolves.toBeDefined();
  });

  it("refuses an update size beyond what the database holds", async () => {
    const update = { source: "apt", name: "openssl", availableVersion: "3.0.15", sizeBytes: 2n ** 64n - 1n };
    await expectInvalid(
      agent.client.reportResults({ scans: [{ id: randomUUID(), scanTime: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 }, result: { updates: [update] } }] }),
      /^scans\[0\]\.result\.updates\[0\]\.size_bytes must be from 0 to 9223372036854775807/,
    );
  });

  it("refuses a value the database cannot store that no rule caught (a NUL in a result message)", async () => {
    const { command } = await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } });
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(1);
    const report = (message: string) => agent.client.reportResults({ results: [{ commandId: command!.id, outcome: CommandOutcome.SUCCEEDED, message }] });
    await expectInvalid(report("done\u0000"), /^a value in the request is out of range or cannot be stored/);
    // Nothing was recorded; the same result without the NUL is.
    await expect(report("done")).resolves.toMatchObject({ acknowledgedCommandIds: [command!.id] });
  });
});

describe("request bodies that are not the message they claim to be", () => {
  const bodies: [string, number[]][] = [
    ["a length-delimited field cut short", [0x0a, 0x05, 0x61]],
    ["a varint that never ends", [0x08, 0xff, 0xff, 0xff]],
    ["an invalid wire type", [0x0f]],
    ["an end-group tag without a start", [0x0c]],
    ["a field number of zero", [0x00, 0x01]],
  ];
  const NOT_VALID = /^the request is not a valid redflag\.v1\.ListAgentsRequest: /;
  const envelope = (flags: number, data: Uint8Array) => {
    const out = Buffer.alloc(5 + data.length);
    out[0] = flags;
    out.writeUInt32BE(data.length, 1);
    Buffer.from(data).copy(out, 5);
    return out;
  };
  const auth = () => ({ authorization: `Bearer ${cp.adminKey}` });
  const path = "/redflag.v1.FleetService/ListAgents";

  // Each returns the Connect code name and message the server answered with.
  const protocols: [string, (body: Uint8Array) => Promise<{ code: string; message: string }>][] = [
    [
      "Connect unary over HTTP/1.1",
      async (body) => {
        const res = await fetch(cp.url + path, { method: "POST", headers: { "content-type": "application/proto", ...auth() }, body });
        const json = (await res.json()) as { code: string; message: string };
        expect(res.status).toBe(json.code === "invalid_argument" ? 400 : res.status);
        return { code: json.code, message: json.message };
      },
    ],
    [
      "gRPC-Web over HTTP/1.1",
      async (body) => {
        const res = await fetch(cp.url + path, { method: "POST", headers: { "content-type": "application/grpc-web+proto", ...auth() }, body: envelope(0, body) });
        return grpcStatus(trailerFrame(Buffer.from(await res.arrayBuffer())));
      },
    ],
    ["gRPC over HTTP/2", (body) => h2Call("application/grpc+proto", envelope(0, body)).then((r) => grpcStatus({ ...r.headers, ...r.trailers }))],
    ["gRPC-Web over HTTP/2", (body) => h2Call("application/grpc-web+proto", envelope(0, body)).then((r) => grpcStatus(trailerFrame(r.body)))],
    ["Connect unary over HTTP/2", (body) => h2Call("application/proto", Buffer.from(body)).then((r) => JSON.parse(r.body.toString()) as { code: string; message: string })],
  ];

  async function h2Call(contentType: string, body: Buffer, p = path, extra: Record<string, string> = {}) {
    const session = http2.connect(cp.url);
    try {
      const req = session.request({ ":method": "POST", ":path": p, "content-type": contentType, te: "trailers", ...auth(), ...extra });
      const chunks: Buffer[] = [];
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      req.on("response", (h) => (headers = h));
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((resolve, reject) => {
        req.on("end", resolve);
        req.on("error", reject);
      });
      req.end(body);
      await ended;
      return { headers, trailers, body: Buffer.concat(chunks) };
    } finally {
      session.close();
    }
  }

  function trailerFrame(body: Buffer): Record<string, string> {
    for (let i = 0; i + 5 <= body.length; ) {
      const size = body.readUInt32BE(i + 1);
      if (body[i]! & 0x80) {
        const text = body.subarray(i + 5, i + 5 + size).toString();
        return Object.fromEntries(text.split("\r\n").filter(Boolean).map((line) => [line.slice(0, line.indexOf(":")).trim().toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]));
      }
      i += 5 + size;
    }
    throw new Error("no trailer frame in the gRPC-Web response");
  }

  function grpcStatus(fields: Record<string, unknown>) {
    const code = Number(fields["grpc-status"]);
    return { code: code === 0 ? "ok" : Code[code]!.replace(/[A-Z]/g, (c, i: number) => (i ? "_" : "") + c.toLowerCase()), message: decodeURIComponent(String(fields["grpc-message"] ?? "")) };
  }

  for (const [protocol, call] of protocols) {
    it.each(bodies)(`${protocol}: %s`, async (_what, bytes) => {
      const answer = await call(new Uint8Array(bytes));
      expect(answer).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(NOT_VALID) });
    });
  }

  it("Connect server streaming (WatchEvents) refuses a body that does not decode", async () => {
    const res = await fetch(`${cp.url}/redflag.v1.CommandService/WatchEvents`, {
      method: "POST",
      headers: { "content-type": "application/connect+proto", "connect-protocol-version": "1", ...auth() },
      body: envelope(0, new Uint8Array([0x0a, 0x05, 0x61])),
    });
    const body = Buffer.from(await res.arrayBuffer());
    expect(body[0]).toBe(0x02);
    const end = JSON.parse(body.subarray(5, 5 + body.readUInt32BE(1)).toString()) as { error: { code: string; message: string } };
    expect(end.error).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/^the request is not a valid redflag\.v1\.WatchEventsRequest: /) });
  });

  it("gRPC refuses an envelope that promises more bytes than it carries", async () => {
    const cut = Buffer.concat([Buffer.from([0, 0, 0, 0, 100]), Buffer.from([0x08, 0x01])]);
    const answer = grpcStatus(await h2Call("application/grpc+proto", cut).then((r) => ({ ...r.headers, ...r.trailers })));
    expect(answer.code).toBe("invalid_argument");
  });

  // connect answers these with Internal; the bytes are the caller's (found by the RPC fuzzer).
  it.each([
    ["gRPC over HTTP/2", (body: Buffer, headers: Record<string, string>) => h2Call("application/grpc+proto", body, path, headers).then((r) => grpcStatus({ ...r.headers, ...r.trailers }))],
    ["gRPC-Web over HTTP/2", (body: Buffer, headers: Record<string, string>) => h2Call("application/grpc-web+proto", body, path, headers).then((r) => grpcStatus(trailerFrame(r.body)))],
  ] as const)("%s refuses a message flagged compressed without a declared compression, and one that does not decompress", async (_protocol, call) => {
    const empty = new Uint8Array(0);
    expect(await call(envelope(1, gzipSync(empty)), {})).toEqual({
      code: "invalid_argument",
      message: "a request message is flagged compressed, but the request declares no compression (grpc-encoding or connect-content-encoding)",
    });
    expect(await call(envelope(1, new Uint8Array([1, 2, 3, 4])), { "grpc-encoding": "gzip" })).toMatchObject({ code: "invalid_argument", message: expect.stringContaining("decompress") });
    // Truncated gzip: zlib's "unexpected end of file", which connect calls "decompression failed".
    expect(await call(envelope(1, gzipSync(Buffer.alloc(64, 1)).subarray(0, 12)), { "grpc-encoding": "gzip" })).toEqual({
      code: "invalid_argument",
      message: "the request's redflag.v1.ListAgentsRequest could not be decompressed with the compression it declares",
    });
    // And the same, compressed properly, is served.
    expect(await call(envelope(1, gzipSync(empty)), { "grpc-encoding": "gzip" })).toEqual({ code: "ok", message: "" });
  });

  it("logs a call that breaks its protocol (a server stream without its request, an unknown compression) as refused, not as a server fault", async () => {
    const r = await h2Call("application/grpc+proto", Buffer.alloc(0), "/redflag.v1.CommandService/WatchEvents");
    expect(grpcStatus({ ...r.headers, ...r.trailers })).toEqual({ code: "unimplemented", message: "protocol error: missing input message for server-streaming method" });
    // A client stream in a compression this server does not have (found by the RPC fuzzer).
    const zstd = await h2Call("application/grpc+proto", Buffer.alloc(0), "/redflag.v1.ReleaseService/PublishRelease", { "grpc-encoding": "x-unknown" });
    expect(grpcStatus({ ...zstd.headers, ...zstd.trailers })).toMatchObject({ code: "unimplemented", message: expect.stringContaining('unknown compression "x-unknown"') });
    // (serverFaults, checked at the end, would hold them otherwise)
  });

  // An error message quoting an unpaired surrogate from the request cannot be percent-encoded
  // for gRPC: connect threw while writing it, and the call ended without any status (found by the
  // RPC fuzzer). The JSON text holds the escape "\ud800" where a number belongs.
  const LONE = new TextEncoder().encode('{"pageSize":"\\ud800"}');
  it.each([
    [
      "gRPC-Web over HTTP/1.1",
      async () => {
        const res = await fetch(cp.url + path, { method: "POST", headers: { "content-type": "application/grpc-web+json", ...auth() }, body: envelope(0, LONE), signal: AbortSignal.timeout(10_000) });
        return grpcStatus(trailerFrame(Buffer.from(await res.arrayBuffer())));
      },
    ],
    ["gRPC-Web over HTTP/2", () => h2Call("application/grpc-web+json", envelope(0, LONE)).then((r) => grpcStatus(trailerFrame(r.body)))],
    ["gRPC over HTTP/2", () => h2Call("application/grpc+json", envelope(0, LONE)).then((r) => grpcStatus({ ...r.headers, ...r.trailers }))],
    [
      "gRPC over HTTP/2, a server stream, in a string field",
      () => h2Call("application/grpc+json", envelope(0, new TextEncoder().encode('{"agentId":"\\ud800"}')), "/redflag.v1.CommandService/WatchEvents").then((r) => grpcStatus({ ...r.headers, ...r.trailers })),
    ],
  ])("%s answers a JSON request quoting an unpaired surrogate with InvalidArgument", async (_protocol, call) => {
    const answer = await call();
    expect(answer.code).toBe("invalid_argument");
    expect(answer.message).toMatch(/not valid Unicode|cannot decode/);
    expect(answer.message.isWellFormed()).toBe(true);
  });

  it("still answers well-formed calls afterwards", async () => {
    expect((await cp.admin.fleet.listAgents({})).agents.length).toBeGreaterThan(0);
  });
});

describe("what the server logged", () => {
  it("has no server fault among all of the above", () => {
    expect(serverFaults.map((l) => `${String(l.rpc)}: ${String(l.msg)}`)).toEqual([]);
  });
});

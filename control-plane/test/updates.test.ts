import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandCreator } from "@redflag/gen/command_service_pb";
import { UpdateService, UpdateStatus } from "@redflag/gen/update_service_pb";
import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports, type PackageUpdateInput } from "../src/store/commands.ts";
import { configIn, newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
let web: TestAgent;
let db: TestAgent;
let updates: ReturnType<typeof createClient<typeof UpdateService>>;

const pkg = (name: string, availableVersion: string, severity: string, security = severity !== "unknown"): PackageUpdateInput => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion,
  repository: security ? "bookworm-security" : "bookworm",
  severity,
  security,
  sizeBytes: 1000n,
  rebootRequired: name.startsWith("linux-image"),
});
let scanClock = Date.now();
const scan = (agent: TestAgent, list: PackageUpdateInput[]) =>
  recordScanReports(cp.app.db.prisma, cp.app.db.statements, agent.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(++scanClock), scan: { updates: list, parts: 0, sources: ["apt"] } }], { rows: 10_000 });

async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code]).toBe(Code[code]);
  if (message) expect((err as ConnectError).rawMessage).toMatch(message);
}

beforeAll(async () => {
  cp = await startTestControlPlane();
  web = await registerTestAgent(cp, await newRegistrationToken(cp));
  db = await registerTestAgent(cp, await newRegistrationToken(cp));
  updates = createClient(UpdateService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
  await scan(web, [pkg("openssl", "3.0.15", "security"), pkg("linux-image-amd64", "6.1.119", "security"), pkg("tzdata", "2024b", "unknown")]);
  await scan(db, [pkg("openssl", "3.0.15", "security"), pkg("postgresql-16", "16.6", "unknown")]);
});
afterAll(async () => {
  await cp?.close();
});

describe("UpdateService", () => {
  it("lists the fleet's updates with filters and a total", async () => {
    const all = await updates.listUpdates({});
    expect(all.total).toBe(5);
    const agent = (await cp.admin.fleet.getAgent({ agentId: web.agentId })).agent!;
    expect(agent).toMatchObject({ pendingUpdateCount: 3, securityUpdateCount: 2, updatesBySeverity: { security: 2, unknown: 1 } });
    const security = await updates.listUpdates({ filter: { securityOnly: true } });
    expect(security.updates.map((u) => `${u.agentId === web.agentId ? "web" : "db"}/${u.update!.name}`).sort()).toEqual(["db/openssl", "web/linux-image-amd64", "web/openssl"]);
    expect(security.updates[0]).toMatchObject({ status: UpdateStatus.PENDING, update: { severity: UpdateSeverity.SECURITY } });
    const paged = await updates.listUpdates({ pageSize: 2 });
    expect(paged.updates).toHaveLength(2);
    const rest = await updates.listUpdates({ pageSize: 2, pageToken: paged.nextPageToken });
    const keys = (l: typeof paged) => l.updates.map((u) => `${u.agentId}/${u.update!.name}`);
    expect(new Set([...keys(paged), ...keys(rest)]).size).toBe(4);
    await expectCode(updates.listUpdates({ pageToken: "garbage!" }), Code.InvalidArgument, /page_token/);
    await expectCode(updates.listUpdates({ filter: { severities: [UpdateSeverity.UNSPECIFIED] } }), Code.InvalidArgument, /severity 0 is not a severity/);
    await expectCode(updates.listUpdates({ filter: { agentIds: ["not-a-uuid"] } }), Code.InvalidArgument, /agent_ids\[0\] must be a UUID/);
  });

  it("refuses bulk decisions without a selection, and approves by package across agents", async () => {
    await expectCode(updates.approveUpdates({}), Code.InvalidArgument, /the selection is empty/);
    await expectCode(updates.approveUpdates({ selection: { packageName: "--all" } }), Code.InvalidArgument, /not a package name/);
    const res = await updates.approveUpdates({ selection: { packageName: "openssl" } });
    expect(res).toMatchObject({ approved: 2, held: 0 });
    const approved = await updates.listUpdates({ status: UpdateStatus.APPROVED });
    expect(approved.updates.map((u) => [u.update!.name, u.decidedBy])).toEqual([["openssl", "admin.key"], ["openssl", "admin.key"]]);
  });

  it("keeps a decision across rescans while the version is the same, and drops it for a new version", async () => {
    await scan(web, [pkg("openssl", "3.0.15", "security"), pkg("linux-image-amd64", "6.1.119", "security"), pkg("tzdata", "2024b", "unknown")]);
    expect((await updates.listUpdates({ filter: { agentIds: [web.agentId], packageName: "openssl" } })).updates[0]!.status).toBe(UpdateStatus.APPROVED);
    await scan(web, [pkg("openssl", "3.0.16", "security"), pkg("linux-image-amd64", "6.1.119", "security"), pkg("tzdata", "2024b", "unknown")]);
    const after = (await updates.listUpdates({ filter: { agentIds: [web.agentId], packageName: "openssl" } })).updates[0]!;
    expect(after).toMatchObject({ status: UpdateStatus.PENDING, decidedBy: "" });
  });

  it("never approves or installs a held package, and sends holds to the agents", async () => {
    await expectCode(updates.setHold({ name: "*" }), Code.InvalidArgument, /would hold every package/);
    await expectCode(updates.setHold({ name: "x", agentId: "00000000-0000-4000-8000-000000000000" }), Code.NotFound);
    const hold = (await updates.setHold({ source: "apt", name: "linux-image-*", reason: "kernel freeze", agentId: web.agentId })).hold!;
    const res = await updates.approveUpdates({ selection: { agentIds: [web.agentId], securityOnly: true } });
    expect(res).toMatchObject({ approved: 1, held: 1 });
    const kernel = (await updates.listUpdates({ filter: { packageName: "linux-image-amd64" } })).updates[0]!;
    expect(kernel).toMatchObject({ held: true, status: UpdateStatus.PENDING });

    const poll = await web.client.pollCommands({ nonce: nonce() });
    expect(configIn(web, poll.signedConfig)?.holds).toEqual([expect.objectContaining({ source: "apt", name: "linux-image-*", reason: "kernel freeze" })]);
    const other = await db.client.pollCommands({ nonce: nonce() });
    expect(configIn(db, other.signedConfig)?.holds ?? []).toEqual([]);

    await updates.removeHold({ id: hold.id });
    const again = await web.client.pollCommands({ nonce: nonce(), status: { configRevision: configIn(web, poll.signedConfig)!.revision } });
    expect(configIn(web, again.signedConfig)?.holds).toEqual([]);
    await expectCode(updates.removeHold({ id: hold.id }), Code.NotFound);
  });

  it("queues one pinned install per agent for the approved updates", async () => {
    const res = await updates.installApprovedUpdates({ selection: { packageName: "openssl" } });
    expect(res.packages).toBe(2);
    expect(res.commands.map((c) => c.agentId).sort()).toEqual([web.agentId, db.agentId].sort());
    expect(res.commands.map((c) => c.createdByKind)).toEqual([CommandCreator.ADMIN_KEY, CommandCreator.ADMIN_KEY]);
    const delivered = await db.client.pollCommands({ nonce: nonce() });
    const command = fromBinary(CommandSchema, delivered.commands[0]!.command);
    expect(command.action.case).toBe("installUpdates");
    if (command.action.case !== "installUpdates") return;
    expect(command.action.value.packages.map((p) => [p.source, p.name, p.version, p.architecture])).toEqual([["apt", "openssl", "3.0.15", "amd64"]]);
    const listed = (await updates.listUpdates({ filter: { agentIds: [db.agentId], packageName: "openssl" } })).updates[0]!;
    expect(listed.installCommandId).toBe(command.id);
    // Nothing approved left in this selection: no empty commands.
    await expectCode(updates.installApprovedUpdates({ selection: { packageName: "tzdata" } }).then((r) => {
      if (r.commands.length === 0) throw new ConnectError("no commands", Code.NotFound);
    }), Code.NotFound);
  });

  it("rejects updates until a newer version comes", async () => {
    const res = await updates.rejectUpdates({ selection: { packageName: "postgresql-16" } });
    expect(res.rejected).toBe(1);
    expect((await updates.listUpdates({ status: UpdateStatus.REJECTED })).updates.map((u) => u.update!.name)).toEqual(["postgresql-16"]);
    // A rejected update no longer counts as one the agent still needs (as in the fleet report).
    expect((await cp.admin.fleet.getAgent({ agentId: db.agentId })).agent).toMatchObject({ pendingUpdateCount: 1, securityUpdateCount: 1, updatesBySeverity: { security: 1 } });
    await expectCode(updates.listUpdates({ status: 9 as UpdateStatus }), Code.InvalidArgument, /not an update status/);
  });

  it("bounds holds: a pattern's length, and how many one scope may have, also under concurrent calls", async () => {
    await expectCode(updates.setHold({ source: "*", name: "*".repeat(256) }), Code.InvalidArgument, /at most 255 characters/);
    expect((await updates.setHold({ source: "*", name: "*".repeat(254) + "X" })).hold!.name).toHaveLength(255);
    const own = async () => (await updates.listHolds({ agentId: web.agentId })).holds.filter((h) => h.agentId === web.agentId);
    // Up to 240 written directly, then 20 concurrent calls for the last 10 places.
    const before = (await own()).length;
    await cp.app.db.prisma.hold.createMany({
      data: Array.from({ length: 240 - before }, (_, i) => ({ id: crypto.randomUUID(), agentId: web.agentId, source: "apt", name: `pkg-${i}`, createdBy: "test" })),
    });
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => updates.setHold({ agentId: web.agentId, source: "apt", name: `more-${i}` })));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(10);
    const refused = results.find((r) => r.status === "rejected")!.reason as ConnectError;
    expect(Code[refused.code]).toBe("ResourceExhausted");
    expect(refused.rawMessage).toMatch(/has 250 holds, the most allowed \(250\); remove one first/);
    expect(await own()).toHaveLength(250);
    // Fleet-wide holds are a scope of their own.
    await updates.setHold({ source: "apt", name: "one-more-fleet-wide" });
  });
});

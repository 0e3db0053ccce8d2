import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandOutcome, SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pruneReportData } from "../src/store/reports.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { availableBackends, freshDatabase } from "./support/database.ts";

// Big scans (issue 13, item 2): bounded calls, scans in parts staged until complete, and scans
// written in batches. Small limits keep the scans here a few thousand updates.
const MAX_SCAN = 2500;

async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code]).toBe(Code[code]);
  if (message) expect((err as ConnectError).rawMessage).toMatch(message);
}

const update = (name: string, availableVersion = "2.0") => ({
  source: "apt",
  name,
  currentVersion: "1.0",
  availableVersion,
  architecture: "amd64",
  repository: "bookworm",
  severity: UpdateSeverity.UNKNOWN,
});
const updates = (n: number, prefix = "pkg", version = "2.0") =>
  Array.from({ length: n }, (_, i) => update(`${prefix}-${String(i).padStart(6, "0")}`, version));
const aptRan = [{ subsystem: "apt", state: SubsystemRunState.RAN }];
const chunk = <T>(list: T[], size: number) => Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, (i + 1) * size));

// A scan's updates as ScanParts of at most 1,000, as the agent sends them.
function partsOf(scanId: string, list: ReturnType<typeof updates>) {
  const slices = chunk(list, 1000);
  return slices.map((slice, index) => ({ scanId, index, partCount: slices.length, updates: slice }));
}

let scanClock = Date.now() - 3600_000;
const report = (result: object, id = randomUUID()) => ({ id, scanTime: timestampFromDate(new Date(++scanClock)), result });
const header = (parts: number) => ({ updates: [], subsystems: aptRan, updateParts: parts });

describe.each(availableBackends)("scans in parts on %s", (backend) => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_MAX_SCAN_UPDATES: String(MAX_SCAN) }, { db: await freshDatabase({ backend }), port: 0 });
  });
  afterAll(async () => {
    await cp?.close();
  });

  const prisma = () => cp.app.db.prisma;
  const view = async (agent: TestAgent) =>
    (await prisma().packageUpdate.findMany({ where: { agentId: agent.agentId }, orderBy: { name: "asc" } })).map((u) => `${u.name}=${u.availableVersion}`);
  // What is staged for this agent, and any staged row whose upload is gone (none should be).
  const staged = async (agent: TestAgent) => {
    const [row] = await prisma().$queryRaw<{ uploads: number; rows: number }[]>`
      SELECT (SELECT count(*) FROM scan_uploads WHERE agent_id = ${agent.agentId}::uuid)::int AS uploads,
             (SELECT count(*) FROM staged_updates s LEFT JOIN scan_uploads u ON u.id = s.upload_id
               WHERE u.id IS NULL OR u.agent_id = ${agent.agentId}::uuid)::int AS rows`;
    return row!;
  };
  const newAgent = async () => registerTestAgent(cp, await newRegistrationToken(cp));
  async function deliveredScan(agent: TestAgent) {
    const created = await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } });
    await agent.client.pollCommands({ nonce: nonce() });
    return created.command!.id;
  }
  const scanResult = (commandId: string, value: object) => ({
    commandId,
    outcome: CommandOutcome.SUCCEEDED,
    message: "scanned",
    detail: { case: "scanUpdates" as const, value },
  });

  it("refuses a call carrying more than 10,000 updates with InvalidArgument and changes nothing", async () => {
    const agent = await newAgent();
    const id = await deliveredScan(agent);
    await expectCode(
      agent.client.reportResults({ results: [scanResult(id, { updates: updates(10_001), subsystems: aptRan })] }),
      Code.InvalidArgument,
      /10001 updates and package results; at most 10000 per call/,
    );
    await expectCode(
      agent.client.reportResults({ scans: [report({ updates: updates(6000, "a"), subsystems: aptRan }), report({ updates: updates(4001, "b"), subsystems: aptRan })] }),
      Code.InvalidArgument,
      /at most 10000 per call/,
    );
    await expectCode(
      agent.client.reportResults({ scanParts: [...partsOf(id, updates(10_001))] }),
      Code.InvalidArgument,
      /(at most 10000 per call|at most 100 scan parts)/,
    );
    const packages = Array.from({ length: 10_001 }, (_, i) => ({ source: "apt", name: `p${i}`, toVersion: "2", state: 1 }));
    await expectCode(
      agent.client.reportResults({ results: [{ commandId: id, outcome: CommandOutcome.SUCCEEDED, detail: { case: "installUpdates", value: { packages } } }] }),
      Code.InvalidArgument,
      /at most 10000 per call/,
    );
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.SENT);
    expect(await view(agent)).toEqual([]);
    expect(await prisma().updateEvent.count({ where: { agentId: agent.agentId } })).toBe(0);
    expect(await staged(agent)).toEqual({ uploads: 0, rows: 0 });
  });

  it("refuses a scan over REDFLAG_MAX_SCAN_UPDATES, whole or in parts, and keeps nothing of it", async () => {
    const agent = await newAgent();
    const id = await deliveredScan(agent);
    await expectCode(
      agent.client.reportResults({ results: [scanResult(id, { updates: updates(MAX_SCAN + 1), subsystems: aptRan })] }),
      Code.InvalidArgument,
      new RegExp(`holds ${MAX_SCAN + 1} updates; at most ${MAX_SCAN} per scan`),
    );
    const parts = partsOf(id, updates(MAX_SCAN + 1));
    await agent.client.reportResults({ scanParts: [parts[0]!] });
    await agent.client.reportResults({ scanParts: [parts[1]!] });
    expect((await staged(agent)).rows).toBe(2000);
    await expectCode(
      agent.client.reportResults({ scanParts: [parts[2]!] }),
      Code.InvalidArgument,
      new RegExp(`scan ${id} holds more than ${MAX_SCAN} updates, the most one scan may report; nothing of it was kept`),
    );
    expect(await staged(agent)).toEqual({ uploads: 0, rows: 0 });
    // Its result then finds the parts missing: nothing is applied, nothing acknowledged.
    const res = await agent.client.reportResults({ results: [scanResult(id, header(3))] });
    expect(res.acknowledgedCommandIds).toEqual([]);
    expect(res.incompleteScans).toEqual([expect.objectContaining({ scanId: id, missingParts: [0, 1, 2] })]);
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.SENT);
    expect(await view(agent)).toEqual([]);
  });

  it("refuses malformed parts with InvalidArgument naming the field", async () => {
    const agent = await newAgent();
    const scanId = randomUUID();
    const part = { scanId, index: 0, partCount: 2, updates: [update("x")] };
    await expectCode(agent.client.reportResults({ scanParts: [{ ...part, scanId: "nope" }] }), Code.InvalidArgument, /scan_parts\[0\]\.scan_id/);
    await expectCode(agent.client.reportResults({ scanParts: [{ ...part, index: 2 }] }), Code.InvalidArgument, /scan_parts\[0\]\.index/);
    await expectCode(agent.client.reportResults({ scanParts: [{ ...part, partCount: 1001 }] }), Code.InvalidArgument, /part_count must be from 1 to 1000/);
    await expectCode(agent.client.reportResults({ scanParts: [{ ...part, updates: [] }] }), Code.InvalidArgument, /updates must not be empty/);
    await expectCode(
      agent.client.reportResults({ scanParts: [{ ...part, updates: [{ ...update("x"), name: "" }] }] }),
      Code.InvalidArgument,
      /scan_parts\[0\]\.updates\[0\]\.name is required/,
    );
    await expectCode(
      agent.client.reportResults({ scans: [report({ ...header(2), updates: [update("x")] })] }),
      Code.InvalidArgument,
      /updates must be empty when update_parts is set/,
    );
    await agent.client.reportResults({ scanParts: [part] });
    await expectCode(agent.client.reportResults({ scanParts: [{ ...part, index: 1, partCount: 3 }] }), Code.InvalidArgument, /announced in 2 parts; this part says 3/);
  });

  it("applies a scan in parts only when every part is there; a missing part leaves the previous view", async () => {
    const agent = await newAgent();
    await agent.client.reportResults({ scans: [report({ updates: [update("old-a"), update("old-b")], subsystems: aptRan })] });
    expect(await view(agent)).toEqual(["old-a=2.0", "old-b=2.0"]);

    const big = updates(2400);
    const scan = report(header(3));
    const parts = partsOf(scan.id, big);
    await agent.client.reportResults({ scanParts: [parts[0]!, parts[2]!] });
    const early = await agent.client.reportResults({ scans: [scan] });
    expect(early.acknowledgedScanIds).toEqual([]);
    expect(early.incompleteScans).toEqual([expect.objectContaining({ scanId: scan.id, missingParts: [1] })]);
    expect(await view(agent)).toEqual(["old-a=2.0", "old-b=2.0"]);

    // The missing part and the report again, in one call.
    const done = await agent.client.reportResults({ scanParts: [parts[1]!], scans: [scan] });
    expect(done.acknowledgedScanIds).toEqual([scan.id]);
    expect(done.incompleteScans).toEqual([]);
    const now = await view(agent);
    expect(now).toHaveLength(2400);
    expect(now).toEqual(big.map((u) => `${u.name}=2.0`));
    expect(await prisma().updateEvent.count({ where: { agentId: agent.agentId, kind: "found" } })).toBe(2 + 2400);
    expect(await staged(agent)).toEqual({ uploads: 0, rows: 0 });
    const fleet = (await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent!;
    expect(fleet.pendingUpdateCount).toBe(2400);
  });

  it("records parts, results and reports sent again only once", async () => {
    const agent = await newAgent();
    const id = await deliveredScan(agent);
    const parts = partsOf(id, updates(2100));
    await agent.client.reportResults({ scanParts: [parts[0]!, parts[0]!, parts[1]!] });
    await agent.client.reportResults({ scanParts: parts });
    expect((await staged(agent)).rows).toBe(2100);
    const first = await agent.client.reportResults({ scanParts: parts, results: [scanResult(id, header(3))] });
    expect(first.acknowledgedCommandIds).toEqual([id]);
    // The acknowledgement was lost: the agent sends everything again.
    const again = await agent.client.reportResults({ scanParts: parts, results: [scanResult(id, header(3))] });
    expect(again.acknowledgedCommandIds).toEqual([id]);
    expect(await view(agent)).toHaveLength(2100);
    expect(await prisma().updateEvent.count({ where: { agentId: agent.agentId, kind: "found", commandId: id } })).toBe(2100);
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.SUCCEEDED);
    // The parts sent again with it are not kept.
    expect(await staged(agent)).toEqual({ uploads: 0, rows: 0 });
  });

  it("keeps first-seen times and decisions while a version is still offered, and rewrites only what changed", async () => {
    const agent = await newAgent();
    const first = updates(1500);
    const firstScan = report(header(2));
    await agent.client.reportResults({ scanParts: partsOf(firstScan.id, first), scans: [firstScan] });
    const key = (name: string) => ({ agentId_source_name_architecture: { agentId: agent.agentId, source: "apt", name, architecture: "amd64" } });
    await prisma().packageUpdate.update({ where: key("pkg-000001"), data: { status: "approved", decidedBy: "admin", decidedAt: new Date() } });
    await prisma().packageUpdate.update({ where: key("pkg-000002"), data: { status: "approved", decidedBy: "admin", decidedAt: new Date() } });
    const before = await prisma().packageUpdate.findUniqueOrThrow({ where: key("pkg-000001") });

    // The same scan again, but pkg-000002 offers a new version, pkg-000003 is gone and one is new.
    const second = first.filter((u) => u.name !== "pkg-000003").map((u) => (u.name === "pkg-000002" ? { ...u, availableVersion: "3.0" } : u));
    second.push(update("brand-new"));
    const secondScan = report(header(2));
    await agent.client.reportResults({ scanParts: partsOf(secondScan.id, second), scans: [secondScan] });

    const kept = await prisma().packageUpdate.findUniqueOrThrow({ where: key("pkg-000001") });
    expect(kept).toMatchObject({ status: "approved", decidedBy: "admin", firstSeenAt: before.firstSeenAt });
    // Not rewritten: the row is the one the first scan wrote.
    expect(kept.lastSeenAt).toEqual(before.lastSeenAt);
    const changed = await prisma().packageUpdate.findUniqueOrThrow({ where: key("pkg-000002") });
    expect(changed).toMatchObject({ status: "pending", decidedBy: null, availableVersion: "3.0", firstSeenAt: before.firstSeenAt });
    expect(await prisma().packageUpdate.findUnique({ where: key("pkg-000003") })).toBeNull();
    expect(await view(agent)).toHaveLength(1500);
    const found = await prisma().updateEvent.findMany({ where: { agentId: agent.agentId, kind: "found", time: new Date(Number(secondScan.scanTime.seconds) * 1000 + secondScan.scanTime.nanos / 1e6) } });
    expect(found.map((e) => `${e.name}=${e.version}`).sort()).toEqual(["brand-new=2.0", "pkg-000002=3.0"]);
  });

  it("applies concurrent scans of one agent one at a time: the newer view wins whole", async () => {
    const agent = await newAgent();
    const older = report(header(2));
    const newer = report(header(2));
    await agent.client.reportResults({ scanParts: partsOf(older.id, updates(2000, "older")) });
    await agent.client.reportResults({ scanParts: partsOf(newer.id, updates(2000, "newer")) });
    const [a, b] = await Promise.all([agent.client.reportResults({ scans: [newer] }), agent.client.reportResults({ scans: [older] })]);
    expect([...a.acknowledgedScanIds, ...b.acknowledgedScanIds].sort()).toEqual([older.id, newer.id].sort());
    const names = await view(agent);
    expect(names).toHaveLength(2000);
    expect(names.every((n) => n.startsWith("newer-"))).toBe(true);
    expect(await prisma().scanLease.count({ where: { agentId: agent.agentId } })).toBe(0);
  });

  it("keeps at most two staged scans per agent and lets staged parts expire", async () => {
    const agent = await newAgent();
    const scans = [report(header(2)), report(header(2)), report(header(2))];
    for (const scan of scans) await agent.client.reportResults({ scanParts: [partsOf(scan.id, updates(1500, scan.id.slice(0, 8)))[0]!] });
    const uploads = await prisma().scanUpload.findMany({ where: { agentId: agent.agentId }, select: { scanId: true } });
    expect(uploads.map((u) => u.scanId).sort()).toEqual([scans[1]!.id, scans[2]!.id].sort());
    expect((await staged(agent)).rows).toBe(2000);
    // The first was dropped: its report finds every part missing.
    const res = await agent.client.reportResults({ scans: [scans[0]!] });
    expect(res.incompleteScans).toEqual([expect.objectContaining({ scanId: scans[0]!.id, missingParts: [0, 1] })]);

    await prisma().scanUpload.updateMany({ where: { agentId: agent.agentId }, data: { updatedAt: new Date(Date.now() - 2 * 3600_000) } });
    const pruned = await pruneReportData(prisma(), { metrics: new Date(0), updateEvents: new Date(0) });
    expect(pruned.stagedScans).toBe(2);
    expect(await staged(agent)).toEqual({ uploads: 0, rows: 0 });
    expect(await view(agent)).toEqual([]);
  });
});

describe.each(availableBackends)("a big scan applied over several calls on %s", (backend) => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    // The lowest per-call limit: each call goes through at most 1,000 staged updates.
    cp = await startTestControlPlane({ REDFLAG_MAX_REPORT_UPDATES: "1000" }, { db: await freshDatabase({ backend }), port: 0 });
  });
  afterAll(async () => {
    await cp?.close();
  });

  const names = async (agent: TestAgent) =>
    (await cp.app.db.prisma.packageUpdate.findMany({ where: { agentId: agent.agentId }, orderBy: { name: "asc" }, select: { name: true } })).map((u) => u.name);
  // Sends the report until it is acknowledged; returns the answers.
  async function untilRecorded(agent: TestAgent, scan: ReturnType<typeof report>) {
    const answers = [];
    for (let i = 0; i < 20; i++) {
      const res = await agent.client.reportResults({ scans: [scan] });
      answers.push(res);
      if (res.acknowledgedScanIds.includes(scan.id)) return answers;
    }
    throw new Error("the scan was never recorded");
  }

  it("carries on where the last call stopped, and answers with no part missing meanwhile", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const old = report(header(3));
    await Promise.all(partsOf(old.id, updates(2500, "old")).map((part) => agent.client.reportResults({ scanParts: [part] })));
    expect(await untilRecorded(agent, old)).toHaveLength(3);
    expect(await names(agent)).toHaveLength(2500);

    const scan = report(header(3));
    const fresh = updates(2400, "new");
    for (const part of partsOf(scan.id, fresh)) await agent.client.reportResults({ scanParts: [part] });
    const first = await agent.client.reportResults({ scans: [scan] });
    expect(first.acknowledgedScanIds).toEqual([]);
    expect(first.incompleteScans).toEqual([expect.objectContaining({ scanId: scan.id, missingParts: [] })]);
    // Part-way: the first 1,000 new updates are in, the old view is not gone yet.
    const between = await names(agent);
    expect(between.filter((n) => n.startsWith("new-"))).toHaveLength(1000);
    expect(between.filter((n) => n.startsWith("old-"))).toHaveLength(2500);
    const rest = await untilRecorded(agent, scan);
    expect(rest).toHaveLength(2);
    expect(await names(agent)).toEqual(fresh.map((u) => u.name));
    expect(await cp.app.db.prisma.updateEvent.count({ where: { agentId: agent.agentId, kind: "found", name: { startsWith: "new-" } } })).toBe(2400);
  });

  it("counts each version a version listing reports against the same per-call limit, and stores one within it", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const packages = Array.from({ length: 20 }, (_, i) => ({ source: "apt", name: `pkg-${i}` }));
    const commandId = (await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "listPackageVersions", value: { packages } } })).command!.id;
    await agent.client.pollCommands({ nonce: nonce() });
    const answer = (versionsEach: number) => ({
      commandId,
      outcome: CommandOutcome.SUCCEEDED,
      message: "listed",
      detail: {
        case: "listPackageVersions" as const,
        value: { packages: packages.map((p) => ({ package: p, installedVersion: "2.0-1", rollbackSupported: true, versions: Array.from({ length: versionsEach }, (_, v) => ({ version: `1.${v}-1` })) })) },
      },
    });
    // 20 packages and 20 × 50 versions: 1,020 entries, over the 1,000 of this control plane.
    const refused = await agent.client.reportResults({ results: [answer(50)] }).catch((e: unknown) => ConnectError.from(e));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.InvalidArgument);
    expect((refused as ConnectError).rawMessage).toMatch(/this report carries 1020 updates and package results; at most 1000 per call/);
    expect((await cp.admin.commands.getCommand({ id: commandId })).command!.state).toBe(CommandState.SENT);
    const ok = await agent.client.reportResults({ results: [answer(40)] });
    expect(ok.acknowledgedCommandIds).toEqual([commandId]);
    const stored = (await cp.admin.commands.getCommand({ id: commandId })).command!;
    expect(stored.result?.detail.case === "listPackageVersions" && stored.result.detail.value.packages[19]!.versions.length).toBe(40);
  });

  it("starts a scan applied part-way over when another scan of the agent was applied meanwhile", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const commandId = (await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } })).command!.id;
    await agent.client.pollCommands({ nonce: nonce() });
    const result = { commandId, outcome: CommandOutcome.SUCCEEDED, message: "scanned", detail: { case: "scanUpdates" as const, value: header(3) } };
    const scanned = updates(2400, "cmd");
    for (const part of partsOf(commandId, scanned)) await agent.client.reportResults({ scanParts: [part] });
    const first = await agent.client.reportResults({ results: [result] });
    expect(first.incompleteScans).toEqual([expect.objectContaining({ scanId: commandId, missingParts: [] })]);
    expect(await names(agent)).toHaveLength(1000);
    // A scheduled scan is applied whole in between; it removes what the first call applied.
    const between = report({ updates: [update("only")], subsystems: aptRan });
    expect((await agent.client.reportResults({ scans: [between] })).acknowledgedScanIds).toEqual([between.id]);
    expect(await names(agent)).toEqual(["only"]);
    // Carrying on from the second batch would leave out the first 1,000: the scan starts over.
    for (let i = 0; i < 10 && !(await agent.client.reportResults({ results: [result] })).acknowledgedCommandIds.includes(commandId); i++);
    expect(await names(agent)).toEqual(scanned.map((u) => u.name));
    expect((await cp.admin.commands.getCommand({ id: commandId })).command?.state).toBe(CommandState.SUCCEEDED);
    expect(await cp.app.db.prisma.scanUpload.count({ where: { agentId: agent.agentId } })).toBe(0);
  });
});

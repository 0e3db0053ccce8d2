import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import {
  CommandOutcome,
  type CommandResultSchema,
  CommandSchema,
  CommandType,
  PackageResultState,
  type ScanUpdatesResultSchema,
  SubsystemRunState,
  UpdateSeverity,
} from "@redflag/gen/command_pb";
import { CommandState, type CreateCommandRequest } from "@redflag/gen/command_service_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { prune } from "../src/scheduler.ts";
import { sweepTimedOut } from "../src/store/commands.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { availableBackends, freshDatabase, type Backend } from "./support/database.ts";

const DAY_MS = 86_400_000;
const PASSWORD = "a long enough passphrase 42";

// The init form (not a built message), without the command ID run() fills in.
type ResultInit = Omit<Exclude<MessageInitShape<typeof CommandResultSchema>, { $typeName: string }>, "commandId">;
type ScanInit = MessageInitShape<typeof ScanUpdatesResultSchema>;

async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code], (err as ConnectError).rawMessage).toBe(Code[code]);
  if (message) expect((err as ConnectError).rawMessage).toMatch(message);
}

const update = (name: string, severity: UpdateSeverity, security = false) => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion: "2.0",
  repository: security ? "bookworm-security" : "bookworm",
  severity,
  security,
});

const systemMetrics = (cpu: number, rebootRequired = false) => ({
  cpuUsagePercent: cpu,
  cpuCores: 4,
  memoryTotalBytes: 8n << 30n,
  memoryUsedBytes: 3n << 30n,
  loadAverage: [0.5, 0.4, 0.3],
  uptimeSeconds: 3600n,
  rebootRequired,
  rebootRequiredBy: rebootRequired ? ["linux-image-6.1.0-28-amd64"] : [],
});
const storageMetrics = (used: bigint) => ({ disks: [{ mountPoint: "/", device: "/dev/sda1", fsType: "ext4", sizeBytes: 100n << 30n, usedBytes: used << 30n }] });
const ran = (...names: string[]) => names.map((subsystem) => ({ subsystem, state: SubsystemRunState.RAN }));

describe.each(availableBackends)("ReportService on %s", (backend: Backend) => {
  let cp: TestControlPlane;
  let reports: Client<typeof ReportService>;
  let web: TestAgent;
  let db: TestAgent;
  let away: TestAgent;
  let lost: TestAgent;
  let gone: TestAgent;
  let metricTimes: Date[];

  // Creates a command, delivers it to the agent, and reports the given result for it.
  async function run(agent: TestAgent, action: CreateCommandRequest["action"], result: ResultInit) {
    const created = (await cp.admin.commands.createCommand({ agentId: agent.agentId, action })).command!;
    const polled = await agent.client.pollCommands({ nonce: nonce() });
    const command = polled.commands.map((c) => fromBinary(CommandSchema, c.command)).find((c) => c.id === created.id)!;
    expect(command, "the command was delivered").toBeDefined();
    const res = await agent.client.reportResults({ results: [{ commandId: command.id, sequence: command.sequence, ...result }] });
    expect(res.acknowledgedCommandIds).toEqual([command.id]);
    return command.id;
  }
  const scan = (agent: TestAgent, value: ScanInit, finishTime = new Date()) =>
    run(agent, { case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems: [] } }, {
      outcome: CommandOutcome.SUCCEEDED,
      finishTime: timestampFromDate(finishTime),
      detail: { case: "scanUpdates", value },
    });

  beforeAll(async () => {
    cp = await startTestControlPlane({}, { db: await freshDatabase({ backend }), port: 0 });
    const transport = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
    reports = createClient(ReportService, transport(cp.adminKey));
    const token = await newRegistrationToken(cp, 20);
    const agents = await Promise.all(Array.from({ length: 6 }, () => registerTestAgent(cp, token)));
    // The fourth registers and is never heard from.
    [web, db, , away, lost, gone] = agents as [TestAgent, TestAgent, TestAgent, TestAgent, TestAgent, TestAgent];

    // web says in its poll status that it needs a reboot; db says so in its scan's metrics.
    await web.client.pollCommands({ nonce: nonce(), status: { rebootRequired: true } });
    const now = Date.now();
    metricTimes = [new Date(now - 60_000), new Date(now - 30_000)];
    await scan(
      web,
      {
        updates: [
          update("openssl", UpdateSeverity.CRITICAL, true),
          update("libssl3", UpdateSeverity.CRITICAL, true),
          update("curl", UpdateSeverity.IMPORTANT, true),
          update("tzdata", UpdateSeverity.LOW),
          update("vim", UpdateSeverity.UNKNOWN),
          update("bash", UpdateSeverity.MODERATE),
        ],
        subsystems: ran("apt"),
      },
    );
    await scan(
      db,
      {
        updates: [update("postgresql-16", UpdateSeverity.SECURITY, true)],
        subsystems: ran("apt", "system", "storage"),
        systemMetrics: systemMetrics(12.5, true),
        storageMetrics: storageMetrics(40n),
      },
      metricTimes[0],
    );
    // The agent's own schedule: readings only, sent twice (its acknowledgement was "lost").
    const report = { id: randomUUID(), scanTime: timestampFromDate(metricTimes[1]!), result: { subsystems: ran("system", "storage"), systemMetrics: systemMetrics(55), storageMetrics: storageMetrics(41n) } };
    expect((await db.client.reportResults({ scans: [report] })).acknowledgedScanIds).toEqual([report.id]);
    await db.client.reportResults({ scans: [report] });

    // bash is rejected: no longer pending. The rest of the install: two installed, one failed,
    // one skipped (not history).
    await createClient(UpdateService, transport(cp.adminKey)).rejectUpdates({ selection: { agentIds: [web.agentId], packageName: "bash" } });
    await run(
      web,
      { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [], sources: ["apt"] } },
      {
        outcome: CommandOutcome.FAILED,
        message: "1 of 4 packages failed",
        detail: {
          case: "installUpdates",
          value: {
            packages: [
              { source: "apt", name: "openssl", architecture: "amd64", fromVersion: "1.0", toVersion: "2.0", state: PackageResultState.INSTALLED },
              { source: "apt", name: "libssl3", architecture: "amd64", fromVersion: "1.0", toVersion: "2.0", state: PackageResultState.INSTALLED },
              { source: "apt", name: "curl", architecture: "amd64", fromVersion: "1.0", toVersion: "2.0", state: PackageResultState.FAILED, reason: "dpkg error" },
              { source: "apt", name: "tzdata", architecture: "amd64", state: PackageResultState.SKIPPED, reason: "held" },
            ],
          },
        },
      },
    );
    await run(db, { case: "collectSpecs", value: { $typeName: "redflag.v1.CollectSpecs" } }, { outcome: CommandOutcome.REJECTED, message: "signature expired" });
    // A command delivered and never answered times out.
    await cp.admin.commands.createCommand({ agentId: db.agentId, action: { case: "collectSpecs", value: {} } });
    await db.client.pollCommands({ nonce: nonce() });
    expect(await sweepTimedOut(cp.app.db.prisma, new Date(Date.now() + 1000), new Date())).toHaveLength(1);

    // away was last heard two hours ago, lost two days ago; idle never; gone is decommissioned.
    await cp.app.lastSeen.flush();
    await cp.app.db.prisma.agent.update({ where: { id: away.agentId }, data: { lastSeenAt: new Date(now - 2 * 3600_000) } });
    await cp.app.db.prisma.agent.update({ where: { id: lost.agentId }, data: { lastSeenAt: new Date(now - 2 * DAY_MS), osName: "Ubuntu", osVersion: "24.04 LTS", agentVersion: "0.2.0" } });
    await cp.admin.fleet.decommissionAgent({ agentId: gone.agentId });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("counts every health state, zeros included; an agent never heard from is never online", async () => {
    const res = await reports.getFleetOverview({});
    expect(res.health.map((h) => [AgentHealth[h.health], h.count])).toEqual([
      ["ONLINE", 2],
      ["OFFLINE", 1],
      ["STALE", 1],
      ["NEVER_REPORTED", 1],
      ["DECOMMISSIONED", 1],
    ]);
    expect(res.totalAgents).toBe(5);
    expect(Math.abs(timestampDate(res.generateTime!).getTime() - Date.now())).toBeLessThan(60_000);
    expect(res.agentsByOs.map((l) => [l.label, l.count])).toEqual([["Debian GNU/Linux 12 (bookworm)", 4], ["Ubuntu 24.04 LTS", 1]]);
    expect(res.agentsByVersion.map((l) => [l.label, l.count])).toEqual([["0.1.0", 4], ["0.2.0", 1]]);
  });

  it("counts pending updates by severity, most severe first, leaving out rejected ones", async () => {
    const res = await reports.getFleetOverview({});
    expect(res.pendingBySeverity.map((s) => [UpdateSeverity[s.severity], s.count])).toEqual([
      ["CRITICAL", 2],
      ["IMPORTANT", 1],
      ["SECURITY", 1],
      ["LOW", 1],
      ["UNKNOWN", 1],
    ]);
    expect(res).toMatchObject({ pendingUpdates: 6, securityUpdates: 4, agentsWithUpdates: 2 });
  });

  it("lists the hosts that need a reboot, from poll status and from scan metrics, and forgets them when they stop saying so", async () => {
    const res = await reports.getFleetOverview({});
    expect(res.rebootRequiredCount).toBe(2);
    const hosts = res.rebootRequired.map((a) => a.hostname);
    expect(hosts).toEqual([...hosts].sort());
    expect(res.rebootRequired.map((a) => a.id).sort()).toEqual([web.agentId, db.agentId].sort());
    expect(res.rebootRequired.find((a) => a.id === web.agentId)?.health).toBe(AgentHealth.ONLINE);

    await web.client.pollCommands({ nonce: nonce(), status: { rebootRequired: false } });
    await cp.app.lastSeen.flush();
    const after = await reports.getFleetOverview({});
    expect(after.rebootRequired.map((a) => a.id)).toEqual([db.agentId]);
    expect(after.rebootRequiredCount).toBe(1);
  });

  it("shows the latest failed, rejected and timed-out commands, newest first", async () => {
    const res = await reports.getFleetOverview({});
    expect(res.recentFailures.map((c) => [CommandType[c.type], CommandState[c.state]])).toEqual([
      ["COLLECT_SPECS", "TIMED_OUT"],
      ["COLLECT_SPECS", "REJECTED"],
      ["INSTALL_UPDATES", "FAILED"],
    ]);
    expect(res.recentFailures[2]!.result?.message).toBe("1 of 4 packages failed");
  });

  it("gives daily history in UTC days, oldest first, days without activity included", async () => {
    const res = await reports.getFleetOverview({});
    expect(res.daily).toHaveLength(14);
    const days = res.daily.map((d) => timestampDate(d.day!).getTime());
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
    expect(days).toEqual(Array.from({ length: 14 }, (_, i) => today - (13 - i) * DAY_MS));
    for (const d of res.daily.slice(0, -1)) {
      expect(d).toMatchObject({ updatesFound: 0, updatesInstalled: 0, updatesFailed: 0, commandsSucceeded: 0, commandsFailed: 0 });
    }
    // Found: six on web (bash too: it was found before it was rejected) and one on db. Two
    // scans succeeded; the install failed, one command was rejected, one timed out.
    expect(res.daily.at(-1)).toMatchObject({ updatesFound: 7, updatesInstalled: 2, updatesFailed: 1, commandsSucceeded: 2, commandsFailed: 3 });

    expect((await reports.getFleetOverview({ days: 1 })).daily).toHaveLength(1);
    expect((await reports.getFleetOverview({ days: 90 })).daily).toHaveLength(90);
    await expectCode(reports.getFleetOverview({ days: 91 }), Code.InvalidArgument, /^days must be from 1 to 90/);
  });

  it("counts an update as found again only when a scan offers a new version", async () => {
    const list = [update("postgresql-16", UpdateSeverity.SECURITY, true), update("libpq5", UpdateSeverity.LOW)];
    await scan(db, { updates: list, subsystems: ran("apt") });
    await scan(db, { updates: [{ ...list[0]!, availableVersion: "2.1" }, list[1]!], subsystems: ran("apt") });
    const today = (await reports.getFleetOverview({})).daily.at(-1)!;
    expect(today.updatesFound).toBe(7 + 2);
  });

  it("returns an agent's readings from scan commands and scheduled scans, oldest first, each once", async () => {
    const res = await reports.listAgentMetrics({ agentId: db.agentId });
    expect(res.samples.map((s) => timestampDate(s.time!).getTime())).toEqual(metricTimes.map((t) => t.getTime()));
    expect(res.samples.map((s) => s.system?.cpuUsagePercent)).toEqual([12.5, 55]);
    expect(res.samples[0]!.system).toMatchObject({ cpuCores: 4, rebootRequired: true, rebootRequiredBy: ["linux-image-6.1.0-28-amd64"] });
    expect(res.samples.map((s) => s.storage?.disks[0]?.usedBytes)).toEqual([40n << 30n, 41n << 30n]);

    // The newest when there are more; only those at or after `since`.
    expect((await reports.listAgentMetrics({ agentId: db.agentId, limit: 1 })).samples.map((s) => s.system?.cpuUsagePercent)).toEqual([55]);
    const since = timestampFromDate(new Date(metricTimes[0]!.getTime() + 1));
    expect((await reports.listAgentMetrics({ agentId: db.agentId, since })).samples).toHaveLength(1);
    // A scan without the system and storage subsystems stores no reading.
    expect((await reports.listAgentMetrics({ agentId: web.agentId })).samples).toEqual([]);

    await expectCode(reports.listAgentMetrics({ agentId: "not-a-uuid" }), Code.InvalidArgument, /^agent_id must be a UUID/);
    await expectCode(reports.listAgentMetrics({ agentId: randomUUID() }), Code.NotFound, /does not exist/);
    await expectCode(reports.listAgentMetrics({ agentId: db.agentId, limit: 1001 }), Code.InvalidArgument, /^limit must be from 1 to 1000/);
  });

  it("is open to viewers and closed to callers without credentials", async () => {
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    const admin = (await auth.setup({ username: "alice", password: "correct horse battery staple" })).sessionToken;
    const users = createClient(UserService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${admin}` })] }));
    await users.createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER });
    const viewer = (await auth.login({ username: "victor", password: PASSWORD })).sessionToken;
    const asViewer = createClient(ReportService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${viewer}` })] }));
    expect((await asViewer.getFleetOverview({})).totalAgents).toBe(5);
    expect((await asViewer.listAgentMetrics({ agentId: db.agentId })).samples).toHaveLength(2);

    const anonymous = createClient(ReportService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    await expectCode(anonymous.getFleetOverview({}), Code.Unauthenticated);
    await expectCode(anonymous.listAgentMetrics({ agentId: db.agentId }), Code.Unauthenticated);
  });

  it("prints the overview and an agent's readings with the CLI, as tables or JSON", async () => {
    const main = path.resolve(import.meta.dirname, "../src/cli/main.ts");
    const cli = async (...args: string[]) => (await promisify(execFile)(process.execPath, [main, "--server", cp.url, "--api-key", cp.adminKey, ...args])).stdout;
    const text = await cli("report", "--days", "3");
    expect(text).toMatch(/^agents: 5 \(2 online, 1 offline, 1 stale, 1 never reported, 1 decommissioned\)\n/);
    expect(text).toContain("pending updates: 7, 4 security, on 2 agents: 2 critical, 1 important, 1 security, 2 low, 1 unknown\n");
    expect(text).toContain("needs a reboot: 1\n");
    expect(text).toMatch(/\nrecent failures:\nFINISHED .*\n\S+Z +\S+ +\S+ +\S+ +collect_specs +timed_out\n/);
    expect(text.match(/^\d{4}-\d\d-\d\d /gm)).toHaveLength(3);
    expect(JSON.parse(await cli("--json", "report")).daily).toHaveLength(14);

    const metrics = await cli("agents", "metrics", db.agentId);
    expect(metrics.split("\n")[0]).toMatch(/^TIME +CPU +MEMORY +LOAD +FULLEST DISK +REBOOT$/);
    expect(metrics).toMatch(/12\.5% of 4 +3\.0 GiB \/ 8\.0 GiB +0\.50 0\.40 0\.30 +\/ 40% of 100\.0 GiB +needed\n/);
    expect(JSON.parse(await cli("--json", "agents", "metrics", db.agentId, "--limit", "1")).samples).toHaveLength(1);
  });

  it("prunes readings by retention_metrics and update history with the commands", async () => {
    const prisma = cp.app.db.prisma;
    const old = new Date(Date.now() - 40 * DAY_MS);
    await prisma.metricSample.create({ data: { id: randomUUID(), agentId: db.agentId, time: old } });
    await prisma.updateEvent.create({ data: { agentId: db.agentId, time: new Date(Date.now() - 200 * DAY_MS), kind: "found", source: "apt", name: "x", architecture: "", version: "1" } });
    const pruned = await prune(prisma, new Date(), settingsFor({ metrics: 30, commands: 180 }));
    expect(pruned).toMatchObject({ metrics: 1, updateEvents: 1 });
    expect((await reports.listAgentMetrics({ agentId: db.agentId, since: timestampFromDate(new Date(0)) })).samples).toHaveLength(2);
  });
});

// Retention settings in days; everything else kept for ten years.
function settingsFor(days: { metrics?: number; commands?: number }) {
  const seconds = (d: number | undefined) => (d ?? 3650) * 86_400;
  return { retentionMetricsSeconds: seconds(days.metrics), retentionCommandsSeconds: seconds(days.commands), retentionAuditSeconds: seconds(undefined), retentionSecurityEventsSeconds: seconds(undefined) };
}

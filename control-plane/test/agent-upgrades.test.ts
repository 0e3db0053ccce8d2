import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandOutcome, CommandSchema, CommandType } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { MaintenanceService, WindowKind } from "@redflag/gen/maintenance_service_pb";
import { AgentStatusSchema, OsFamily } from "@redflag/gen/common_pb";
import { Role } from "@redflag/gen/identity_pb";
import { AgentUpgradeState, type PublishReleaseRequest, PublishReleaseRequestSchema, ReleaseService } from "@redflag/gen/release_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { choosePercent, nextAutomatic, nextUpgradeState, type UpgradeFacts } from "../src/domain/upgrades.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

const PASSWORD = "a long enough passphrase 42";
// The scheduler runs only when a test ticks it, so nothing moves between a step and its check.
const ENV = { REDFLAG_SWEEP_INTERVAL_MS: "3600000" };

async function* stream(data: Uint8Array, version: string, platform: string): AsyncGenerator<PublishReleaseRequest> {
  const sha256 = new Uint8Array(createHash("sha256").update(data).digest());
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version, platform, sizeBytes: BigInt(data.length), sha256 } } });
  yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: data } });
}

const as = (cp: TestControlPlane, secret: string) =>
  createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return err;
}

// An agent driven through the API as a real one talks to it: it registers with its version, OS
// and CPU, polls with a status naming the version it runs, and reports results.
async function enrol(cp: TestControlPlane, token: string, opts: { hostname: string; version?: string; arch?: string }): Promise<TestAgent & { version: string }> {
  const version = opts.version ?? "0.1.0";
  const os = { family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12", kernel: "6.1.0", arch: opts.arch ?? "x86_64" };
  return { ...(await registerTestAgent(cp, token, { hostname: opts.hostname, request: { agentVersion: version, os } })), version };
}

// One poll reporting `version`, written through at once (as the buffer does within seconds).
async function poll(cp: TestControlPlane, agent: TestAgent, version: string) {
  const res = await agent.client.pollCommands({ nonce: nonce(), status: { agentVersion: version } });
  await cp.app.lastSeen.flush();
  return res.commands.map((c) => fromBinary(CommandSchema, c.command));
}

async function report(agent: TestAgent, id: string, outcome: CommandOutcome, message: string) {
  await agent.client.reportResults({ results: [{ commandId: id, outcome, message }] });
}

describe("fleet upgrades, progress and the minimum supported version", () => {
  let cp: TestControlPlane;
  let admin: Client<typeof ReleaseService>;
  let operator: Client<typeof ReleaseService>;
  let viewer: Client<typeof ReleaseService>;
  let settings: Client<typeof SettingsService>;
  const web: (TestAgent & { version: string })[] = [];
  let arm: TestAgent;
  let current: TestAgent;

  const tick = async () => {
    await cp.app.lastSeen.flush();
    await cp.app.scheduler.tick();
  };
  const upgradeOf = async (agentId: string) => (await viewer.listAgentUpgrades({ agentId })).upgrades[0]!;

  beforeAll(async () => {
    cp = await startTestControlPlane(ENV);
    admin = createClient(ReleaseService, as(cp, cp.adminKey));
    settings = createClient(SettingsService, as(cp, cp.adminKey));
    const users = createClient(UserService, as(cp, cp.adminKey));
    await users.createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
    await users.createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER });
    const login = async (username: string) =>
      (await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD })).sessionToken;
    operator = createClient(ReleaseService, as(cp, await login("oscar")));
    viewer = createClient(ReleaseService, as(cp, await login("victor")));
    await admin.publishRelease(stream(randomBytes(4096), "0.2.0", "linux-x64"));

    const token = await newRegistrationToken(cp, 20);
    for (let i = 0; i < 5; i++) web.push(await enrol(cp, token, { hostname: `web-${i}` }));
    arm = await enrol(cp, token, { hostname: "pi", arch: "aarch64" });
    current = await enrol(cp, token, { hostname: "fresh", version: "0.2.0" });
    for (const a of [...web, arm]) await cp.admin.fleet.setAgentLabels({ agentId: a.agentId, group: "web", tags: [] });
    await cp.admin.fleet.setAgentLabels({ agentId: current.agentId, group: "web", tags: ["fresh"] });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  it("chooses a percentage by a stable hash: rounded up, the same agents every time, a smaller share inside a bigger one", () => {
    const agents = Array.from({ length: 40 }, () => ({ id: crypto.randomUUID() }));
    const ten = choosePercent(agents, 10);
    const fifty = choosePercent(agents, 50);
    expect(ten).toHaveLength(4);
    expect(choosePercent(agents.slice(0, 3), 10)).toHaveLength(1);
    expect(fifty).toHaveLength(20);
    expect(choosePercent([...agents].reverse(), 50)).toEqual(fifty);
    expect(fifty).toEqual(expect.arrayContaining(ten));
    expect(choosePercent(agents, 0)).toHaveLength(40);
  });

  it("refuses non-admins and bad requests, and changes nothing then", async () => {
    const byOperator = await failure(operator.startFleetUpgrade({ selection: { case: "all", value: true } }));
    expect(byOperator.code).toBe(Code.PermissionDenied);
    expect((await failure(admin.startFleetUpgrade({}))).rawMessage).toBe("a selection is required: all, group or tag");
    expect((await failure(admin.startFleetUpgrade({ selection: { case: "group", value: "Web Servers" } }))).code).toBe(Code.InvalidArgument);
    expect((await failure(admin.startFleetUpgrade({ selection: { case: "all", value: true }, percent: 101 }))).rawMessage).toBe("percent must be from 1 to 100 (0 means 100)");
    expect((await failure(admin.startFleetUpgrade({ selection: { case: "all", value: true }, version: "latest" }))).code).toBe(Code.InvalidArgument);
    expect((await viewer.listAgentUpgrades({})).upgrades).toHaveLength(0);
    expect((await cp.admin.commands.listCommands({})).commands).toHaveLength(0);
  });

  it("upgrades a percentage of a group, reports which, and lists skipped agents with why", async () => {
    // 50% of the 7 agents of group web: 4, the same 4 a second call would choose.
    const half = await admin.startFleetUpgrade({ selection: { case: "group", value: "web" }, percent: 50 });
    expect(half).toMatchObject({ selectedCount: 7, chosenCount: 4 });
    const chosen = [...half.upgrades.map((u) => u.agentId), ...half.skipped.map((s) => s.agentId)];
    expect(new Set(chosen).size).toBe(4);
    for (const u of half.upgrades) expect(u).toMatchObject({ fromVersion: "0.1.0", toVersion: "0.2.0", platform: "linux-x64", state: AgentUpgradeState.QUEUED, rolloutId: half.rolloutId, createdBy: "admin.key" });

    // The whole group: the 4 already chosen are in progress (or skipped as before), the rest queued.
    const all = await admin.startFleetUpgrade({ selection: { case: "group", value: "web" } });
    expect(all).toMatchObject({ selectedCount: 7, chosenCount: 7 });
    const reasons = Object.fromEntries(all.skipped.map((s) => [s.hostname, s.reason]));
    expect(reasons["pi"]).toBe('no release is published for linux-arm64 (this agent\'s platform) or "any"');
    expect(reasons["fresh"]).toBe("already runs 0.2.0");
    for (const u of half.upgrades) expect(reasons[u.hostname]).toBe("an upgrade to 0.2.0 is in progress");
    const queued = [...half.upgrades, ...all.upgrades].map((u) => u.hostname).sort();
    expect(queued).toEqual(web.map((_, i) => `web-${i}`));
    // One command per upgrade, update_agent for 0.2.0, and one audit entry per fleet upgrade.
    const commands = (await cp.admin.commands.listCommands({})).commands;
    expect(commands).toHaveLength(5);
    const audit = await cp.app.db.prisma.auditEntry.findMany({ where: { action: "redflag.v1.ReleaseService/StartFleetUpgrade" } });
    expect(audit.map((a) => a.target)).toEqual(["group:web", "group:web"]);

    // Paged progress, filtered by fleet upgrade: the first one queued at least 2 (4 chosen, at
    // most pi and fresh skipped); how many the second queued depends on which 4 the hash chose.
    expect(half.upgrades.length).toBeGreaterThanOrEqual(2);
    const page = await viewer.listAgentUpgrades({ rolloutId: half.rolloutId, pageSize: 1 });
    expect(page.upgrades).toHaveLength(1);
    expect(page.nextPageToken).not.toBe("");
    const rest = await viewer.listAgentUpgrades({ rolloutId: half.rolloutId, pageSize: 10, pageToken: page.nextPageToken });
    expect(rest.upgrades).toHaveLength(half.upgrades.length - 1);
    expect([...page.upgrades, ...rest.upgrades].every((u) => u.rolloutId === half.rolloutId)).toBe(true);
    expect((await viewer.listAgentUpgrades({ rolloutId: all.rolloutId, pageSize: 10 })).upgrades).toHaveLength(all.upgrades.length);
  });

  it("succeeds only when the agent reports the new version", async () => {
    const agent = web[0]!;
    const [cmd] = await poll(cp, agent, "0.1.0");
    expect(cmd!.action.case).toBe("updateAgent");
    await tick();
    expect(await upgradeOf(agent.agentId)).toMatchObject({ state: AgentUpgradeState.INSTALLING, message: "the agent received the upgrade to 0.2.0" });
    await report(agent, cmd!.id, CommandOutcome.SUCCEEDED, "installed version 0.2.0");
    await tick();
    // The command succeeded; the upgrade has not yet.
    expect(await upgradeOf(agent.agentId)).toMatchObject({ state: AgentUpgradeState.INSTALLING, message: "installed 0.2.0; waiting for the agent to restart and report it" });
    await poll(cp, agent, "0.2.0");
    await tick();
    const done = await upgradeOf(agent.agentId);
    expect(done).toMatchObject({ state: AgentUpgradeState.SUCCEEDED, message: "the agent reports 0.2.0" });
    expect(done.finishTime).toBeDefined();
    expect((await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent?.agentVersion).toBe("0.2.0");
  });

  it("is rolled back when the agent comes back reporting the old version after installing", async () => {
    const agent = web[1]!;
    const [cmd] = await poll(cp, agent, "0.1.0");
    await report(agent, cmd!.id, CommandOutcome.SUCCEEDED, "installed version 0.2.0");
    await tick();
    await poll(cp, agent, "0.1.0");
    await tick();
    expect(await upgradeOf(agent.agentId)).toMatchObject({
      state: AgentUpgradeState.ROLLED_BACK,
      message: "the agent installed 0.2.0 but came back reporting 0.1.0: the upgrade was rolled back",
    });
  });

  it("fails when update_agent fails, and when the new version is not reported in time", async () => {
    const refused = web[2]!;
    const [cmd] = await poll(cp, refused, "0.1.0");
    await report(refused, cmd!.id, CommandOutcome.FAILED, "the downloaded artifact does not match the signed manifest");
    await tick();
    expect(await upgradeOf(refused.agentId)).toMatchObject({
      state: AgentUpgradeState.FAILED,
      message: "update_agent failed: the downloaded artifact does not match the signed manifest",
    });

    const silent = web[3]!;
    const [silentCmd] = await poll(cp, silent, "0.1.0");
    await tick();
    expect(await upgradeOf(silent.agentId)).toMatchObject({ state: AgentUpgradeState.INSTALLING });
    // Delivered 16 minutes ago (the default timeout is 15): nothing came back since.
    await cp.app.db.prisma.command.update({ where: { id: silentCmd!.id }, data: { sentAt: new Date(Date.now() - 16 * 60_000) } });
    await tick();
    expect(await upgradeOf(silent.agentId)).toMatchObject({
      state: AgentUpgradeState.FAILED,
      message: "the agent did not report 0.2.0 within 15m of receiving the upgrade (it reports 0.1.0)",
    });
    expect((await viewer.listAgentUpgrades({ state: AgentUpgradeState.FAILED })).upgrades.map((u) => u.hostname).sort()).toEqual(["web-2", "web-3"]);
  });

  it("below the minimum supported version an agent may be upgraded, and nothing else", async () => {
    const byOperator = createClient(SettingsService, as(cp, (await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username: "oscar", password: PASSWORD })).sessionToken));
    expect((await failure(byOperator.updateSettings({ values: { minimum_agent_version: "0.2.0" } }))).code).toBe(Code.PermissionDenied);
    await settings.updateSettings({ values: { minimum_agent_version: "0.2.0" } });
    const changes = await settings.listSettingChanges({ key: "minimum_agent_version" });
    expect(changes.changes[0]).toMatchObject({ after: "0.2.0", changedBy: "admin.key" });

    const old = web[4]!;
    const scan = await failure(cp.admin.commands.createCommand({ agentId: old.agentId, action: { case: "scanUpdates", value: {} } }));
    expect(scan.code).toBe(Code.FailedPrecondition);
    expect(scan.rawMessage).toBe(`agent web-4 runs 0.1.0, below the minimum supported 0.2.0: upgrade it first (\`redflag agents upgrade ${old.agentId}\`)`);
    // The fleet's shortcuts go through the same queue.
    expect((await failure(cp.admin.fleet.triggerScan({ agentId: old.agentId }))).code).toBe(Code.FailedPrecondition);
    const before = (await cp.admin.commands.listCommands({ agentId: old.agentId })).commands.length;
    // An agent on 0.2.0 gets its scan; listed agents say which need an upgrade.
    await cp.admin.commands.createCommand({ agentId: web[0]!.agentId, action: { case: "scanUpdates", value: {} } });
    const agents = (await cp.admin.fleet.listAgents({ pageSize: 100 })).agents;
    expect(agents.filter((a) => a.upgradeRequired).map((a) => a.hostname).sort()).toEqual(["pi", "web-1", "web-2", "web-3", "web-4"]);
    expect((await cp.admin.commands.listCommands({ agentId: old.agentId })).commands).toHaveLength(before);
    // The upgrade itself is let through; while its earlier one is still queued, the same upgrade
    // asked again is that one (merged: one pending upgrade per agent, followed once).
    const upgradeAgain = () => cp.admin.commands.createCommand({ agentId: old.agentId, action: { case: "updateAgent", value: { version: "0.2.0" } } });
    const pending = (await cp.admin.commands.listCommands({ agentId: old.agentId, state: CommandState.PENDING })).commands.filter((c) => c.type === CommandType.UPDATE_AGENT);
    expect(pending).toHaveLength(1);
    const followed = (await viewer.listAgentUpgrades({ agentId: old.agentId })).upgrades.length;
    const second = await upgradeAgain();
    expect(second.merged).toBe(true);
    expect(second.command?.id).toBe(pending[0]!.id);
    expect((await cp.admin.commands.listCommands({ agentId: old.agentId, state: CommandState.PENDING })).commands.filter((c) => c.type === CommandType.UPDATE_AGENT)).toHaveLength(1);
    expect((await viewer.listAgentUpgrades({ agentId: old.agentId })).upgrades).toHaveLength(followed);
    await cp.admin.commands.cancelCommand({ id: pending[0]!.id });
    const upgrade = await upgradeAgain();
    expect(upgrade.command?.state).toBe(CommandState.PENDING);
    await settings.updateSettings({ values: { minimum_agent_version: "" } });
  });
});

describe("automatic upgrade", () => {
  let cp: TestControlPlane;
  let settings: Client<typeof SettingsService>;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    cp = await startTestControlPlane(ENV);
    settings = createClient(SettingsService, as(cp, cp.adminKey));
    await createClient(ReleaseService, as(cp, cp.adminKey)).publishRelease(stream(randomBytes(1024), "0.2.0", "linux-x64"));
    const token = await newRegistrationToken(cp, 10);
    for (let i = 0; i < 5; i++) {
      const agent = await enrol(cp, token, { hostname: `node-${i}` });
      await poll(cp, agent, "0.1.0");
      agents.push(agent);
    }
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  const open = async () => (await cp.app.db.prisma.agentUpgrade.findMany({ where: { state: { in: ["queued", "installing"] } }, include: { agent: true } })).map((u) => u.agent.hostname).sort();
  const byHost = (host: string) => agents[Number(host.split("-")[1])]!;
  const tick = async () => {
    await cp.app.lastSeen.flush();
    await cp.app.scheduler.tick();
  };

  it("is off by default, never has more than the batch open, and stops when failures exceed the limit", async () => {
    await tick();
    expect(await open()).toEqual([]);

    await settings.updateSettings({ values: { auto_upgrade_batch: "2", auto_upgrade_max_failures: "1" } });
    await tick();
    const first = await open();
    expect(first).toHaveLength(2);
    await tick();
    expect(await open()).toEqual(first);
    const audit = await cp.app.db.prisma.auditEntry.findMany({ where: { action: "scheduler/AutoUpgrade" } });
    expect(audit).toHaveLength(2);

    // One succeeds: another agent takes its place.
    const [okHost, slowHost] = first as [string, string];
    const ok = byHost(okHost);
    const [okCmd] = await poll(cp, ok, "0.1.0");
    await report(ok, okCmd!.id, CommandOutcome.SUCCEEDED, "installed version 0.2.0");
    await poll(cp, ok, "0.2.0");
    await tick();
    const second = await open();
    expect(second).toHaveLength(2);
    expect(second).toContain(slowHost);
    const nextHost = second.find((h) => h !== slowHost)!;
    expect(first).not.toContain(nextHost);

    // Two fail, one more than the limit: the automatic upgrade stops; nothing else is queued.
    for (const host of second) {
      const agent = byHost(host);
      const [cmd] = await poll(cp, agent, "0.1.0");
      await report(agent, cmd!.id, CommandOutcome.FAILED, "download failed");
    }
    await tick();
    await tick();
    expect(await open()).toEqual([]);
    const states = await cp.app.db.prisma.agentUpgrade.findMany({ select: { state: true, agent: { select: { hostname: true } } } });
    expect(states.map((s) => `${s.agent.hostname} ${s.state}`).sort()).toEqual([`${okHost} succeeded`, `${slowHost} failed`, `${nextHost} failed`].sort());
  });
});

describe("nextUpgradeState", () => {
  const base: UpgradeFacts = {
    state: "installing",
    fromVersion: "0.1.0",
    toVersion: "0.2.0",
    installedAt: null,
    agent: { agentVersion: "0.1.0", lastSeenAt: new Date("2026-12-05T10:00:00Z") },
    command: { state: "sent", sentAt: new Date("2026-12-05T10:00:00Z"), result: null },
  };
  const at = (iso: string) => new Date(iso);

  it("waits while the command is pending, however long, and fails once the delivered upgrade is not reported in time", () => {
    expect(nextUpgradeState({ ...base, state: "queued", command: { state: "pending", sentAt: null, result: null } }, at("2026-12-06T10:00:00Z"), 900)).toBeUndefined();
    expect(nextUpgradeState(base, at("2026-12-05T10:15:00Z"), 900)).toBeUndefined();
    expect(nextUpgradeState(base, at("2026-12-05T10:15:01Z"), 900)).toMatchObject({ state: "failed" });
  });

  it("counts a reinstall of the running version only once the agent came back after the install", () => {
    const same = { ...base, fromVersion: "0.2.0", agent: { agentVersion: "0.2.0", lastSeenAt: at("2026-12-05T10:00:00Z") } };
    expect(nextUpgradeState(same, at("2026-12-05T10:01:00Z"), 900)).toBeUndefined();
    const installed = { ...same, installedAt: at("2026-12-05T10:02:00Z"), command: { ...base.command!, state: "succeeded" } };
    expect(nextUpgradeState({ ...installed, agent: { agentVersion: "0.2.0", lastSeenAt: at("2026-12-05T10:03:00Z") } }, at("2026-12-05T10:04:00Z"), 900)).toMatchObject({ state: "succeeded" });
  });

  it("waits while the new release is on trial, and names the agent's reason when it was rolled back", () => {
    const installed = { ...base, installedAt: at("2026-12-05T10:02:00Z"), command: { ...base.command!, state: "succeeded" } };
    const polled = (status: Parameters<typeof create<typeof AgentStatusSchema>>[1]) => ({
      ...installed,
      agent: { agentVersion: "0.1.0", lastSeenAt: at("2026-12-05T10:03:00Z"), status: toBinary(AgentStatusSchema, create(AgentStatusSchema, status)) },
    });
    // The trial's own polls (it reports 0.2.0, which the control plane does not take as the
    // agent's version yet) move nothing.
    expect(nextUpgradeState(polled({ agentVersion: "0.2.0", upgradeTrial: true }), at("2026-12-05T10:04:00Z"), 900)).toBeUndefined();
    // The release before it came back: rolled back, with the reason the agent gave.
    expect(
      nextUpgradeState(polled({ agentVersion: "0.1.0", upgradeFailure: { version: "0.2.0", reason: "it exited 3 times before completing a poll cycle" } }), at("2026-12-05T10:04:00Z"), 900),
    ).toMatchObject({
      state: "rolled_back",
      message: "the agent installed 0.2.0 but came back reporting 0.1.0: the upgrade was rolled back: it exited 3 times before completing a poll cycle",
    });
  });

  it("fails when the command was removed", () => {
    expect(nextUpgradeState({ ...base, command: null }, at("2026-12-05T10:01:00Z"), 900)).toMatchObject({ state: "failed", message: "its update_agent command was removed before the agent reported 0.2.0" });
  });
});

describe("nextAutomatic", () => {
  const seen = new Date("2026-12-05T10:00:00Z");
  const behind = ["a", "b", "c", "d", "e"].map((id) => ({ agent: { id, lastSeenAt: id === "c" ? null : id === "d" ? new Date("2026-12-05T09:00:00Z") : seen }, version: "0.2.0" }));

  it("takes at most the free slots, in order, skipping open, tried, never seen and long unseen agents", () => {
    const pick = (opts: Partial<Parameters<typeof nextAutomatic>[1]>) =>
      nextAutomatic(behind, { open: new Map(), tried: new Set(), seenAfter: new Date("2026-12-05T09:45:00Z"), free: 10, ...opts }).map((b) => b.agent.id);
    expect(pick({})).toEqual(["a", "b", "e"]);
    expect(pick({ free: 2 })).toEqual(["a", "b"]);
    expect(pick({ free: 0 })).toEqual([]);
    expect(pick({ open: new Map([["a", "0.2.0"]]), tried: new Set(["b\u00000.2.0"]) })).toEqual(["e"]);
    // Tried on another version: that does not count for this one.
    expect(pick({ tried: new Set(["b\u00000.1.9"]), free: 2 })).toEqual(["a", "b"]);
  });
});

describe("agent upgrades and blackout windows", () => {
  let cp: TestControlPlane;
  let releases: Client<typeof ReleaseService>;
  let settings: Client<typeof SettingsService>;
  let frozen: TestAgent;
  let free: TestAgent;

  beforeAll(async () => {
    cp = await startTestControlPlane(ENV);
    releases = createClient(ReleaseService, as(cp, cp.adminKey));
    settings = createClient(SettingsService, as(cp, cp.adminKey));
    await releases.publishRelease(stream(randomBytes(1024), "0.2.0", "linux-x64"));
    const token = await newRegistrationToken(cp, 5);
    frozen = await enrol(cp, token, { hostname: "frozen" });
    free = await enrol(cp, token, { hostname: "free" });
    for (const a of [frozen, free]) await poll(cp, a, "0.1.0");
    // Open since yesterday, every day for a day: open now, whatever the time.
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    await createClient(MaintenanceService, as(cp, cp.adminKey)).createWindow({
      window: {
        name: "freeze",
        kind: WindowKind.BLACKOUT,
        rrule: "FREQ=DAILY;COUNT=3",
        dtstart: `${yesterday}T00:00`,
        timeZone: "UTC",
        duration: { seconds: 86_400n },
        targets: { agentIds: [frozen.agentId] },
        enabled: true,
      },
    });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  const blackout = /^in blackout window "freeze" until \S+Z \(.* UTC\)$/;

  it("refuses an upgrade of an agent in a blackout, and a fleet upgrade passes it by with the reason", async () => {
    const asked = await failure(cp.admin.commands.createCommand({ agentId: frozen.agentId, action: { case: "updateAgent", value: { version: "0.2.0" } } }));
    expect([Code[asked.code], asked.rawMessage]).toEqual(["FailedPrecondition", expect.stringMatching(/^agent frozen is in blackout window "freeze" until .*: no install, reboot or agent upgrade can be queued for it before then$/)]);

    const fleet = await releases.startFleetUpgrade({ selection: { case: "all", value: true } });
    expect(fleet.upgrades.map((u) => u.hostname)).toEqual(["free"]);
    expect(fleet.skipped.map((s) => [s.hostname, s.reason])).toEqual([["frozen", expect.stringMatching(blackout)]]);
  });

  it("the automatic upgrade waits for the blackout to end", async () => {
    // The fleet upgrade above is still open for "free": the automatic one has nothing else to take.
    await settings.updateSettings({ values: { auto_upgrade_batch: "5" } });
    await cp.app.lastSeen.flush();
    await cp.app.scheduler.tick();
    const upgrades = await cp.app.db.prisma.agentUpgrade.findMany({ include: { agent: true } });
    expect(upgrades.map((u) => `${u.agent.hostname} ${u.automatic ? "automatic" : "fleet"}`)).toEqual(["free fleet"]);
    // Once the window is gone, the frozen agent is taken.
    const windows = createClient(MaintenanceService, as(cp, cp.adminKey));
    for (const w of (await windows.listWindows({})).windows) await windows.deleteWindow({ id: w.id });
    await cp.app.scheduler.tick();
    const after = await cp.app.db.prisma.agentUpgrade.findMany({ where: { automatic: true }, include: { agent: true } });
    expect(after.map((u) => u.agent.hostname)).toEqual(["frozen"]);
  });
});

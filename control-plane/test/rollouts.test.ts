import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandOutcome, CommandSchema, PackageResultState } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { RolloutHostState, RolloutRingState, RolloutService, RolloutSpecSchema, RolloutState } from "@redflag/gen/rollout_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { recordScanReports } from "../src/store/commands.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Staged rollouts end to end (issue 16): RolloutService over Connect with a real control plane,
// its scheduler ticked by the test, and agents simulated through the agent API (they poll the
// signed installs and report what happened), across a restart of the control plane.

const PASSWORD = "a long enough passphrase 42";
// The scheduler runs only when the test ticks it.
const ENV = { REDFLAG_SWEEP_INTERVAL_MS: "3600000" };

let cp: TestControlPlane;
let operator: Client<typeof RolloutService>;
let viewer: Client<typeof RolloutService>;
const agents = new Map<string, TestAgent>();

const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
type SpecInit = Exclude<MessageInitShape<typeof RolloutSpecSchema>, { $typeName: string }>;
const spec = (over: SpecInit = {}) =>
  create(RolloutSpecSchema, {
    name: "openssl june",
    targets: { groups: ["web"] },
    updates: { case: "allApproved", value: true },
    rings: [
      { name: "canary", size: { case: "agents", value: { agentIds: [agents.get("canary")!.agentId] } } },
      { name: "half", size: { case: "percent", value: 50 } },
      { name: "rest", size: { case: "rest", value: true } },
    ],
    ...over,
  });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

async function signIn(username: string, role: Role) {
  await createClient(UserService, as(cp.adminKey)).createUser({ username, password: PASSWORD, role });
  const login = await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD });
  return login.sessionToken;
}

const scan = (agent: TestAgent, names: string[]) =>
  recordScanReports(
    cp.app.db.prisma,
    cp.app.db.statements,
    agent.agentId,
    [
      {
        id: crypto.randomUUID(),
        scanTime: new Date(),
        scan: {
          updates: names.map((name) => ({ source: "apt", name, architecture: "amd64", currentVersion: "1.0", availableVersion: "1.1", repository: "bookworm-security", severity: "important", security: true, sizeBytes: 10n, rebootRequired: false })),
          parts: 0,
          sources: ["apt"],
        },
      },
    ],
    { rows: 10_000 },
  );

// One scheduler round of this test's own (after the one in progress, if any: the first after a
// start, or a restart while leadership is still being taken).
const tick = async () => {
  await vi.waitFor(() => expect(cp.app.isLeader()).toBe(true));
  await cp.app.lastSeen.flush();
  await cp.app.scheduler.tick();
  await cp.app.scheduler.tick();
};

// The agent polls and runs every install it got: each package installed, or failed when `fail`.
async function run(hostname: string, fail = false): Promise<string[]> {
  const agent = agents.get(hostname)!;
  const polled = await agent.client.pollCommands({ nonce: nonce() });
  const ran: string[] = [];
  for (const signed of polled.commands) {
    const command = fromBinary(CommandSchema, signed.command);
    if (command.action.case !== "installUpdates") continue;
    const packages = command.action.value.packages.map((p) => ({
      source: p.source,
      name: p.name,
      architecture: p.architecture,
      fromVersion: "1.0",
      toVersion: p.version,
      state: fail ? PackageResultState.FAILED : PackageResultState.INSTALLED,
      reason: fail ? "dpkg: error processing package" : "",
    }));
    await agent.client.reportResults({
      results: [{ commandId: command.id, sequence: command.sequence, outcome: CommandOutcome.SUCCEEDED, message: "", detail: { case: "installUpdates", value: { packages } } }],
    });
    ran.push(...packages.map((p) => `${p.name}=${p.toVersion}`));
  }
  await cp.app.lastSeen.flush();
  return ran;
}

beforeAll(async () => {
  cp = await startTestControlPlane(ENV);
  const token = await newRegistrationToken(cp, 10);
  for (const hostname of ["canary", "web-a", "web-b", "web-c", "web-d"]) {
    const agent = await registerTestAgent(cp, token, { hostname });
    await cp.admin.fleet.setAgentLabels({ agentId: agent.agentId, group: "web", tags: [] });
    agents.set(hostname, agent);
    await scan(agent, ["openssl"]);
  }
  await createClient(UpdateService, as(cp.adminKey)).approveUpdates({ selection: { packageName: "openssl" } });
  operator = createClient(RolloutService, as(await signIn("oscar", Role.OPERATOR)));
  viewer = createClient(RolloutService, as(await signIn("vera", Role.VIEWER)));
});
afterAll(async () => {
  await cp?.close();
});

describe("RolloutService", () => {
  it("walks canary, 50 % and rest: a failure halts it, the operator resumes past it, and it finishes after a restart", async () => {
    expect(Code[(await failure(viewer.createRollout({ spec: spec() }))).code]).toBe("PermissionDenied");
    const preview = await viewer.previewRollout({ spec: spec() });
    expect(preview.rings.map((r) => [r.name, r.hosts, r.updates])).toEqual([
      ["canary", 1, 1],
      ["half", 2, 2],
      ["rest", 2, 2],
    ]);
    expect(preview.hostCount).toBe(5);

    const created = (await operator.createRollout({ spec: spec() })).rollout!;
    expect(created).toMatchObject({ state: RolloutState.RUNNING, currentRing: 0, createdBy: "oscar", hostCount: 5 });
    expect(created.rings.map((r) => [r.name, r.state, r.hosts])).toEqual([
      ["canary", RolloutRingState.INSTALLING, 1],
      ["half", RolloutRingState.WAITING, 2],
      ["rest", RolloutRingState.WAITING, 2],
    ]);
    // The preview placed the agents as the creation did.
    const placed = (await viewer.getRollout({ id: created.id })).hosts;
    expect(placed.map((h) => [h.hostname, h.ring]).sort()).toEqual(preview.hosts.map((h) => [h.hostname, h.ring]).sort());
    const inRing = (ring: number) => placed.filter((h) => h.ring === ring).map((h) => h.hostname);

    // The canary installs the approved version; nobody else gets anything.
    await tick();
    expect(await run("canary")).toEqual(["openssl=1.1"]);
    for (const h of [...inRing(1), ...inRing(2)]) expect(await run(h)).toEqual([]);
    await tick();
    let now = (await viewer.getRollout({ id: created.id })).rollout!;
    expect(now).toMatchObject({ currentRing: 1 });
    expect(now.rings[0]).toMatchObject({ state: RolloutRingState.PASSED, succeeded: 1, failed: 0 });

    // "half": one host's package fails, so 100 % can no longer be met: halted.
    await tick();
    const [bad, good] = inRing(1);
    expect(await run(bad!, true)).toEqual(["openssl=1.1"]);
    await tick();
    now = (await viewer.getRollout({ id: created.id })).rollout!;
    expect(now).toMatchObject({ state: RolloutState.HALTED, currentRing: 1 });
    expect(now.haltReason).toBe(`ring "half" cannot reach its success threshold of 100%: 1 of 2 hosts failed (${bad}: openssl failed)`);
    expect(now.rings[1]).toMatchObject({ state: RolloutRingState.HALTED, failed: 1, installing: 1 });
    // Halted: the rest gets nothing; the other queued host is still followed.
    expect(await run(good!)).toEqual(["openssl=1.1"]);
    await tick();
    for (const h of inRing(2)) expect(await run(h)).toEqual([]);
    expect((await viewer.getRollout({ id: created.id, ring: 1 })).hosts.map((h) => [h.hostname, h.state])).toEqual(
      [
        [bad, RolloutHostState.FAILED],
        [good, RolloutHostState.SUCCEEDED],
      ].sort(),
    );
    const paused = await failure(operator.pauseRollout({ id: created.id }));
    expect(Code[paused.code]).toBe("FailedPrecondition");
    expect(paused.rawMessage).toBe(`rollout "openssl june" is halted; nothing to pause (resume it to override the halt and go on past ring "half", or abort it)`);
    expect(Code[(await failure(viewer.resumeRollout({ id: created.id }))).code]).toBe("PermissionDenied");

    // The operator's override.
    const resumed = (await operator.resumeRollout({ id: created.id })).rollout!;
    expect(resumed).toMatchObject({ state: RolloutState.RUNNING, currentRing: 2, haltReason: "" });
    expect(resumed.rings.map((r) => r.state)).toEqual([RolloutRingState.PASSED, RolloutRingState.OVERRIDDEN, RolloutRingState.INSTALLING]);

    // A restart: the new control plane continues from the database.
    cp = await cp.restart();
    await tick();
    for (const h of inRing(2)) expect(await run(h)).toEqual(["openssl=1.1"]);
    await tick();
    const done = (await viewer.getRollout({ id: created.id, hostPageSize: 2 }));
    expect(done.rollout).toMatchObject({ state: RolloutState.FINISHED, currentRing: 3 });
    expect(done.rollout!.endTime).toBeDefined();
    expect(done.rollout!.rings.map((r) => [r.succeeded, r.failed])).toEqual([
      [1, 0],
      [1, 1],
      [2, 0],
    ]);
    // Hosts come in pages.
    expect(done.hosts).toHaveLength(2);
    const second = await viewer.getRollout({ id: created.id, hostPageSize: 2, hostPageToken: done.nextHostPageToken });
    const third = await viewer.getRollout({ id: created.id, hostPageSize: 2, hostPageToken: second.nextHostPageToken });
    expect([...done.hosts, ...second.hosts, ...third.hosts].map((h) => h.hostname).sort()).toEqual(["canary", "web-a", "web-b", "web-c", "web-d"]);
    expect(third.nextHostPageToken).toBe("");

    // Every step is in the audit log: the people's and the rollout's own.
    const audit = await createClient(AuditService, as(cp.adminKey)).listAuditEntries({ pageSize: 200 });
    const actions = audit.entries.filter((e) => e.target === `rollout:${created.id}` || e.actorName === "openssl june").map((e) => e.action);
    expect(actions.filter((a) => a === "scheduler/RolloutInstall")).toHaveLength(5);
    for (const a of ["redflag.v1.RolloutService/CreateRollout", "redflag.v1.RolloutService/ResumeRollout", "scheduler/RolloutPromote", "scheduler/RolloutHalt", "scheduler/RolloutFinish"]) {
      expect(actions).toContain(a);
    }
    expect((await viewer.listRollouts({ state: RolloutState.FINISHED })).rollouts.map((r) => r.spec!.name)).toEqual(["openssl june"]);
  });

  it("aborts: installs not delivered yet are cancelled, waiting hosts skipped, nothing more queued", async () => {
    for (const a of agents.values()) await scan(a, ["curl"]);
    await createClient(UpdateService, as(cp.adminKey)).approveUpdates({ selection: { packageName: "curl" } });
    const created = (await operator.createRollout({ spec: spec({ name: "curl", rings: [{ name: "canary", size: { case: "agents", value: { agentIds: [agents.get("canary")!.agentId] } } }, { name: "rest", size: { case: "rest", value: true } }] }) })).rollout!;
    await tick();
    const queued = (await viewer.getRollout({ id: created.id })).hosts.find((h) => h.hostname === "canary")!;
    expect(queued.state).toBe(RolloutHostState.QUEUED);
    const aborted = (await operator.abortRollout({ id: created.id })).rollout!;
    expect(aborted.state).toBe(RolloutState.ABORTED);
    expect((await cp.admin.commands.getCommand({ id: queued.commandId })).command!.state).toBe(CommandState.CANCELLED);
    const hosts = (await viewer.getRollout({ id: created.id })).hosts;
    expect(hosts.map((h) => h.state)).toEqual(hosts.map(() => RolloutHostState.SKIPPED));
    expect(hosts.find((h) => h.hostname === "canary")!.message).toMatch(/^not installed: oscar aborted the rollout before the install was delivered/);
    await tick();
    for (const a of agents.keys()) expect(await run(a)).toEqual([]);
    const again = await failure(operator.abortRollout({ id: created.id }));
    expect([Code[again.code], again.rawMessage]).toEqual(["FailedPrecondition", 'rollout "curl" is aborted; nothing to abort']);
  });

  it("refuses bad definitions with the right code and a message that says what to fix, and saves nothing", async () => {
    const canary = agents.get("canary")!.agentId;
    const cases: [SpecInit, string, RegExp][] = [
      [{ name: "" }, "InvalidArgument", /spec.name is required/],
      [{ name: "x".repeat(65) }, "InvalidArgument", /spec.name is longer than 64 characters/],
      [{ targets: {} }, "InvalidArgument", /spec.targets names no agents/],
      [{ updates: { case: undefined } }, "InvalidArgument", /spec.updates is required/],
      [{ rings: [] }, "InvalidArgument", /spec.rings is empty/],
      [{ rings: Array.from({ length: 11 }, (_, i) => ({ name: `r${i}`, size: { case: "rest" as const, value: true } })) }, "InvalidArgument", /at most 10 are allowed/],
      [{ rings: [{ name: "half", size: { case: "percent", value: 50 } }] }, "InvalidArgument", /2 target agents would be left out \(.*\): the last ring \("half"\) must be "rest"/],
      [{ rings: [{ name: "all", size: { case: "percent", value: 0 } }] }, "InvalidArgument", /spec.rings\[0\].percent must be from 1 to 100/],
      [{ rings: [{ name: "all", size: { case: "rest", value: true } }, { name: "more", size: { case: "percent", value: 5 } }] }, "InvalidArgument", /spec.rings\[0\] is "rest" but is not the last ring/],
      [{ rings: [{ name: "a", size: { case: "rest", value: true }, successThresholdPercent: 101 }] }, "InvalidArgument", /success_threshold_percent must be from 1 to 100/],
      [{ rings: [{ name: "a", size: { case: "rest", value: true }, soak: { seconds: 8n * 86_400n } }] }, "InvalidArgument", /spec.rings\[0\].soak must be from 0 to 7 days/],
      [{ rings: [{ name: "a", size: { case: "agents", value: { agentIds: [canary, canary] } } }, { name: "b", size: { case: "rest", value: true } }] }, "InvalidArgument", /names agent .* twice/],
      [{ rings: [{ name: "a", size: { case: "percent", value: 50 } }, { name: "a", size: { case: "rest", value: true } }] }, "InvalidArgument", /"a" is used by an earlier ring/],
      [{ rings: [{ name: "a", size: { case: undefined } }] }, "InvalidArgument", /spec.rings\[0\] needs a size/],
      [{ targets: { agentIds: ["00000000-0000-4000-8000-000000000000"] } }, "NotFound", /agent 00000000-0000-4000-8000-000000000000 does not exist/],
      [{ updates: { case: "updateKeys", value: { keys: [{ agentId: canary, source: "apt", name: "--all", architecture: "amd64" }] } } }, "InvalidArgument", /update_keys\[0\] does not name an update/],
      [{ name: "openssl june" }, "AlreadyExists", /a rollout named "openssl june" already exists/],
    ];
    const before = (await viewer.listRollouts({})).rollouts.length;
    for (const [over, code, message] of cases) {
      const err = await failure(operator.createRollout({ spec: spec(over) }));
      expect(Code[err.code], message.source).toBe(code);
      expect(err.rawMessage).toMatch(message);
    }
    expect((await viewer.listRollouts({})).rollouts).toHaveLength(before);
    expect(Code[(await failure(viewer.getRollout({ id: "00000000-0000-4000-8000-000000000000" }))).code]).toBe("NotFound");
    expect(Code[(await failure(viewer.getRollout({ id: "x" }))).code]).toBe("InvalidArgument");
    // Lists come in pages, newest first; bounds are refused.
    const first = await viewer.listRollouts({ pageSize: 1 });
    const second = await viewer.listRollouts({ pageSize: 1, pageToken: first.nextPageToken });
    expect([...first.rollouts, ...second.rollouts].map((r) => r.spec!.name)).toEqual(["curl", "openssl june"]);
    expect(second.nextPageToken).toBe("");
    expect((await failure(viewer.listRollouts({ pageSize: 201 }))).rawMessage).toBe("page_size must be from 0 to 200");
    const id = first.rollouts[0]!.id;
    expect((await failure(viewer.getRollout({ id, ring: 2 }))).rawMessage).toBe("ring 2 does not exist; the rollout has rings 0 to 1");
    expect((await failure(viewer.getRollout({ id, hostPageSize: 1001 }))).rawMessage).toBe("host_page_size must be from 0 to 1000");
    expect(Code[(await failure(viewer.getRollout({ id, hostPageToken: "garbage!" }))).code]).toBe("InvalidArgument");
  });
});

import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandSchema } from "@redflag/gen/command_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { NotificationService } from "@redflag/gen/notification_service_pb";
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addChannel, addRule, runNotifications } from "../../src/domain/notifications.ts";
import { abortRollout, advanceRollouts, createRollout, pauseRollout, placeAgents, previewRollout, resumeRollout, type RolloutDeps } from "../../src/domain/rollouts.ts";
import { addWindow } from "../../src/domain/windows.ts";
import { prune } from "../../src/scheduler.ts";
import type { RingInput, RolloutInput } from "../../src/store/rollouts.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, insertUpdate, mediumDatabase } from "../support/medium.ts";
import { startHttpReceiver, type HttpReceiver } from "../support/receivers.ts";

const masterKey = randomBytes(32);
const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = new Date("2026-07-01T10:00:00.000Z");
const at = (ms: number) => new Date(T0.getTime() + ms);

const ring = (name: string, size: Pick<RingInput, "kind"> & Partial<RingInput>, more: Partial<RingInput> = {}): RingInput => ({
  name,
  agentIds: [],
  percent: 0,
  thresholdPercent: 100,
  soakSeconds: 0,
  ...size,
  ...more,
});
const spec = (name: string, rings: RingInput[], more: Partial<RolloutInput> = {}): RolloutInput => ({
  name,
  targets: { allAgents: false, groups: ["web"], tags: [], agentIds: [] },
  allApproved: true,
  updateKeys: [],
  rings,
  ...more,
});

async function refused(p: Promise<unknown>, code: Code, message: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  expect((err as ConnectError).code).toBe(code);
  expect((err as ConnectError).rawMessage).toMatch(message);
}

describe("placing agents in rings", () => {
  const agents = Array.from({ length: 10 }, (_, i) => ({ id: `00000000-0000-4000-8000-00000000000${i}`, hostname: `web-${i}` }));
  it("puts named agents first, then a rounded-up percentage of the rest in a fixed order, then the rest", () => {
    const input = { name: "june", rings: [ring("canary", { kind: "agents", agentIds: [agents[3]!.id] }), ring("wave", { kind: "percent", percent: 25 }), ring("rest", { kind: "rest" })] };
    const placed = placeAgents(input, agents);
    expect(placed.filter((h) => h.ring === 0).map((h) => h.hostname)).toEqual(["web-3"]);
    // 25 % of the 9 left, rounded up.
    expect(placed.filter((h) => h.ring === 1)).toHaveLength(3);
    expect(placed.filter((h) => h.ring === 2)).toHaveLength(6);
    // The same name places the same way (a preview is what the creation does); another name differently.
    expect(placeAgents(input, [...agents].reverse())).toEqual(placed);
    const others = ["may", "july", "august"].map((name) => placeAgents({ ...input, name }, agents).filter((h) => h.ring === 1).map((h) => h.hostname).join());
    expect(new Set([...others, placed.filter((h) => h.ring === 1).map((h) => h.hostname).join()]).size).toBeGreaterThan(1);
  });

  it("refuses left-out agents, empty rings, strangers and agents named twice, saying which", () => {
    expect(() => placeAgents({ name: "x", rings: [ring("a", { kind: "percent", percent: 50 })] }, agents)).toThrow(/5 target agents would be left out \(web-\d, .* and 0 more|5 target agents would be left out/);
    expect(() => placeAgents({ name: "x", rings: [ring("a", { kind: "percent", percent: 50 })] }, agents)).toThrow(/the last ring \("a"\) must be "rest"/);
    expect(() => placeAgents({ name: "x", rings: [ring("all", { kind: "percent", percent: 100 }), ring("rest", { kind: "rest" })] }, agents)).toThrow(/ring "rest" would have no agent/);
    expect(() => placeAgents({ name: "x", rings: [ring("c", { kind: "agents", agentIds: ["00000000-0000-4000-8000-0000000000ff"] }), ring("rest", { kind: "rest" })] }, agents)).toThrow(
      /not among the rollout's targets/,
    );
    const twice = { name: "x", rings: [ring("a", { kind: "agents", agentIds: [agents[0]!.id] }), ring("b", { kind: "agents", agentIds: [agents[0]!.id] }), ring("rest", { kind: "rest" })] };
    expect(() => placeAgents(twice, agents)).toThrow(/web-0 .* is named in ring "a" and in ring "b"/);
  });
});

let receiver: HttpReceiver;
beforeAll(async () => {
  receiver = await startHttpReceiver();
});
afterAll(async () => {
  await receiver.close();
});

describe.each(availableBackends)("rollouts on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);
  const deps = (): RolloutDeps => ({ db: m.db, wakeups: { notify() {} }, events: { publish() {} }, settings: { minimumAgentVersion: "", pollIntervalSeconds: 60 } });
  const audited = <T>(method = "CreateRollout") => auditAs<T>(method, RolloutService, "rollout");

  const reset = async () => {
    await m.db.rollout.deleteMany();
    await m.db.maintenanceWindow.deleteMany();
    await m.db.command.deleteMany();
    await m.db.agent.deleteMany();
    await m.db.notificationEvent.deleteMany();
  };
  // `n` agents in group "web", each seen at `seen` and with one approved update "openssl".
  async function fleet(n: number, seen = T0) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const a = await insertAgent(m.db, `web-${i}`);
      await m.db.agent.update({ where: { id: a.id }, data: { group: "web", lastSeenAt: seen } });
      await insertUpdate(m.db, a.id, "openssl", { status: "approved" });
      // Offered before the test's clock starts (an install reported later counts for it).
      await m.db.packageUpdate.updateMany({ where: { agentId: a.id }, data: { versionSeenAt: new Date(T0.getTime() - HOUR) } });
      out.push({ ...a, hostname: `web-${i}` });
    }
    return out;
  }
  const hosts = (rolloutId: string) => m.db.rolloutHost.findMany({ where: { rolloutId }, orderBy: { hostname: "asc" } });
  const hostOf = async (rolloutId: string, agentId: string) => (await m.db.rolloutHost.findUnique({ where: { rolloutId_agentId: { rolloutId, agentId } } }))!;
  const rollout = (id: string) => m.db.rollout.findUniqueOrThrow({ where: { id }, include: { rings: { orderBy: { index: "asc" } } } });
  // The agent ran its command: it ended so, and the agent was seen then.
  async function finish(commandId: string, state: "succeeded" | "failed", when: Date, failedPackage?: string) {
    const c = await m.db.command.update({ where: { id: commandId }, data: { state, sentAt: when, finishedAt: when } });
    await m.db.agent.update({ where: { id: c.agentId }, data: { lastSeenAt: when } });
    const kind = failedPackage ? "failed" : state === "succeeded" ? "installed" : undefined;
    if (kind) {
      await m.db.updateEvent.create({ data: { agentId: c.agentId, time: when, kind, source: "apt", name: failedPackage ?? "openssl", architecture: "amd64", version: "1.1", commandId } });
    }
  }

  it("walks canary, 50 % and rest with soaks, halts on a failure and notifies, is resumed past it, and a fresh scheduler finishes it", async () => {
    await reset();
    const agents = await fleet(5);
    const channel = await addChannel(
      m.db,
      masterKey,
      { name: `hook-${backend}`, kind: "webhook", enabled: true, secrets: { url: `${receiver.url}/${backend}/rollouts`, token: "", signingSecret: "a-webhook-signing-secret", smtpPassword: "" }, email: undefined, ntfyPriority: 3 },
      auditAs("CreateChannel", NotificationService, "channel"),
    );
    await addRule(
      m.db,
      { name: "rollouts", enabled: true, events: ["rollout_halted", "rollout_finished"], minSeverity: "info", groups: [], channelIds: [channel.row.id], quiet: undefined, groupWindowSeconds: 60 },
      auditAs("CreateRule", NotificationService, "rule"),
    );
    const input = spec("june", [
      ring("canary", { kind: "agents", agentIds: [agents[0]!.id] }, { soakSeconds: 3600 }),
      ring("half", { kind: "percent", percent: 50 }),
      ring("rest", { kind: "rest" }),
    ]);
    const preview = await previewRollout(m.db, input);
    expect(preview.rings).toEqual([
      { name: "canary", hosts: 1, updates: 1 },
      { name: "half", hosts: 2, updates: 2 },
      { name: "rest", hosts: 2, updates: 2 },
    ]);
    const created = await createRollout(m.db, input, "oscar", T0, audited());
    // The preview placed the agents exactly as the creation did.
    expect((await hosts(created.id)).map((h) => [h.hostname, h.ring]).sort()).toEqual(preview.hosts.map((h) => [h.hostname, h.ring]).sort());
    expect(await m.db.auditEntry.count({ where: { target: "rollout" } })).toBe(1);

    // Tick 1: the canary is queued, pinned to the approved version, and nothing else.
    expect(await advanceRollouts(deps(), T0)).toMatchObject({ queued: 1 });
    const canary = await hostOf(created.id, agents[0]!.id);
    expect(canary).toMatchObject({ state: "queued", commandMerged: false });
    const command = await m.db.command.findUniqueOrThrow({ where: { id: canary.commandId! } });
    expect(command).toMatchObject({ type: "install_updates", createdByKind: "system", createdBy: "rollout june" });
    const action = fromBinary(CommandSchema, command.action).action;
    expect(action.case === "installUpdates" && action.value.packages.map((p) => `${p.name}=${p.version}`)).toEqual(["openssl=1.1"]);
    expect(await m.db.packageUpdate.findFirst({ where: { agentId: agents[0]!.id } })).toMatchObject({ commandId: command.id });
    // Again: idempotent, nothing more queued.
    expect(await advanceRollouts(deps(), at(MIN))).toMatchObject({ queued: 0 });
    expect(await m.db.command.count()).toBe(1);

    // The canary succeeds: its ring soaks for an hour.
    await finish(command.id, "succeeded", at(2 * MIN));
    await advanceRollouts(deps(), at(3 * MIN));
    expect((await rollout(created.id)).rings[0]).toMatchObject({ state: "soaking", soakUntil: at(63 * MIN) });
    await m.db.agent.updateMany({ data: { lastSeenAt: at(62 * MIN) } });
    expect(await advanceRollouts(deps(), at(62 * MIN))).toMatchObject({ promoted: [] });

    // Soak over, the canary still polls: promoted to "half"; its 2 hosts are queued next tick.
    expect(await advanceRollouts(deps(), at(63 * MIN))).toMatchObject({ promoted: ["june"] });
    expect(await advanceRollouts(deps(), at(64 * MIN))).toMatchObject({ queued: 2 });
    const half = (await hosts(created.id)).filter((h) => h.ring === 1);
    expect(half.map((h) => h.state)).toEqual(["queued", "queued"]);

    // One fails (a package failed though the command succeeded): 100 % can no longer be met.
    await finish(half[0]!.commandId!, "succeeded", at(65 * MIN), "openssl");
    expect(await advanceRollouts(deps(), at(66 * MIN))).toMatchObject({ halted: ["june"] });
    const halted = await rollout(created.id);
    expect(halted).toMatchObject({ state: "halted", currentRing: 1 });
    expect(halted.haltReason).toBe(`ring "half" cannot reach its success threshold of 100%: 1 of 2 hosts failed (${half[0]!.hostname}: openssl failed)`);
    expect(halted.rings[1]!.state).toBe("halted");
    expect(await m.db.auditEntry.count({ where: { action: "scheduler/RolloutHalt", actorName: "june" } })).toBe(1);
    // Halted: nothing new is queued (the rest waits), the other queued host is still followed.
    await finish(half[1]!.commandId!, "succeeded", at(67 * MIN));
    expect(await advanceRollouts(deps(), at(68 * MIN))).toMatchObject({ queued: 0, settled: 1 });
    expect((await hostOf(created.id, half[1]!.agentId)).state).toBe("succeeded");
    await refused(pauseRollout(m.db, created.id, at(68 * MIN), audited("PauseRollout")), Code.FailedPrecondition, /rollout "june" is halted; nothing to pause \(resume it to override/);

    // The halt reached the rule's channel.
    await runNotifications({ db: m.db, masterKey, limits: { timeoutMs: 2000, maxResponseBytes: 1024 } }, at(68 * MIN));
    await runNotifications({ db: m.db, masterKey, limits: { timeoutMs: 2000, maxResponseBytes: 1024 } }, at(70 * MIN));
    const sent = receiver.requests.filter((r) => r.path === `/${backend}/rollouts`).map((r) => JSON.parse(r.body) as { title: string; text: string });
    expect(sent).toHaveLength(1);
    expect(sent[0]!.title).toMatch(/Rollout halted/);
    expect(sent[0]!.text).toContain(`rollout "june" halted: ring "half" cannot reach its success threshold`);

    // The operator's override: resumed past "half" straight into "rest".
    const resumed = await resumeRollout(m.db, created.id, "oscar", at(70 * MIN), audited("ResumeRollout"));
    expect(resumed).toMatchObject({ state: "running", currentRing: 2, haltReason: "" });
    expect(resumed.rings.map((r) => r.state)).toEqual(["passed", "overridden", "installing"]);

    // A new leader (nothing in memory) takes over and finishes.
    const fresh = deps();
    expect(await advanceRollouts(fresh, at(71 * MIN))).toMatchObject({ queued: 2 });
    for (const h of (await hosts(created.id)).filter((h) => h.ring === 2)) await finish(h.commandId!, "succeeded", at(72 * MIN));
    expect(await advanceRollouts(fresh, at(73 * MIN))).toMatchObject({ finished: ["june"] });
    const done = await rollout(created.id);
    expect(done).toMatchObject({ state: "finished", currentRing: 3, endedAt: at(73 * MIN) });
    expect(await advanceRollouts(fresh, at(74 * MIN))).toEqual({ settled: 0, queued: 0, halted: [], promoted: [], finished: [] });
    expect((await m.db.notificationEvent.findMany({ where: { kind: "rollout_finished" } })).map((e) => e.text)).toEqual([`rollout "june" finished: all 3 rings done`]);
    await refused(resumeRollout(m.db, created.id, "oscar", at(75 * MIN), audited("ResumeRollout")), Code.FailedPrecondition, /rollout "june" is finished; nothing to resume/);
  });

  it("installs again what a host reported failed, and nothing on a host that reported it installed (until its next scan)", async () => {
    await reset();
    const agents = await fleet(2);
    const first = await createRollout(m.db, spec("first", [ring("all", { kind: "rest" }, { thresholdPercent: 50 })]), "oscar", T0, audited());
    await advanceRollouts(deps(), T0);
    await finish((await hostOf(first.id, agents[0]!.id)).commandId!, "succeeded", at(MIN));
    await finish((await hostOf(first.id, agents[1]!.id)).commandId!, "succeeded", at(MIN), "openssl");
    expect(await advanceRollouts(deps(), at(2 * MIN))).toMatchObject({ finished: ["first"] });
    const again = spec("again", [ring("all", { kind: "rest" })]);
    expect((await previewRollout(m.db, again)).hosts.map((h) => [h.hostname, h.updates])).toEqual([
      ["web-0", 0],
      ["web-1", 1],
    ]);
    const second = await createRollout(m.db, again, "oscar", at(3 * MIN), audited());
    await advanceRollouts(deps(), at(3 * MIN));
    expect(await hostOf(second.id, agents[0]!.id)).toMatchObject({ state: "nothing_to_do" });
    expect(await hostOf(second.id, agents[1]!.id)).toMatchObject({ state: "queued" });
  });

  it("counts a host that has just reported its install as online, before its poll time reaches the database (soak 0)", async () => {
    await reset();
    const agents = await fleet(2);
    const created = await createRollout(m.db, spec("at once", [ring("canary", { kind: "agents", agentIds: [agents[0]!.id] }), ring("rest", { kind: "rest" })]), "oscar", T0, audited());
    await advanceRollouts(deps(), T0);
    await finish((await hostOf(created.id, agents[0]!.id)).commandId!, "succeeded", at(MIN));
    // A new agent: its polls are still in the last-seen buffer.
    await m.db.agent.update({ where: { id: agents[0]!.id }, data: { lastSeenAt: null } });
    expect(await advanceRollouts(deps(), at(MIN))).toMatchObject({ halted: [] });
    expect((await rollout(created.id)).haltReason).toBe("");
  });

  it("halts at the soak's end when a host that installed went offline", async () => {
    await reset();
    const agents = await fleet(2);
    const created = await createRollout(m.db, spec("offline", [ring("canary", { kind: "agents", agentIds: [agents[0]!.id] }, { soakSeconds: 600 }), ring("rest", { kind: "rest" })]), "oscar", T0, audited());
    await advanceRollouts(deps(), T0);
    await finish((await hostOf(created.id, agents[0]!.id)).commandId!, "succeeded", at(MIN));
    await advanceRollouts(deps(), at(2 * MIN));
    // Silent for more than three poll intervals when the soak ends.
    expect(await advanceRollouts(deps(), at(12 * MIN))).toMatchObject({ halted: ["offline"] });
    expect((await rollout(created.id)).haltReason).toBe(`ring "canary": web-0 (last seen ${at(MIN).toISOString()}) went offline after installing`);
  });

  it("keeps a host in an open blackout window waiting, counts a host with nothing to install as a success, and merges into a pending install", async () => {
    await reset();
    const agents = await fleet(3);
    // web-1 has nothing approved.
    await m.db.packageUpdate.updateMany({ where: { agentId: agents[1]!.id }, data: { status: "pending" } });
    await addWindow(
      m.db,
      { name: "freeze", kind: "blackout", rrule: "FREQ=DAILY", dtstart: "2026-07-01T09:00", durationSeconds: 4 * 3600, timeZone: "UTC", allAgents: false, groups: [], tags: [], agentIds: [agents[0]!.id], enabled: true },
      "oscar",
      auditAs("CreateWindow", MaintenanceService, "window"),
    );
    const created = await createRollout(m.db, spec("careful", [ring("all", { kind: "rest" })]), "oscar", T0, audited());
    await advanceRollouts(deps(), T0);
    const byName = new Map((await hosts(created.id)).map((h) => [h.hostname, h]));
    expect(byName.get("web-0")).toMatchObject({ state: "waiting" });
    expect(byName.get("web-0")!.message).toMatch(/^waiting: in blackout window "freeze" until 2026-07-01T13:00:00.000Z/);
    expect(byName.get("web-1")).toMatchObject({ state: "nothing_to_do" });
    expect(byName.get("web-2")).toMatchObject({ state: "queued" });
    // The same install asked again for web-2 (another rollout) goes into the pending one.
    await m.db.rolloutHost.update({ where: { rolloutId_agentId: { rolloutId: created.id, agentId: agents[2]!.id } }, data: { state: "waiting", commandId: null } });
    await advanceRollouts(deps(), at(MIN));
    expect(await m.db.command.count({ where: { agentId: agents[2]!.id } })).toBe(1);
    expect(await hostOf(created.id, agents[2]!.id)).toMatchObject({ state: "queued", commandMerged: true });
    // After the blackout, web-0 is queued.
    await advanceRollouts(deps(), at(3 * HOUR + MIN));
    expect((await hostOf(created.id, agents[0]!.id)).state).toBe("queued");
  });

  it("fails a host whose agent is below the minimum supported version, saying how to upgrade it, and skips a decommissioned one", async () => {
    await reset();
    const agents = await fleet(3);
    const created = await createRollout(m.db, spec("old agents", [ring("all", { kind: "rest" }, { thresholdPercent: 1 })]), "oscar", T0, audited());
    await m.db.agent.update({ where: { id: agents[1]!.id }, data: { decommissionedAt: T0 } });
    await advanceRollouts({ ...deps(), settings: { minimumAgentVersion: "0.2.0", pollIntervalSeconds: 60 } }, T0);
    expect(await hostOf(created.id, agents[0]!.id)).toMatchObject({
      state: "failed",
      message: `agent web-0 runs 0.1.0, below the minimum supported 0.2.0: upgrade it first (\`redflag agents upgrade ${agents[0]!.id}\`)`,
    });
    expect(await hostOf(created.id, agents[1]!.id)).toMatchObject({ state: "skipped", message: "not installed: the agent was decommissioned" });
    expect(await m.db.command.count()).toBe(0);
  });

  it("pauses (nothing new queued), aborts (undelivered installs cancelled, the rest skipped) and refuses what the state does not allow", async () => {
    await reset();
    const agents = await fleet(3);
    const created = await createRollout(m.db, spec("stop", [ring("canary", { kind: "agents", agentIds: [agents[0]!.id] }), ring("rest", { kind: "rest" })]), "oscar", T0, audited());
    await pauseRollout(m.db, created.id, T0, audited("PauseRollout"));
    expect(await advanceRollouts(deps(), T0)).toMatchObject({ queued: 0 });
    await refused(pauseRollout(m.db, created.id, T0, audited("PauseRollout")), Code.FailedPrecondition, /rollout "stop" is paused; nothing to pause/);
    await resumeRollout(m.db, created.id, "oscar", T0, audited("ResumeRollout"));
    expect(await advanceRollouts(deps(), T0)).toMatchObject({ queued: 1 });
    const commandId = (await hostOf(created.id, agents[0]!.id)).commandId!;

    const aborted = await abortRollout({ db: m.db, events: { publish() {} } }, created.id, "oscar", at(MIN), audited("AbortRollout"));
    expect(aborted).toMatchObject({ state: "aborted", endedAt: at(MIN) });
    expect((await m.db.command.findUniqueOrThrow({ where: { id: commandId } })).state).toBe("cancelled");
    expect((await hosts(created.id)).map((h) => h.state)).toEqual(["skipped", "skipped", "skipped"]);
    expect(await m.db.auditEntry.count({ where: { action: "redflag.v1.RolloutService/AbortRollout" } })).toBe(1);
    expect(await advanceRollouts(deps(), at(2 * MIN))).toMatchObject({ queued: 0 });
    await refused(abortRollout({ db: m.db, events: { publish() {} } }, created.id, "oscar", at(MIN), audited("AbortRollout")), Code.FailedPrecondition, /rollout "stop" is aborted; nothing to abort/);
  });

  it("two schedulers at once (a leader change mid-tick) queue each host's install once and halt once", async () => {
    await reset();
    const agents = await fleet(6);
    const created = await createRollout(m.db, spec("twice", [ring("all", { kind: "rest" }, { thresholdPercent: 50 })]), "oscar", T0, audited());
    const [a, b] = await Promise.all([advanceRollouts(deps(), T0), advanceRollouts(deps(), T0)]);
    expect(a.queued + b.queued).toBe(6);
    expect(await m.db.command.count()).toBe(6);
    expect(await m.db.auditEntry.count({ where: { action: "scheduler/RolloutInstall", actorName: "twice" } })).toBe(6);
    const all = await hosts(created.id);
    for (const h of all.slice(0, 4)) await finish(h.commandId!, "failed", at(MIN));
    const judged = await Promise.all([advanceRollouts(deps(), at(2 * MIN)), advanceRollouts(deps(), at(2 * MIN))]);
    expect(judged.flatMap((j) => j.halted)).toEqual(["twice"]);
    expect(await m.db.notificationEvent.count({ where: { kind: "rollout_halted" } })).toBe(1);
    void agents;
  });

  it("leaves nothing behind when an audit write fails: no rollout, no command, the host still waiting", async () => {
    await reset();
    await fleet(1);
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(createRollout(m.db, spec("unaudited", [ring("all", { kind: "rest" })]), "oscar", T0, audited())).rejects.toThrow();
      expect(await m.db.rollout.count()).toBe(0);
    } finally {
      await undo();
    }
    const created = await createRollout(m.db, spec("audited", [ring("all", { kind: "rest" })]), "oscar", T0, audited());
    const undoAgain = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(advanceRollouts(deps(), T0)).rejects.toThrow();
    } finally {
      await undoAgain();
    }
    expect(await m.db.command.count()).toBe(0);
    expect((await hosts(created.id)).map((h) => [h.state, h.commandId])).toEqual([["waiting", null]]);
    expect(await m.db.packageUpdate.count({ where: { commandId: { not: null } } })).toBe(0);
    expect(await advanceRollouts(deps(), T0)).toMatchObject({ queued: 1 });
  });

  it("are pruned with the commands' retention once finished or aborted, never while open", async () => {
    await reset();
    const agents = await fleet(2);
    const ended = await createRollout(m.db, spec("ended", [ring("all", { kind: "rest" })]), "oscar", T0, audited());
    await abortRollout({ db: m.db, events: { publish() {} } }, ended.id, "oscar", T0, audited("AbortRollout"));
    const open = await createRollout(m.db, spec("open", [ring("all", { kind: "rest" })]), "oscar", T0, audited());
    const DAY = 86_400;
    const retention = { retentionCommandsSeconds: 30 * DAY, retentionAuditSeconds: 3650 * DAY, retentionMetricsSeconds: 3650 * DAY, retentionSecurityEventsSeconds: 3650 * DAY };
    expect((await prune(m.db, at(29 * 24 * HOUR), retention)).rollouts).toBe(0);
    expect((await prune(m.db, at(31 * 24 * HOUR), retention)).rollouts).toBe(1);
    expect((await m.db.rollout.findMany()).map((r) => r.id)).toEqual([open.id]);
    expect(await m.db.rolloutHost.count({ where: { rolloutId: ended.id } })).toBe(0);
    void agents;
  });

  it("refuses a name taken, targets with no agent, and explicit updates of agents it does not target; a refusal changes nothing", async () => {
    await reset();
    const agents = await fleet(2);
    await createRollout(m.db, spec("taken", [ring("all", { kind: "rest" })]), "oscar", T0, audited());
    await refused(createRollout(m.db, spec("taken", [ring("all", { kind: "rest" })]), "oscar", T0, audited()), Code.AlreadyExists, /a rollout named "taken" already exists/);
    await refused(
      createRollout(m.db, spec("nobody", [ring("all", { kind: "rest" })], { targets: { allAgents: false, groups: ["db"], tags: [], agentIds: [] } }), "oscar", T0, audited()),
      Code.InvalidArgument,
      /the targets name no agent/,
    );
    const stranger = await insertAgent(m.db, "db-1");
    await refused(
      createRollout(
        m.db,
        spec("keys", [ring("all", { kind: "rest" })], { allApproved: false, updateKeys: [{ agentId: stranger.id, source: "apt", name: "openssl", architecture: "amd64" }] }),
        "oscar",
        T0,
        audited(),
      ),
      Code.InvalidArgument,
      /update_keys\[0\] is an update of agent .* which is not among the rollout's targets/,
    );
    expect(await m.db.rollout.count()).toBe(1);
    expect(await m.db.auditEntry.count({ where: { target: "rollout" } })).toBeGreaterThanOrEqual(1);
    void agents;
  });
});

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandResultSchema, CommandSchema, InstallResultSchema, PackageResultState, RebootResultSchema } from "@redflag/gen/command_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { describe, expect, it } from "vitest";
import type { EventBus } from "../../src/cluster/events.ts";
import type { Wakeups } from "../../src/cluster/wakeups.ts";
import { addRebootPolicy, changeRebootPolicy, followReboots, policyFor, rebootAfterInstalls, removeRebootPolicy } from "../../src/domain/reboot-policies.ts";
import { installInWindows } from "../../src/domain/scheduled-installs.ts";
import { addWindow } from "../../src/domain/windows.ts";
import { newId } from "../../src/ids.ts";
import type { RebootPolicyInput, RebootPolicyRow } from "../../src/store/reboot-policies.ts";
import type { Prisma } from "../../src/store/types.ts";
import type { WindowInput } from "../../src/store/windows.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, insertUpdate, mediumDatabase } from "../support/medium.ts";

const events = { publish: () => {} } as unknown as EventBus;
const woken: string[] = [];
const wakeups = { notify: (id: string) => woken.push(id) } as unknown as Wakeups;
const settings = { minimumAgentVersion: "" };

// Saturday nights 22:00–02:00 Berlin time (20:00–00:00Z in summer).
const window = (over: Partial<WindowInput>): WindowInput => ({
  name: "w",
  kind: "maintenance",
  rrule: "FREQ=WEEKLY;BYDAY=SA",
  dtstart: "2026-01-03T22:00",
  durationSeconds: 4 * 3600,
  timeZone: "Europe/Berlin",
  allAgents: false,
  groups: [],
  tags: [],
  agentIds: [],
  enabled: true,
  ...over,
});
const policy = (over: Partial<RebootPolicyInput>): RebootPolicyInput => ({
  name: "p",
  allAgents: false,
  groups: [],
  tags: [],
  agentIds: [],
  mode: "when_required",
  windowOnly: false,
  preHook: "",
  postHook: "",
  hookTimeoutSeconds: 300,
  returnTimeoutSeconds: 900,
  enabled: true,
  ...over,
});
const recordWindow = auditAs<unknown>("CreateWindow", MaintenanceService, "window");
const recordPolicy = auditAs<unknown>("CreateRebootPolicy", MaintenanceService, "reboot_policy");

async function labelled(db: Prisma, hostname: string, labels: { group?: string; tags?: string[]; rebootRequired?: boolean }) {
  const a = await insertAgent(db, hostname);
  await db.agent.update({ where: { id: a.id }, data: { group: labels.group ?? "", tags: labels.tags ?? [], rebootRequired: labels.rebootRequired ?? false } });
  return a.id;
}

// An install_updates command that finished at `at`, having installed a package or not.
async function finishedInstall(db: Prisma, agentId: string, at: Date, installed: boolean): Promise<string> {
  const id = newId();
  const action = toBinary(CommandSchema, create(CommandSchema, { action: { case: "installUpdates", value: { packages: [{ source: "apt", name: "curl" }] } } }));
  await db.command.create({ data: { id, agentId, type: "install_updates", state: "succeeded", action: Buffer.from(action), createdBy: "oscar", createdAt: at, finishedAt: at } });
  const result = create(CommandResultSchema, {
    commandId: id,
    detail: { case: "installUpdates", value: create(InstallResultSchema, { packages: [{ source: "apt", name: "curl", state: installed ? PackageResultState.INSTALLED : PackageResultState.SKIPPED }] }) },
  });
  await db.commandResult.create({ data: { commandId: id, agentId, outcome: "succeeded", message: "", result: Buffer.from(toBinary(CommandResultSchema, result)) } });
  return id;
}

// A reboot command that reported the restart scheduled for `rebootTime`.
async function scheduledReboot(db: Prisma, agentId: string, rebootTime: Date): Promise<string> {
  const id = newId();
  const finished = new Date(rebootTime.getTime() - 60_000);
  const action = toBinary(CommandSchema, create(CommandSchema, { action: { case: "reboot", value: {} } }));
  await db.command.create({ data: { id, agentId, type: "reboot", state: "succeeded", action: Buffer.from(action), createdBy: "oscar", createdAt: finished, finishedAt: finished } });
  const result = create(CommandResultSchema, { commandId: id, detail: { case: "reboot", value: create(RebootResultSchema, { scheduled: true, rebootTime: timestampFromDate(rebootTime), wasRequired: true }) } });
  await db.commandResult.create({ data: { commandId: id, agentId, outcome: "succeeded", message: "", result: Buffer.from(toBinary(CommandResultSchema, result)) } });
  await db.agent.update({ where: { id: agentId }, data: { lastSeenAt: finished } });
  return id;
}

const rebootsOf = (db: Prisma, agentId: string) => db.command.findMany({ where: { agentId, type: "reboot" }, orderBy: { createdAt: "asc" } });
const rebootAction = (row: { action: Uint8Array }) => {
  const a = fromBinary(CommandSchema, row.action).action;
  if (a.case !== "reboot") throw new Error("not a reboot");
  return a.value;
};
const installsOf = (db: Prisma, agentId: string) => db.command.findMany({ where: { agentId, type: "install_updates" }, orderBy: { createdAt: "asc" } });
const notAfterOf = (row: { action: Uint8Array }) => {
  const a = fromBinary(CommandSchema, row.action).action;
  if (a.case !== "installUpdates") throw new Error("not an install");
  return a.value.notAfter ? timestampDate(a.value.notAfter).toISOString() : undefined;
};

describe("which reboot policy applies", () => {
  const row = (name: string, over: Partial<RebootPolicyInput>): RebootPolicyRow => ({ ...policy({ name, ...over }), id: name, createdBy: "oscar", createdAt: new Date(0), updatedAt: new Date(0) });
  const all = row("b-all", { allAgents: true });
  const group = row("c-group", { groups: ["db"] });
  const tag = row("d-tag", { tags: ["pci"] });
  const tag2 = row("a-tag", { tags: ["eu"] });
  const agent = { id: "00000000-0000-4000-8000-000000000001", group: "db", tags: ["pci", "eu"] };
  it("prefers the agent's ID over a tag over its group over all agents, then the first by name", () => {
    const byId = row("z-id", { agentIds: [agent.id] });
    expect(policyFor([all, group, tag, byId], agent)?.name).toBe("z-id");
    expect(policyFor([tag2, all, group, tag], agent)?.name).toBe("a-tag");
    expect(policyFor([all, group], agent)?.name).toBe("c-group");
    expect(policyFor([all, group], { ...agent, group: "web" })?.name).toBe("b-all");
    expect(policyFor([group], { ...agent, group: "" })).toBeUndefined();
    expect(policyFor([{ ...byId, enabled: false }, all], agent)?.name).toBe("b-all");
  });
});

describe.each(availableBackends)("scheduled installs and reboot policies on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  it("queues the approved updates' install only inside an open auto-install window, bounded by its end, once per opening", async () => {
    const db1 = await labelled(m.db, "db-1", { group: "db" });
    const web = await labelled(m.db, "web-1", { group: "web" });
    for (const name of ["curl", "openssl"]) await insertUpdate(m.db, db1, name, { status: "approved" });
    await insertUpdate(m.db, db1, "vim");
    await insertUpdate(m.db, web, "curl", { status: "approved" });
    await m.db.hold.create({ data: { id: newId(), agentId: db1, name: "openssl", createdBy: "oscar" } });
    await addWindow(m.db, window({ name: "db nights", groups: ["db"], autoInstall: true }), "oscar", recordWindow);
    // A window without auto_install queues nothing, open or not.
    await addWindow(m.db, window({ name: "web always", groups: ["web"], rrule: "FREQ=DAILY", dtstart: "2026-01-01T00:00", durationSeconds: 86_400 }), "oscar", recordWindow);
    const deps = { db: m.db, wakeups, events, settings };

    // Saturday 14:00 Berlin: closed.
    expect((await installInWindows(deps, new Date("2026-06-13T12:00Z"))).queued).toEqual([]);
    expect(await m.db.command.count({ where: { type: "install_updates" } })).toBe(0);

    // 23:00 Berlin: open until 02:00 (00:00Z). curl only: openssl is held, vim not approved.
    const inside = await installInWindows(deps, new Date("2026-06-13T21:00Z"));
    expect(inside.queued).toMatchObject([{ agentId: db1, window: "db nights", packages: 1 }]);
    const [install] = await installsOf(m.db, db1);
    expect(install).toMatchObject({ createdBy: "window:db nights", createdByKind: "system", state: "pending" });
    expect(notAfterOf(install!)).toBe("2026-06-14T00:00:00.000Z");
    const packages = fromBinary(CommandSchema, install!.action).action;
    expect(packages.case === "installUpdates" && packages.value.packages.map((p) => `${p.name}=${p.version}`)).toEqual(["curl=1.1"]);
    expect(await m.db.auditEntry.count({ where: { action: "scheduler/WindowInstall", actorName: "db nights", target: `agent:${db1}` } })).toBe(1);
    expect(await installsOf(m.db, web)).toEqual([]);

    // The next run finds the update covered by the pending install.
    expect((await installInWindows(deps, new Date("2026-06-13T21:05Z"))).queued).toEqual([]);
    // It fails (queued at 21:00Z by the injected clock; the database stamped the real time): not
    // tried again in this opening...
    await m.db.command.update({ where: { id: install!.id }, data: { state: "failed", createdAt: new Date("2026-06-13T21:00Z"), finishedAt: new Date("2026-06-13T21:10Z") } });
    expect((await installInWindows(deps, new Date("2026-06-13T22:00Z"))).queued).toEqual([]);
    // ... nor after it closed, but in the next one.
    expect((await installInWindows(deps, new Date("2026-06-14T01:00Z"))).queued).toEqual([]);
    expect((await installInWindows(deps, new Date("2026-06-20T20:30Z"))).queued).toMatchObject([{ agentId: db1 }]);
    expect(await installsOf(m.db, db1)).toHaveLength(2);

    // A blackout open for the host: skipped, nothing queued.
    await m.db.command.updateMany({ where: { agentId: db1 }, data: { state: "failed", createdAt: new Date("2026-06-20T20:30Z"), finishedAt: new Date("2026-06-20T21:00Z") } });
    await addWindow(m.db, window({ name: "freeze", kind: "blackout", agentIds: [db1], rrule: "FREQ=DAILY;COUNT=1", dtstart: "2026-06-27T00:00", timeZone: "UTC", durationSeconds: 86_400 }), "oscar", recordWindow);
    const frozen = await installInWindows(deps, new Date("2026-06-27T21:00Z"));
    expect(frozen.queued).toEqual([]);
    expect(frozen.skipped).toMatchObject([{ agentId: db1, reason: expect.stringMatching(/blackout window "freeze"/) }]);
    expect(await installsOf(m.db, db1)).toHaveLength(2);
    await m.db.maintenanceWindow.deleteMany({});
  });

  it("picks the agents of an auto-install window by tag and by ID, and leaves decommissioned ones out", async () => {
    const canary = await labelled(m.db, "canary-1", { tags: ["canary"] });
    const named = await labelled(m.db, "named-1", {});
    const gone = await labelled(m.db, "gone-1", { tags: ["canary"] });
    await m.db.agent.update({ where: { id: gone }, data: { decommissionedAt: new Date("2026-01-01T00:00Z") } });
    for (const agent of [canary, named, gone]) await insertUpdate(m.db, agent, "curl", { status: "approved" });
    await addWindow(m.db, window({ name: "canaries", tags: ["canary"], agentIds: [named], autoInstall: true, rrule: "FREQ=DAILY", dtstart: "2026-01-01T00:00", timeZone: "UTC", durationSeconds: 3600 }), "oscar", recordWindow);
    const run = await installInWindows({ db: m.db, wakeups, events, settings }, new Date("2026-08-01T00:30Z"));
    expect(run.queued.map((q) => q.agentId).sort()).toEqual([canary, named].sort());
    expect(await installsOf(m.db, gone)).toEqual([]);
    // Bounded per run: one agent looked at, the other on the next run.
    await m.db.command.updateMany({ where: { agentId: { in: [canary, named] } }, data: { state: "failed", createdAt: new Date("2026-08-01T23:59Z") } });
    const next = new Date("2026-08-02T00:10Z");
    expect((await installInWindows({ db: m.db, wakeups, events, settings }, next, { agents: 1 })).queued).toHaveLength(1);
    expect((await installInWindows({ db: m.db, wakeups, events, settings }, next, { agents: 1 })).queued).toHaveLength(1);
    expect((await installInWindows({ db: m.db, wakeups, events, settings }, next, { agents: 1 })).queued).toHaveLength(0);
    await m.db.maintenanceWindow.deleteMany({});
  });

  it("decides each finished install once by the agent's policy: never, when required, always, window only, blackout", async () => {
    const always = await labelled(m.db, "always-1", { tags: ["always"], group: "win" });
    const quiet = await labelled(m.db, "quiet-1", {});
    const needs = await labelled(m.db, "needs-1", { rebootRequired: true });
    const never = await labelled(m.db, "never-1", { tags: ["always"] });
    const nightly = await labelled(m.db, "nightly-1", { group: "win" });
    const frozen = await labelled(m.db, "frozen-1", { tags: ["always", "frozen"] });
    await addRebootPolicy(m.db, policy({ name: "fleet", allAgents: true, mode: "when_required" }), "oscar", recordPolicy);
    await addRebootPolicy(m.db, policy({ name: "always", tags: ["always"], mode: "always", preHook: "drain", postHook: "undrain", hookTimeoutSeconds: 60 }), "oscar", recordPolicy);
    await addRebootPolicy(m.db, policy({ name: "hands off", agentIds: [never], mode: "never" }), "oscar", recordPolicy);
    await addRebootPolicy(m.db, policy({ name: "nightly", groups: ["win"], mode: "always", windowOnly: true }), "oscar", recordPolicy);
    await addWindow(m.db, window({ name: "win nights", groups: ["win"] }), "oscar", recordWindow);
    await addWindow(m.db, window({ name: "freeze", kind: "blackout", tags: ["frozen"], rrule: "FREQ=DAILY;COUNT=1", dtstart: "2026-06-13T00:00", timeZone: "UTC", durationSeconds: 86_400 }), "oscar", recordWindow);
    const noon = new Date("2026-06-13T12:00Z");
    const installs = {
      always: await finishedInstall(m.db, always, new Date("2026-06-13T11:00Z"), true),
      quiet: await finishedInstall(m.db, quiet, new Date("2026-06-13T11:01Z"), false),
      needs: await finishedInstall(m.db, needs, new Date("2026-06-13T11:02Z"), false),
      never: await finishedInstall(m.db, never, new Date("2026-06-13T11:03Z"), true),
      nightly: await finishedInstall(m.db, nightly, new Date("2026-06-13T11:04Z"), true),
      frozen: await finishedInstall(m.db, frozen, new Date("2026-06-13T11:05Z"), true),
    };
    const deps = { db: m.db, wakeups, events };

    const first = await rebootAfterInstalls(deps, noon);
    expect(first.queued.map((q) => [q.agentId, q.policyName])).toEqual([
      [always, "always"],
      [needs, "fleet"],
    ]);
    expect(first.waiting).toBe(2);
    // ALWAYS: forced, with the policy's hooks; WHEN_REQUIRED: the agent checks the host again.
    const [forced] = await rebootsOf(m.db, always);
    expect(forced).toMatchObject({ createdBy: "reboot-policy:always", createdByKind: "system", state: "pending" });
    expect(rebootAction(forced!)).toMatchObject({ force: true, preHook: "drain", postHook: "undrain", hookTimeoutSeconds: 60 });
    expect(rebootAction((await rebootsOf(m.db, needs))[0]!)).toMatchObject({ force: false, preHook: "", postHook: "" });
    for (const agent of [quiet, never, nightly, frozen]) expect(await rebootsOf(m.db, agent)).toEqual([]);
    const audit = await m.db.auditEntry.findFirst({ where: { action: "scheduler/RebootAfterInstall", target: `agent:${always}` } });
    expect(audit).toMatchObject({ actorKind: "reboot_policy", actorName: "always" });
    expect(woken).toEqual(expect.arrayContaining([always, needs]));
    const followed = async (id: string) => (await m.db.command.findUniqueOrThrow({ where: { id } })).followedUpAt !== null;
    expect(await Promise.all(Object.values(installs).map(followed))).toEqual([true, true, true, true, false, false]);

    // Each install is decided once: a second run queues nothing new.
    const again = await rebootAfterInstalls(deps, new Date("2026-06-13T12:01Z"));
    expect(again.queued).toEqual([]);
    expect(again.waiting).toBe(2);
    // Another install while the policy's reboot is still pending: that reboot covers it.
    const later = await finishedInstall(m.db, always, new Date("2026-06-13T12:02Z"), true);
    const covered = await rebootAfterInstalls(deps, new Date("2026-06-13T12:03Z"));
    expect(covered.queued).toMatchObject([{ agentId: always, commandId: undefined }]);
    expect(await rebootsOf(m.db, always)).toHaveLength(1);
    expect(await followed(later)).toBe(true);

    // 23:00 Berlin: the window is open for nightly-1; the blackout for frozen-1 is over at 00:00Z.
    const evening = await rebootAfterInstalls(deps, new Date("2026-06-13T21:00Z"));
    expect(evening.queued.map((q) => q.agentId)).toEqual([nightly]);
    expect(evening.waiting).toBe(1);
    const morning = await rebootAfterInstalls(deps, new Date("2026-06-14T00:30Z"));
    expect(morning.queued.map((q) => q.agentId)).toEqual([frozen]);
    expect(await m.db.command.count({ where: { type: "install_updates", followedUpAt: null, finishedAt: { not: null } } })).toBe(0);
    await m.db.maintenanceWindow.deleteMany({});
    await m.db.rebootPolicy.deleteMany({});
  });

  it("keeps the reboot of an agent below the minimum supported version waiting until it is upgraded", async () => {
    const old = await labelled(m.db, "old-1", {});
    await addRebootPolicy(m.db, policy({ name: "old", agentIds: [old], mode: "always" }), "oscar", recordPolicy);
    await finishedInstall(m.db, old, new Date("2026-07-01T09:00Z"), true);
    const deps = { db: m.db, wakeups, events, settings: { minimumAgentVersion: "0.2.0" } };
    expect(await rebootAfterInstalls(deps, new Date("2026-07-01T09:01Z"))).toEqual({ queued: [], waiting: 1 });
    await m.db.agent.update({ where: { id: old }, data: { agentVersion: "0.2.0" } });
    expect((await rebootAfterInstalls(deps, new Date("2026-07-01T09:02Z"))).queued.map((q) => q.agentId)).toEqual([old]);
    await m.db.rebootPolicy.deleteMany({});
  });

  it("flags a host that does not poll within its return timeout after a reboot, once, and clears the flag when it polls", async () => {
    const late = await labelled(m.db, "late-1", { group: "slow" });
    const prompt = await labelled(m.db, "prompt-1", {});
    await addRebootPolicy(m.db, policy({ name: "slow hosts", groups: ["slow"], mode: "never", returnTimeoutSeconds: 3600 }), "oscar", recordPolicy);
    const at = new Date("2026-07-01T10:00Z");
    const lateReboot = await scheduledReboot(m.db, late, at);
    const promptReboot = await scheduledReboot(m.db, prompt, at);
    const overdueEvents = () => m.db.notificationEvent.findMany({ where: { kind: "reboot_overdue" } });

    // prompt-1 polls after its reboot: followed up, never flagged. late-1 has an hour.
    await m.db.agent.update({ where: { id: prompt }, data: { lastSeenAt: new Date("2026-07-01T10:03Z") } });
    expect(await followReboots(m.db, new Date("2026-07-01T10:30Z"))).toEqual({ overdue: [], back: 1, cleared: 0 });
    expect((await m.db.command.findUniqueOrThrow({ where: { id: promptReboot } })).followedUpAt).not.toBeNull();
    expect((await m.db.command.findUniqueOrThrow({ where: { id: lateReboot } })).followedUpAt).toBeNull();

    // Past 11:00 without a poll: flagged once, notified once.
    expect((await followReboots(m.db, new Date("2026-07-01T11:01Z"))).overdue).toEqual([late]);
    expect((await m.db.agent.findUniqueOrThrow({ where: { id: late } })).rebootOverdueSince).toEqual(new Date("2026-07-01T11:00Z"));
    expect(await overdueEvents()).toMatchObject([{ agentId: late, severity: "warning", text: "has not polled since its reboot at 2026-07-01T10:00:00.000Z (allowed 60 minutes to come back)" }]);
    expect((await followReboots(m.db, new Date("2026-07-01T11:02Z"))).overdue).toEqual([]);
    expect(await overdueEvents()).toHaveLength(1);
    expect((await m.db.agent.findUniqueOrThrow({ where: { id: prompt } })).rebootOverdueSince).toBeNull();

    // It polls again: the flag is cleared.
    await m.db.agent.update({ where: { id: late }, data: { lastSeenAt: new Date("2026-07-01T11:30Z") } });
    expect((await followReboots(m.db, new Date("2026-07-01T11:31Z"))).cleared).toBe(1);
    expect((await m.db.agent.findUniqueOrThrow({ where: { id: late } })).rebootOverdueSince).toBeNull();
    await m.db.rebootPolicy.deleteMany({});
  });

  it("creates, changes and deletes reboot policies with their audit entries, or (when that cannot be written) not at all", async () => {
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(addRebootPolicy(m.db, policy({ name: "atomic", allAgents: true }), "oscar", recordPolicy)).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.rebootPolicy.count({ where: { name: "atomic" } })).toBe(0);
    const row = await addRebootPolicy(m.db, policy({ name: "atomic", allAgents: true }), "oscar", recordPolicy);
    await expect(addRebootPolicy(m.db, policy({ name: "atomic", allAgents: true }), "oscar", recordPolicy)).rejects.toThrow(/already exists/);
    await expect(addRebootPolicy(m.db, policy({ name: "ghost", agentIds: [newId()] }), "oscar", recordPolicy)).rejects.toThrow(/does not exist/);
    const changed = await changeRebootPolicy(m.db, row.id, policy({ name: "atomic", allAgents: true, mode: "always" }), new Date("2026-07-01T00:00Z"), auditAs("UpdateRebootPolicy", MaintenanceService, "p"));
    expect(changed).toMatchObject({ mode: "always", updatedAt: new Date("2026-07-01T00:00Z") });
    await removeRebootPolicy(m.db, row.id, auditAs("DeleteRebootPolicy", MaintenanceService, "p"));
    await expect(removeRebootPolicy(m.db, row.id, auditAs("DeleteRebootPolicy", MaintenanceService, "p"))).rejects.toThrow(/does not exist/);
    const actions = (await m.db.auditEntry.findMany({ where: { action: { startsWith: "redflag.v1.MaintenanceService/" }, target: { in: ["reboot_policy", "p"] } } })).map((e) => e.action.split("/")[1]);
    expect(actions).toEqual(expect.arrayContaining(["CreateRebootPolicy", "DeleteRebootPolicy", "UpdateRebootPolicy"]));
  });
});

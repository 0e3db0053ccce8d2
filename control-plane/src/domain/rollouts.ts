import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandSchema, InstallUpdatesSchema, PackageRefSchema } from "@redflag/gen/command_pb";
import type { EventBus } from "../cluster/events.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import { newId, sha256 } from "../ids.ts";
import type { Settings } from "../settings.ts";
import { recordAudit } from "../store/audit.ts";
import { cancelPendingCommand } from "../store/commands.ts";
import { inTransaction } from "../store/db.ts";
import { holdsFor } from "../store/holds.ts";
import { enqueueNotification } from "../store/notifications.ts";
import { linkInstallCommand } from "../store/package-updates.ts";
import {
  agentForInstall,
  approvedKeysOf,
  approvedUpdatesOf,
  countOpenRollouts,
  endedQueuedHosts,
  existingAgents,
  hostsIn,
  insertRollout,
  lockRollout,
  lockRolloutCreation,
  moveHost,
  offlineInstalledHosts,
  ownQueuedCommands,
  ringCounts,
  ringCountsOf,
  rolloutStateShared,
  runningRollouts,
  skipWaitingHosts,
  targetAgents,
  updateRing,
  updateRollout,
  waitingHosts,
  type PlacedHost,
  type RolloutInput,
  type RolloutKey,
  type RolloutRow,
} from "../store/rollouts.ts";
import type { Prisma, Tx } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { healthCutoffs } from "./health.ts";
import { heldBy } from "./holds.ts";
import { invalid } from "./input.ts";
import { mergeIntoPending } from "./pending-commands.ts";
import { storeCommand } from "./store-command.ts";
import { requireSupportedVersion } from "./upgrades.ts";
import { agentWindowsAt, boundInstall, installNotAfter } from "./windows.ts";

// Staged rollouts (issue 16, docs/rollouts.md): updates installed across a rollout's hosts ring
// by ring. Hosts are placed in rings once, at creation. The leader's scheduler calls
// advanceRollouts on every tick: it records how queued installs ended, queues the current
// ring's waiting hosts, halts a ring whose threshold can no longer be met, soaks a ring that
// met it and then promotes it. Everything it knows is in the database and every step is a
// conditional write under the rollout's row lock, so a restart or a new leader continues where
// the last one stopped and nothing is done twice.

// Bounds: the hosts a rollout may hold, the rollouts not over yet (each is looked at on every
// tick), and the installs queued per rollout and in all per tick (each is one short transaction;
// the rest wait for the next tick, so one tick stays short).
export const MAX_ROLLOUT_HOSTS = 10_000;
export const MAX_OPEN_ROLLOUTS = 50;
const INSTALLS_PER_ROLLOUT_PER_TICK = 200;
const INSTALLS_PER_TICK = 500;
const SETTLE_BATCH = 1000;
// Hostnames a halt reason names before "and N more".
const NAMED_IN_REASON = 5;

export interface RolloutDeps {
  db: Prisma;
  wakeups: Pick<Wakeups, "notify">;
  events: Pick<EventBus, "publish">;
  settings: Pick<Settings, "minimumAgentVersion" | "pollIntervalSeconds">;
}

// ---- placing agents in rings

const placementOrder = (name: string, agentId: string) => sha256(`${name}\n${agentId}`).toString("hex");

const names = (list: readonly string[], total = list.length) =>
  `${list.slice(0, NAMED_IN_REASON).join(", ")}${total > NAMED_IN_REASON ? ` and ${total - NAMED_IN_REASON} more` : ""}`;

// Places the target agents in rings: named agents first, then each percentage of the agents not
// placed yet (rounded up) in an order fixed by a hash of the rollout's name and the agent's ID,
// then the rest. The name (unique among rollouts) seeds the order so a preview shows exactly
// what the creation will do. Refused when a ring would be empty, a named agent is not a target
// or is named twice, or agents would be left out because the last ring is not `rest`.
export function placeAgents(input: Pick<RolloutInput, "name" | "rings">, agents: readonly { id: string; hostname: string }[]): PlacedHost[] {
  const byId = new Map(agents.map((a) => [a.id, a]));
  const placed = new Map<string, number>();
  input.rings.forEach((ring, index) => {
    if (ring.kind !== "agents") return;
    for (const id of ring.agentIds) {
      if (!byId.has(id)) throw invalid(`ring "${ring.name}" names agent ${id}, which is not among the rollout's targets (or is decommissioned)`);
      const other = placed.get(id);
      if (other !== undefined) throw invalid(`agent ${byId.get(id)!.hostname} (${id}) is named in ring "${input.rings[other]!.name}" and in ring "${ring.name}"; an agent belongs to one ring`);
      placed.set(id, index);
    }
  });
  const remaining = agents.filter((a) => !placed.has(a.id)).sort((a, b) => (placementOrder(input.name, a.id) < placementOrder(input.name, b.id) ? -1 : 1));
  input.rings.forEach((ring, index) => {
    if (ring.kind === "agents") return;
    const take = ring.kind === "rest" ? remaining.length : Math.ceil((ring.percent * remaining.length) / 100);
    for (const a of remaining.splice(0, take)) placed.set(a.id, index);
  });
  if (remaining.length > 0) {
    const last = input.rings[input.rings.length - 1]!;
    throw invalid(
      `${remaining.length} target agent${remaining.length === 1 ? "" : "s"} would be left out (${names(remaining.map((a) => a.hostname).sort())}): the last ring ("${last.name}") must be "rest", or the rings must cover every target agent`,
    );
  }
  input.rings.forEach((ring, index) => {
    if (![...placed.values()].includes(index)) throw invalid(`ring "${ring.name}" would have no agent: ${ring.kind === "rest" ? "the earlier rings take every target agent" : "no target agent is left for it"}; remove it or widen the targets`);
  });
  return agents.map((a) => ({ agentId: a.id, hostname: a.hostname, ring: placed.get(a.id)! })).sort((a, b) => a.ring - b.ring || a.hostname.localeCompare(b.hostname) || a.agentId.localeCompare(b.agentId));
}

// The target agents and where they go; explicit updates must be for target agents.
async function placement(db: Prisma, input: RolloutInput): Promise<PlacedHost[]> {
  const named = [...new Set([...input.targets.agentIds, ...input.rings.flatMap((r) => r.agentIds)])];
  const known = await existingAgents(db, named);
  const unknown = named.find((id) => !known.has(id));
  if (unknown) throw new ConnectError(`agent ${unknown} does not exist`, Code.NotFound);
  const agents = await targetAgents(db, input.targets, MAX_ROLLOUT_HOSTS + 1);
  if (agents.length === 0) throw invalid("the targets name no agent that is part of the fleet");
  if (agents.length > MAX_ROLLOUT_HOSTS) throw invalid(`the targets name more than ${MAX_ROLLOUT_HOSTS} agents, the most one rollout may hold; narrow them by group or tag and run several rollouts`);
  const ids = new Set(agents.map((a) => a.id));
  const stray = input.updateKeys.findIndex((k) => !ids.has(k.agentId));
  if (stray >= 0) throw invalid(`update_keys[${stray}] is an update of agent ${input.updateKeys[stray]!.agentId}, which is not among the rollout's targets`);
  return placeAgents(input, agents);
}

const keysByAgent = (keys: readonly RolloutKey[]) => {
  const out = new Map<string, RolloutKey[]>();
  for (const k of keys) out.set(k.agentId, [...(out.get(k.agentId) ?? []), k]);
  return out;
};
const keyOf = (k: { source: string; name: string; architecture: string }) => `${k.source}\u0000${k.name}\u0000${k.architecture}`;

export interface RolloutPreview {
  rings: { name: string; hosts: number; updates: number }[];
  hosts: (PlacedHost & { updates: number })[];
}

// Where each target agent would go and how many updates it would install now; saves nothing.
export async function previewRollout(db: Prisma, input: RolloutInput): Promise<RolloutPreview> {
  const hosts = await placement(db, input);
  const agentIds = hosts.map((h) => h.agentId);
  const approved = await approvedKeysOf(db, agentIds);
  const isHeld = heldBy(await holdsFor(db, agentIds));
  const wanted = input.allApproved ? undefined : new Map([...keysByAgent(input.updateKeys)].map(([id, keys]) => [id, new Set(keys.map(keyOf))]));
  const counts = new Map<string, number>();
  for (const u of approved) {
    if (isHeld(u) || u.installed) continue;
    if (wanted && !wanted.get(u.agentId)?.has(keyOf(u))) continue;
    counts.set(u.agentId, (counts.get(u.agentId) ?? 0) + 1);
  }
  const withCounts = hosts.map((h) => ({ ...h, updates: counts.get(h.agentId) ?? 0 }));
  return {
    rings: input.rings.map((r, index) => {
      const mine = withCounts.filter((h) => h.ring === index);
      return { name: r.name, hosts: mine.length, updates: mine.reduce((n, h) => n + h.updates, 0) };
    }),
    hosts: withCounts,
  };
}

// ---- operators' changes, each with its audit entry in one transaction

const missing = (id: string) => new ConnectError(`rollout ${id} does not exist`, Code.NotFound);

// Saves a rollout and starts its first ring (the scheduler queues its installs). At most
// MAX_OPEN_ROLLOUTS are not over at once (counted under a lock, so concurrent creations cannot
// overshoot).
export async function createRollout(db: Prisma, input: RolloutInput, createdBy: string, now: Date, record: AuditHook<RolloutRow>): Promise<RolloutRow> {
  const hosts = await placement(db, input);
  return inTransaction(db, async (tx) => {
    await lockRolloutCreation(tx);
    const open = await countOpenRollouts(tx);
    if (open >= MAX_OPEN_ROLLOUTS) {
      throw new ConnectError(`${open} rollouts are running, paused or halted, the most allowed (${MAX_OPEN_ROLLOUTS}); finish or abort one first`, Code.ResourceExhausted);
    }
    const row = await insertRollout(tx, newId(), input, hosts, createdBy, now);
    if (row === "taken") throw new ConnectError(`a rollout named "${input.name}" already exists; pick another name`, Code.AlreadyExists);
    await record(tx, row);
    return row;
  });
}

export type RolloutChange = { before: RolloutRow; after: RolloutRow };

// Changes a rollout under its row lock and records it; the change is refused
// (FailedPrecondition) when the rollout's state does not allow it.
async function change(db: Prisma, id: string, fn: (tx: Tx, row: RolloutRow) => Promise<void>, record: AuditHook<RolloutChange>): Promise<RolloutRow> {
  return inTransaction(db, async (tx) => {
    const before = await lockRollout(tx, id);
    if (!before) throw missing(id);
    await fn(tx, before);
    const after = (await lockRollout(tx, id))!;
    await record(tx, { before, after });
    return after;
  });
}

const refused = (row: RolloutRow, what: string) => {
  const hint = row.state === "halted" ? ` (resume it to override the halt and go on past ring "${row.rings[row.currentRing]?.name}", or abort it)` : "";
  return new ConnectError(`rollout "${row.name}" is ${row.state}; nothing to ${what}${hint}`, Code.FailedPrecondition);
};

// Pause: no new install is queued and no ring is promoted; queued installs still run.
export function pauseRollout(db: Prisma, id: string, now: Date, record: AuditHook<RolloutChange>): Promise<RolloutRow> {
  return change(
    db,
    id,
    async (tx, row) => {
      if (row.state !== "running") throw refused(row, "pause");
      await updateRollout(tx, id, { state: "paused" }, now);
    },
    record,
  );
}

// Resume a paused rollout; resuming a halted one is the operator's override: the halted ring is
// marked overridden, its hosts still waiting are skipped, and the rollout goes on to the next
// ring (or finishes).
export function resumeRollout(db: Prisma, id: string, by: string, now: Date, record: AuditHook<RolloutChange>): Promise<RolloutRow> {
  return change(
    db,
    id,
    async (tx, row) => {
      if (row.state === "paused") return updateRollout(tx, id, { state: "running" }, now);
      if (row.state !== "halted") throw refused(row, "resume");
      const ring = row.currentRing;
      await skipWaitingHosts(tx, id, ring, `not installed: ${by} resumed the rollout past its halted ring`, now);
      await updateRollout(tx, id, { state: "running", haltReason: "" }, now);
      await promote(tx, row, ring, "overridden", now);
    },
    record,
  );
}

// Abort: for good. Hosts still waiting are skipped; the installs the rollout queued itself and
// that were not delivered yet are cancelled (one merged into someone else's pending install is
// left to run); delivered ones run to their end.
export async function abortRollout(deps: Pick<RolloutDeps, "db" | "events">, id: string, by: string, now: Date, record: AuditHook<RolloutChange>): Promise<RolloutRow> {
  const cancelled: { agentId: string; commandId: string }[] = [];
  const row = await change(
    deps.db,
    id,
    async (tx, row) => {
      if (row.state !== "running" && row.state !== "paused" && row.state !== "halted") throw refused(row, "abort");
      for (const c of await ownQueuedCommands(tx, id)) {
        if (!(await cancelPendingCommand(tx, c.commandId, now))) continue;
        await moveHost(tx, id, c.agentId, "queued", { state: "skipped", message: `not installed: ${by} aborted the rollout before the install was delivered (command ${c.commandId} cancelled)`, finishedAt: now });
        cancelled.push(c);
      }
      await skipWaitingHosts(tx, id, undefined, `not installed: ${by} aborted the rollout`, now);
      await updateRollout(tx, id, { state: "aborted", endedAt: now }, now);
    },
    record,
  );
  if (cancelled.length > 0) deps.events.publish(cancelled.map((c) => ({ commandId: c.commandId, agentId: c.agentId })));
  return row;
}

// ---- the scheduler's steps

// An entry by the rollout itself (not a person): promotions, halts, the end, each install queued.
const rolloutAudit = (tx: Tx, row: Pick<RolloutRow, "id" | "name">, action: string, target: string, after: unknown) =>
  recordAudit(tx, { actorKind: "rollout", actorId: row.id, actorName: row.name, action: `scheduler/${action}`, target, remoteAddr: "", after });

// The ring `index` passed (or was overridden): the next one starts, or the rollout finishes and
// says so. Runs under the rollout's lock.
async function promote(tx: Tx, row: RolloutRow, index: number, how: "passed" | "overridden", now: Date): Promise<void> {
  const ring = row.rings[index]!;
  await updateRing(tx, row.id, index, { state: how });
  const next = row.rings[index + 1];
  if (next) {
    await updateRing(tx, row.id, index + 1, { state: "installing", startedAt: now });
    await updateRollout(tx, row.id, { currentRing: index + 1 }, now);
    await rolloutAudit(tx, row, "RolloutPromote", `rollout:${row.id}`, { ring: ring.name, outcome: how, next: next.name });
    return;
  }
  await updateRollout(tx, row.id, { state: "finished", currentRing: row.rings.length, endedAt: now }, now);
  await rolloutAudit(tx, row, "RolloutFinish", `rollout:${row.id}`, { ring: ring.name, outcome: how });
  await enqueueNotification(tx, { kind: "rollout_finished", severity: "info", text: `rollout "${row.name}" finished: all ${row.rings.length} ring${row.rings.length === 1 ? "" : "s"} done` });
}

async function halt(tx: Tx, row: RolloutRow, index: number, reason: string, now: Date): Promise<void> {
  await updateRing(tx, row.id, index, { state: "halted" });
  await updateRollout(tx, row.id, { state: "halted", haltReason: reason }, now);
  await rolloutAudit(tx, row, "RolloutHalt", `rollout:${row.id}`, { ring: row.rings[index]!.name, reason });
  await enqueueNotification(tx, { kind: "rollout_halted", severity: "warning", text: `rollout "${row.name}" halted: ${reason}` });
}

// How a queued host's install ended, as its host state and message.
function outcomeOf(h: Awaited<ReturnType<typeof endedQueuedHosts>>[number]): { state: "succeeded" | "failed"; message: string } {
  if (h.state === null) return { state: "failed", message: `its install command ${h.command_id} no longer exists` };
  const failed = h.failed_packages ?? [];
  if (h.state === "succeeded" && failed.length === 0) return { state: "succeeded", message: "" };
  const what = failed.length > 0 ? `${names(failed)} failed` : `install ${h.state.replace("_", " ")}`;
  return { state: "failed", message: `${what}${h.message ? `: ${h.message}` : ""}`.slice(0, 500) };
}

// Queued hosts end from their commands' outcomes (in every rollout, whatever its state: an
// install queued before a pause or halt is still followed).
async function settleQueued(db: Prisma, now: Date): Promise<number> {
  let settled = 0;
  for (const h of await endedQueuedHosts(db, SETTLE_BATCH)) {
    const { state, message } = outcomeOf(h);
    if (await moveHost(db, h.rollout_id, h.agent_id, "queued", { state, message, finishedAt: h.finished_at ?? now })) settled++;
  }
  return settled;
}

type Started = "queued" | "nothing_to_do" | "waiting" | "failed" | "skipped" | "stopped";

// Thrown inside a host's transaction to undo it: the rollout stopped, or the host was taken by
// another scheduler meanwhile.
class Stopped extends Error {}

// Queues one host's install: its updates (the rollout's, still approved, not held, not installed
// already), pinned to the approved versions and bounded by its open maintenance window, merged
// into an install already pending for the agent (one pending install per agent). A host in an
// open blackout window, or whose pending install cannot take these packages, stays waiting.
async function startHost(deps: RolloutDeps, row: RolloutRow, host: { agentId: string; hostname: string; ring: number }, now: Date): Promise<Started> {
  const { db } = deps;
  const end = async (state: "nothing_to_do" | "failed" | "skipped", message: string): Promise<Started> =>
    (await moveHost(db, row.id, host.agentId, "waiting", { state, message, startedAt: now, finishedAt: now })) ? state : "stopped";
  const wait = async (message: string): Promise<Started> => {
    await moveHost(db, row.id, host.agentId, "waiting", { message });
    return "waiting";
  };
  const agent = await agentForInstall(db, host.agentId);
  if (!agent) return end("skipped", "not installed: the agent was removed");
  if (agent.decommissionedAt) return end("skipped", "not installed: the agent was decommissioned");
  const keys = row.allApproved ? undefined : (row.updateKeys as unknown as RolloutKey[]).filter((k) => k.agentId === host.agentId);
  if (keys && keys.length === 0) return end("nothing_to_do", "none of the rollout's updates is for this host");
  const isHeld = heldBy(await holdsFor(db, [host.agentId]));
  const updates = (await approvedUpdatesOf(db, host.agentId, keys)).filter((u) => !isHeld(u) && !u.installed);
  if (updates.length === 0) return end("nothing_to_do", "nothing left to install: the rollout's updates are installed, no longer approved, or held");
  try {
    await requireSupportedVersion(db, deps.settings.minimumAgentVersion, [host.agentId], "installUpdates");
  } catch (err) {
    if (err instanceof ConnectError) return end("failed", err.rawMessage);
    throw err;
  }
  const windows = (await agentWindowsAt(db, [host.agentId], now)).get(host.agentId);
  if (windows?.blackout) {
    return wait(`waiting: in blackout window "${windows.blackout.window.name}" until ${windows.blackout.until.toISOString()}; queued once it ends`);
  }
  const packages = updates.map((u) => create(PackageRefSchema, { source: u.source, name: u.name, version: u.availableVersion, architecture: u.architecture }));
  const action = { case: "installUpdates" as const, value: boundInstall(create(InstallUpdatesSchema, { packages }), installNotAfter(windows)) };
  let placed;
  try {
    placed = await inTransaction(db, async (tx) => {
      const current = await rolloutStateShared(tx, row.id);
      if (current?.state !== "running" || current.currentRing !== host.ring) throw new Stopped();
      const placed = (await mergeIntoPending(tx, host.agentId, "install_updates", action, 0)) ?? {
        row: await storeCommand(tx, {
          agentId: host.agentId,
          type: "install_updates",
          action: toBinary(CommandSchema, create(CommandSchema, { action })),
          timeoutSeconds: 0,
          createdBy: `rollout ${row.name}`,
          createdByKind: "system",
        }),
        merged: false,
      };
      await linkInstallCommand(tx, updates, placed.row.id);
      const moved = await moveHost(tx, row.id, host.agentId, "waiting", { state: "queued", commandId: placed.row.id, commandMerged: placed.merged, message: "", startedAt: now });
      if (!moved) throw new Stopped();
      await rolloutAudit(tx, row, "RolloutInstall", `command:${placed.row.id}`, {
        agentId: host.agentId,
        hostname: host.hostname,
        ring: row.rings[host.ring]!.name,
        merged: placed.merged,
        packages: updates.map((u) => `${u.source}/${u.name}=${u.availableVersion}`),
      });
      return placed;
    });
  } catch (err) {
    if (err instanceof Stopped) return "stopped";
    // The pending install cannot take these packages (another version of one of them), or the
    // agent left the fleet meanwhile.
    if (err instanceof ConnectError && err.code === Code.FailedPrecondition) return wait(`waiting: ${err.rawMessage}`.slice(0, 500));
    if (err instanceof ConnectError && err.code === Code.NotFound) return end("skipped", "not installed: the agent was removed");
    throw err;
  }
  deps.wakeups.notify(host.agentId);
  deps.events.publish([{ commandId: placed.row.id, agentId: host.agentId }]);
  return "queued";
}

// Looks at the current ring of a running rollout under its lock: halts it when its failures
// make the threshold unreachable, starts its soak when every host ended and the threshold is
// met, and at the soak's end halts (a host that installed is offline) or promotes.
async function judgeRing(deps: RolloutDeps, id: string, now: Date): Promise<"halted" | "promoted" | "finished" | undefined> {
  const { online } = healthCutoffs(now, deps.settings.pollIntervalSeconds);
  return inTransaction(deps.db, async (tx) => {
    const row = await lockRollout(tx, id);
    if (!row || row.state !== "running") return undefined;
    const index = row.currentRing;
    const ring = row.rings[index];
    if (!ring) return undefined;
    if (ring.state === "installing") {
      const c = ringCountsOf(await ringCounts(tx, [id], online), id, index);
      const counted = c.hosts - c.skipped;
      const needed = Math.ceil((ring.thresholdPercent * counted) / 100);
      const open = c.waiting + c.queued;
      if (c.succeeded + c.nothingToDo + open < needed) {
        const failed = await hostsIn(tx, id, index, ["failed"], NAMED_IN_REASON);
        const reason = `ring "${ring.name}" cannot reach its success threshold of ${ring.thresholdPercent}%: ${c.failed} of ${counted} host${counted === 1 ? "" : "s"} failed (${names(
          failed.rows.map((h) => (h.message ? `${h.hostname}: ${h.message}` : h.hostname)),
          failed.total,
        )})`;
        await halt(tx, row, index, reason.slice(0, 2000), now);
        return "halted";
      }
      if (open > 0) return undefined;
      const soakUntil = new Date(now.getTime() + ring.soakSeconds * 1000);
      await updateRing(tx, id, index, { state: "soaking", soakUntil });
      ring.state = "soaking";
      ring.soakUntil = soakUntil;
    }
    if (ring.state !== "soaking" || !ring.soakUntil || ring.soakUntil > now) return undefined;
    const offline = await offlineInstalledHosts(tx, id, index, online, NAMED_IN_REASON + 1);
    if (offline.length > 0) {
      const list = offline.map((h) => `${h.hostname} (last seen ${h.last_seen_at ? h.last_seen_at.toISOString() : "never"})`);
      await halt(tx, row, index, `ring "${ring.name}": ${offline.length > NAMED_IN_REASON ? "more than " + NAMED_IN_REASON + " hosts" : names(list)} went offline after installing`, now);
      return "halted";
    }
    await promote(tx, row, index, "passed", now);
    return row.rings[index + 1] ? "promoted" : "finished";
  });
}

export interface AdvanceOutcome {
  settled: number;
  queued: number;
  halted: string[];
  promoted: string[];
  finished: string[];
}

// The scheduler's job (leader only), once per tick. Idempotent: see the top of this file.
export async function advanceRollouts(deps: RolloutDeps, now: Date): Promise<AdvanceOutcome> {
  const out: AdvanceOutcome = { settled: await settleQueued(deps.db, now), queued: 0, halted: [], promoted: [], finished: [] };
  let budget = INSTALLS_PER_TICK;
  for (const row of await runningRollouts(deps.db, MAX_OPEN_ROLLOUTS)) {
    const index = row.currentRing;
    if (row.rings[index]?.state === "installing" && budget > 0) {
      for (const host of await waitingHosts(deps.db, row.id, index, Math.min(budget, INSTALLS_PER_ROLLOUT_PER_TICK))) {
        budget--;
        const started = await startHost(deps, row, host, now);
        if (started === "stopped") break;
        if (started === "queued") out.queued++;
      }
    }
    const judged = await judgeRing(deps, row.id, now);
    if (judged === "halted") out.halted.push(row.name);
    else if (judged === "promoted") out.promoted.push(row.name);
    else if (judged === "finished") out.finished.push(row.name);
  }
  return out;
}

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, CommandSchema } from "@redflag/gen/command_pb";
import { type AgentStatus, AgentStatusSchema } from "@redflag/gen/common_pb";
import { formatDuration } from "@redflag/common/config-values";
import type { EventBus } from "../cluster/events.ts";
import type { CommandCreator } from "../store/types.ts";
import { newId, sha256 } from "../ids.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { recordAudit } from "../store/audit.ts";
import { storeCommand as createCommand } from "./store-command.ts";
import type { ReleaseRow } from "../store/releases.ts";
import type { Prisma, Tx } from "../store/types.ts";
import {
  agentsTried,
  agentVersions,
  automaticUpgradeCounts,
  type FleetAgent,
  moveUpgrade,
  openUpgrades,
  recordUpgrade,
  selectAgents,
  type UpgradeRow,
  type UpgradeState,
  upgradesToReconcile,
} from "../store/upgrades.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import { releaseForAgent, resolveUpgrade } from "./agent-upgrade.ts";
import { compareVersions } from "./releases.ts";
import { agentsInBlackout } from "./windows.ts";

// The rules of agent upgrades beyond the one command: when an upgrade counts as done, which
// agents a fleet upgrade takes, what an agent below the minimum supported version may still
// do, and how the automatic upgrade paces itself.

export interface UpgradeDeps {
  db: Prisma;
  signer: CommandSigner;
  wakeups: Pick<Wakeups, "notify">;
  events: Pick<EventBus, "publish">;
}

// A fleet upgrade looks at this many agents at most; a bigger fleet is upgraded by group or tag.
export const MAX_FLEET_UPGRADE_AGENTS = 10_000;
// Open upgrades looked at per scheduler tick.
const RECONCILE_BATCH = 500;

// ---- the minimum supported version

// Refuses a command other than update_agent for agents below the minimum supported version
// (setting minimum_agent_version; empty means none): such an agent may be upgraded, nothing else.
export async function requireSupportedVersion(db: Prisma, minimum: string, agentIds: readonly string[], action: Command["action"]["case"]): Promise<void> {
  if (!minimum || action === "updateAgent" || agentIds.length === 0) return;
  const below = (await agentVersions(db, [...agentIds])).filter((a) => isBelow(a.agentVersion, minimum));
  if (below.length === 0) return;
  const a = below[0]!;
  const more = below.length > 1 ? ` (and ${below.length - 1} more agent${below.length > 2 ? "s" : ""})` : "";
  throw new ConnectError(
    `agent ${a.hostname} runs ${a.agentVersion}, below the minimum supported ${minimum}: upgrade it first (\`redflag agents upgrade ${a.id}\`)${more}`,
    Code.FailedPrecondition,
  );
}

// Whether an agent reporting this version needs an upgrade before anything else.
export function isBelow(agentVersion: string, minimum: string): boolean {
  return minimum !== "" && compareVersions(agentVersion, minimum) < 0;
}

// ---- queueing

interface QueueUpgrade {
  agentId: string;
  // Empty: the newest release for the agent's platform.
  version: string;
  createdBy: string;
  createdByKind: CommandCreator;
  rolloutId?: string | undefined;
  automatic?: boolean;
}

// Queues update_agent for one agent from the registry and records the upgrade.
export async function queueAgentUpgrade(deps: UpgradeDeps, input: QueueUpgrade): Promise<UpgradeRow> {
  const { action, release } = await resolveUpgrade(deps.db, deps.signer, input.agentId, input.version);
  const bytes = toBinary(CommandSchema, create(CommandSchema, { action: { case: "updateAgent", value: action } }));
  const row = await createCommand(deps.db, { agentId: input.agentId, type: "update_agent", action: bytes, timeoutSeconds: 0, createdBy: input.createdBy, createdByKind: input.createdByKind });
  const upgrade = await noteUpgrade(deps.db, { ...input, commandId: row.id, release });
  deps.wakeups.notify(input.agentId);
  deps.events.publish([{ commandId: row.id, agentId: input.agentId }]);
  return upgrade;
}

// Records the upgrade an update_agent command makes, from the version the agent reports now.
export async function noteUpgrade(
  db: Prisma | Tx,
  input: { agentId: string; commandId: string; release: ReleaseRow; createdBy: string; rolloutId?: string | undefined; automatic?: boolean | undefined },
): Promise<UpgradeRow> {
  const [agent] = await agentVersions(db, [input.agentId]);
  return recordUpgrade(db, {
    agentId: input.agentId,
    commandId: input.commandId,
    fromVersion: agent?.agentVersion ?? "",
    toVersion: input.release.version,
    platform: input.release.platform,
    rolloutId: input.rolloutId,
    automatic: input.automatic ?? false,
    createdBy: input.createdBy,
  });
}

// ---- progress

export interface UpgradeFacts {
  state: string;
  fromVersion: string;
  toVersion: string;
  installedAt: Date | null;
  // status: the last poll's AgentStatus, serialized (a release on trial, an abandoned upgrade).
  agent: { agentVersion: string; lastSeenAt: Date | null; status?: Uint8Array | null };
  // Null once the command was removed.
  command: { state: string; sentAt: Date | null; result: { message: string } | null } | null;
}

export interface UpgradeChange {
  state: UpgradeState;
  message: string;
  installedAt?: Date;
  finishedAt?: Date;
}

const ENDED = new Set(["failed", "rejected", "timed_out", "cancelled"]);
const short = (text: string) => (text.length > 300 ? `${text.slice(0, 300)}…` : text);

// Where an open upgrade goes next, or undefined when it stays. It succeeds only when the agent
// reports the new version; it fails when its command ends without success or the new version is
// not reported within `timeoutSeconds` of the delivery; it is rolled back when the agent polls
// again after the install (seen at installedAt) reporting another version.
export function nextUpgradeState(u: UpgradeFacts, now: Date, timeoutSeconds: number): UpgradeChange | undefined {
  const reports = u.agent.agentVersion;
  const status = lastStatus(u.agent.status);
  // The new release on trial polls before it has proved itself (the release before it switches
  // back unless the trial completes): that poll says neither success nor rollback.
  const onTrial = status?.upgradeTrial === true;
  const seenAfterInstall = !onTrial && u.installedAt !== null && u.agent.lastSeenAt !== null && u.agent.lastSeenAt > u.installedAt;
  // A reinstall of the version an agent already runs counts once the agent came back with it.
  if (reports === u.toVersion && (u.fromVersion !== u.toVersion || seenAfterInstall)) {
    return { state: "succeeded", message: `the agent reports ${u.toVersion}`, finishedAt: now };
  }
  const failed = (message: string): UpgradeChange => ({ state: "failed", message: short(message), finishedAt: now });
  const cmd = u.command;
  if (!cmd) return failed(`its update_agent command was removed before the agent reported ${u.toVersion}`);
  if (ENDED.has(cmd.state)) {
    const why = cmd.result?.message ? `: ${cmd.result.message}` : "";
    return failed(`update_agent ${cmd.state.replace("_", " ")}${why}`);
  }
  if (cmd.state === "pending") return undefined;
  if (cmd.state === "succeeded") {
    if (!u.installedAt) return { state: "installing", message: `installed ${u.toVersion}; waiting for the agent to restart and report it`, installedAt: now };
    if (seenAfterInstall) {
      const failure = status?.upgradeFailure?.version === u.toVersion ? `: ${status.upgradeFailure.reason}` : "";
      return { state: "rolled_back", message: short(`the agent installed ${u.toVersion} but came back reporting ${reports}: the upgrade was rolled back${failure}`), finishedAt: now };
    }
  }
  const since = cmd.sentAt ?? u.installedAt;
  if (since && now.getTime() - since.getTime() > timeoutSeconds * 1000) {
    return failed(`the agent did not report ${u.toVersion} within ${formatDuration(timeoutSeconds)} of receiving the upgrade (it reports ${reports})`);
  }
  if (u.state === "queued") return { state: "installing", message: `the agent received the upgrade to ${u.toVersion}` };
  return undefined;
}

function lastStatus(bytes: Uint8Array | null | undefined): AgentStatus | undefined {
  if (!bytes) return undefined;
  try {
    return fromBinary(AgentStatusSchema, bytes);
  } catch {
    return undefined;
  }
}

// Moves every open upgrade on; returns those that ended.
export async function reconcileUpgrades(db: Prisma, now: Date, timeoutSeconds: number): Promise<{ id: string; hostname: string; state: UpgradeState; automatic: boolean }[]> {
  const ended = [];
  for (const u of await upgradesToReconcile(db, RECONCILE_BATCH)) {
    const change = nextUpgradeState(u, now, timeoutSeconds);
    if (!change) continue;
    const moved = await moveUpgrade(db, u.id, u.state, change, now);
    if (moved && change.finishedAt) ended.push({ id: u.id, hostname: u.agent.hostname, state: change.state, automatic: u.automatic });
  }
  return ended;
}

// ---- fleet upgrades

export type FleetSelection = { all: true } | { group: string } | { tag: string };

export interface FleetUpgradeRequest {
  selection: FleetSelection;
  // 1..100, or 0 for all.
  percent: number;
  version: string;
  createdBy: string;
  createdByKind: CommandCreator;
}

export interface FleetUpgradeOutcome {
  rolloutId: string;
  selected: number;
  chosen: number;
  upgrades: UpgradeRow[];
  skipped: { agentId: string; hostname: string; reason: string }[];
}

// The given share of the agents, rounded up, ordered by a hash of their IDs: the same agents
// every time, and those of a smaller share are among those of a bigger one.
export function choosePercent<T extends { id: string }>(agents: readonly T[], percent: number): T[] {
  if (percent <= 0 || percent >= 100) return [...agents];
  const count = Math.ceil((agents.length * percent) / 100);
  return agents
    .map((agent) => ({ agent, key: sha256(`redflag.fleet-upgrade\0${agent.id}`).toString("hex") }))
    .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0))
    .slice(0, count)
    .map((x) => x.agent);
}

// What release each agent gets (releases looked up once per OS and CPU), or why none.
function releaseFinder(db: Prisma, version: string) {
  const cache = new Map<string, Promise<{ release: ReleaseRow } | { missing: string }>>();
  return (agent: FleetAgent) => {
    const key = `${agent.osFamily}\0${agent.arch}`;
    if (!cache.has(key)) cache.set(key, releaseForAgent(db, agent, version));
    return cache.get(key)!;
  };
}

export async function startFleetUpgrade(deps: UpgradeDeps, req: FleetUpgradeRequest): Promise<FleetUpgradeOutcome> {
  const filter = "group" in req.selection ? { group: req.selection.group } : "tag" in req.selection ? { tag: req.selection.tag } : {};
  const selected = await selectAgents(deps.db, filter, MAX_FLEET_UPGRADE_AGENTS);
  if (selected.length > MAX_FLEET_UPGRADE_AGENTS) {
    throw new ConnectError(`the selection matches more than ${MAX_FLEET_UPGRADE_AGENTS} agents; upgrade a group or a tag at a time`, Code.FailedPrecondition);
  }
  const chosen = choosePercent(selected, req.percent);
  const open = await openUpgrades(deps.db, chosen.map((a) => a.id));
  const frozen = await agentsInBlackout(deps.db, chosen.map((a) => a.id), new Date());
  const find = releaseFinder(deps.db, req.version);
  const rolloutId = newId();
  const outcome: FleetUpgradeOutcome = { rolloutId, selected: selected.length, chosen: chosen.length, upgrades: [], skipped: [] };
  const skip = (agent: FleetAgent, reason: string) => outcome.skipped.push({ agentId: agent.id, hostname: agent.hostname, reason });
  for (const agent of chosen) {
    const found = await find(agent);
    if ("missing" in found) {
      skip(agent, found.missing);
      continue;
    }
    const target = found.release.version;
    const inProgress = open.get(agent.id);
    if (inProgress !== undefined) skip(agent, `an upgrade to ${inProgress} is in progress`);
    else if (frozen.has(agent.id)) skip(agent, frozen.get(agent.id)!);
    else if (agent.agentVersion === target) skip(agent, `already runs ${target}`);
    else if (compareVersions(agent.agentVersion, target) > 0) skip(agent, `runs ${agent.agentVersion}, newer than ${target} (a fleet upgrade never downgrades)`);
    else {
      try {
        outcome.upgrades.push(
          await queueAgentUpgrade(deps, { agentId: agent.id, version: target, createdBy: req.createdBy, createdByKind: req.createdByKind, rolloutId }),
        );
      } catch (err) {
        // Decommissioned or removed since it was selected, or its release deleted meanwhile:
        // that agent is skipped, the others still get theirs.
        const e = ConnectError.from(err);
        if (e.code !== Code.FailedPrecondition && e.code !== Code.NotFound) throw err;
        skip(agent, e.rawMessage);
      }
    }
  }
  return outcome;
}

// ---- the automatic upgrade

export interface AutoUpgradeLimits {
  // Open automatic upgrades at most (0: off).
  batch: number;
  // Failed or rolled-back automatic upgrades to the newest releases after which it stops.
  maxFailures: number;
  // Only agents seen this recently are upgraded (an agent that does not poll would hold a slot).
  seenWithinSeconds: number;
}

export type AutoUpgradeOutcome = { kind: "off" } | { kind: "halted"; failed: number } | { kind: "ran"; queued: UpgradeRow[] };

// Queues upgrades of agents older than the newest release for their platform, never more than
// `batch` open at once, each agent and version once; it stops while more than `maxFailures`
// of them to the current newest releases failed (a newer release starts the count again).
export async function autoUpgrade(deps: UpgradeDeps, limits: AutoUpgradeLimits, now: Date): Promise<AutoUpgradeOutcome> {
  if (limits.batch <= 0) return { kind: "off" };
  const agents = (await selectAgents(deps.db, {}, MAX_FLEET_UPGRADE_AGENTS)).slice(0, MAX_FLEET_UPGRADE_AGENTS);
  const find = releaseFinder(deps.db, "");
  const behind: { agent: FleetAgent; version: string }[] = [];
  for (const agent of agents) {
    const found = await find(agent);
    if ("release" in found && compareVersions(agent.agentVersion, found.release.version) < 0) behind.push({ agent, version: found.release.version });
  }
  const versions = [...new Set(behind.map((b) => b.version))];
  if (versions.length === 0) return { kind: "ran", queued: [] };
  const counts = await automaticUpgradeCounts(deps.db, versions);
  if (counts.failed > limits.maxFailures) return { kind: "halted", failed: counts.failed };
  const free = limits.batch - counts.open;
  if (free <= 0) return { kind: "ran", queued: [] };
  // An agent in a blackout window waits until it closes (it is not "tried").
  const frozen = await agentsInBlackout(deps.db, behind.map((b) => b.agent.id), now);
  const next = nextAutomatic(behind.filter((b) => !frozen.has(b.agent.id)), {
    open: await openUpgrades(deps.db),
    tried: await agentsTried(deps.db, versions),
    seenAfter: new Date(now.getTime() - limits.seenWithinSeconds * 1000),
    free,
  });
  const queued: UpgradeRow[] = [];
  for (const { agent, version } of next) {
    const upgrade = await queueAgentUpgrade(deps, { agentId: agent.id, version, createdBy: "system", createdByKind: "system", automatic: true });
    await recordAudit(deps.db, {
      actorKind: "system",
      actorId: "",
      actorName: "automatic upgrade",
      action: "scheduler/AutoUpgrade",
      target: `agent:${agent.id}`,
      remoteAddr: "",
      after: { commandId: upgrade.commandId, fromVersion: upgrade.fromVersion, toVersion: upgrade.toVersion },
    });
    queued.push(upgrade);
  }
  return { kind: "ran", queued };
}

// The agents the automatic upgrade takes next, at most `free`, in the order given (agent ID
// order, so every tick takes the same ones): not those with an upgrade open, not those already
// tried on that version, and only those seen since `seenAfter` (one that does not poll would
// hold a slot until it times out).
export function nextAutomatic<T extends { agent: Pick<FleetAgent, "id" | "lastSeenAt">; version: string }>(
  behind: readonly T[],
  opts: { open: ReadonlyMap<string, string>; tried: ReadonlySet<string>; seenAfter: Date; free: number },
): T[] {
  return behind
    .filter(({ agent, version }) => !opts.open.has(agent.id) && !opts.tried.has(`${agent.id}\0${version}`) && agent.lastSeenAt !== null && agent.lastSeenAt >= opts.seenAfter)
    .slice(0, Math.max(0, opts.free));
}

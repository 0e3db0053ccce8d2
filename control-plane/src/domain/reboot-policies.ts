import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandResultSchema, CommandSchema, PackageResultState, RebootSchema } from "@redflag/gen/command_pb";
import type { EventBus } from "../cluster/events.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import { recordAudit } from "../store/audit.ts";
import { lockAgentQueue, lockPendingCommands } from "../store/commands.ts";
import { inTransaction } from "../store/db.ts";
import { enqueueNotification } from "../store/notifications.ts";
import {
  clearRebootOverdue,
  commandsToFollow,
  createRebootPolicy,
  deleteRebootPolicy,
  enabledRebootPolicies,
  flagRebootOverdue,
  getRebootPolicy,
  markAgentInstallsFollowedUp,
  markFollowedUp,
  MAX_REBOOT_POLICIES,
  updateRebootPolicy,
  type FinishedCommand,
  type RebootPolicyInput,
  type RebootPolicyRow,
  type RebootPolicyWriteOutcome,
} from "../store/reboot-policies.ts";
import type { Prisma } from "../store/types.ts";
import { enabledWindows } from "../store/windows.ts";
import type { AuditHook } from "./audit.ts";
import type { Settings } from "../settings.ts";
import { storeCommand } from "./store-command.ts";
import { isBelow } from "./upgrades.ts";
import { type AgentLabels, windowsAt } from "./windows.ts";

// Reboot policies: what happens after an install, per group, tag or agent. The leader follows
// every finished install once (commands.followed_up_at): the agent's policy decides whether a
// reboot is queued (created_by "reboot-policy:<name>", audited), now or when a maintenance window
// opens; a blackout window always makes it wait. Then it follows every scheduled reboot: a host
// that has not polled by its reboot time plus the policy's return timeout is flagged once
// (agents.reboot_overdue_since, notification reboot_overdue), and unflagged when it polls again.
//
// When several enabled policies apply to an agent, the most specific wins: one naming the
// agent's ID, then one naming one of its tags, then its group, then one for all agents; among
// equals, the first by name.

export const DEFAULT_RETURN_TIMEOUT_SECONDS = 15 * 60;

function specificity(p: RebootPolicyRow, agent: AgentLabels): number {
  if (p.agentIds.includes(agent.id)) return 4;
  if (agent.tags.some((t) => p.tags.includes(t))) return 3;
  if (agent.group !== "" && p.groups.includes(agent.group)) return 2;
  if (p.allAgents) return 1;
  return 0;
}

// The policy that applies to this agent, of the enabled ones (sorted by name); undefined: none.
export function policyFor(policies: readonly RebootPolicyRow[], agent: AgentLabels): RebootPolicyRow | undefined {
  let best: RebootPolicyRow | undefined;
  let rank = 0;
  for (const p of policies) {
    if (!p.enabled) continue;
    const r = specificity(p, agent);
    if (r > rank || (r === rank && r > 0 && best && p.name < best.name)) {
      best = p;
      rank = r;
    }
  }
  return best;
}

// ---- changes, each with its audit entry in one transaction

function written(outcome: RebootPolicyWriteOutcome, name: string, id?: string): RebootPolicyRow {
  if ("policy" in outcome) return outcome.policy;
  if ("missing" in outcome) throw new ConnectError(`reboot policy ${id} does not exist`, Code.NotFound);
  if ("missingAgents" in outcome) throw new ConnectError(`agent ${outcome.missingAgents[0]} does not exist${outcome.missingAgents.length > 1 ? ` (nor ${outcome.missingAgents.length - 1} more)` : ""}`, Code.NotFound);
  if ("nameTaken" in outcome) throw new ConnectError(`a reboot policy named "${name}" already exists; pick another name or update that one`, Code.AlreadyExists);
  throw new ConnectError(`there are ${outcome.full} reboot policies, the most allowed (${MAX_REBOOT_POLICIES}); delete one first`, Code.ResourceExhausted);
}

export async function addRebootPolicy(db: Prisma, input: RebootPolicyInput, createdBy: string, record: AuditHook<RebootPolicyRow>): Promise<RebootPolicyRow> {
  return inTransaction(db, async (tx) => {
    const row = written(await createRebootPolicy(tx, { ...input, createdBy }), input.name);
    await record(tx, row);
    return row;
  });
}

export async function changeRebootPolicy(db: Prisma, id: string, input: RebootPolicyInput, now: Date, record: AuditHook<{ before: RebootPolicyRow; after: RebootPolicyRow }>): Promise<RebootPolicyRow> {
  return inTransaction(db, async (tx) => {
    const before = await getRebootPolicy(tx, id);
    const after = written(await updateRebootPolicy(tx, id, input, now), input.name, id);
    await record(tx, { before: before!, after });
    return after;
  });
}

export async function removeRebootPolicy(db: Prisma, id: string, record: AuditHook<RebootPolicyRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await getRebootPolicy(tx, id);
    if (!row) throw new ConnectError(`reboot policy ${id} does not exist`, Code.NotFound);
    await deleteRebootPolicy(tx, id);
    await record(tx, row);
  });
}

// ---- the leader's jobs

export interface RebootJobDeps {
  db: Prisma;
  wakeups: Pick<Wakeups, "notify">;
  events: Pick<EventBus, "publish">;
  // An agent below the minimum supported version may only be upgraded: its reboot waits.
  settings?: Pick<Settings, "minimumAgentVersion">;
}

export interface FollowLimits {
  // Commands read per page, and pages per run (a run walks past those still waiting).
  page: number;
  maxPages: number;
}

export const FOLLOW_LIMITS: FollowLimits = { page: 200, maxPages: 10 };

export interface PolicyReboot {
  agentId: string;
  policyName: string;
  installCommandId: string;
  // The reboot queued; undefined when one was already pending (it covers this install too).
  commandId: string | undefined;
}

const decode = (bytes: Uint8Array | null) => (bytes ? fromBinary(CommandResultSchema, bytes) : undefined);

// Whether an install's result says it installed at least one package.
function installedSomething(c: FinishedCommand): boolean {
  const result = decode(c.result);
  const detail = result?.detail;
  return detail?.case === "installUpdates" && detail.value.packages.some((p) => p.state === PackageResultState.INSTALLED);
}

// Walks finished installs not followed up yet, oldest first, in pages.
async function* finished(db: Prisma, type: "install_updates" | "reboot", states: Parameters<typeof commandsToFollow>[2], limits: FollowLimits) {
  let after: { finishedAt: Date; id: string } | undefined;
  for (let page = 0; page < limits.maxPages; page++) {
    const rows = await commandsToFollow(db, type, states, after, limits.page);
    for (const r of rows) yield r;
    if (rows.length < limits.page) return;
    const last = rows[rows.length - 1]!;
    after = { finishedAt: last.finishedAt, id: last.id };
  }
}

// The scheduler's job after installs: each finished install is decided once by its agent's
// policy. NEVER, no policy, or nothing installed (ALWAYS) / nothing installed and no reboot
// required (WHEN_REQUIRED): decided, nothing queued. Otherwise a reboot is queued now, unless a
// blackout window is open for the host or (window_only) no maintenance window is: then the
// install stays undecided and is looked at again on the next run. A reboot already pending for
// the agent covers it. One reboot decides every finished install of the agent.
export async function rebootAfterInstalls(deps: RebootJobDeps, now: Date, limits: FollowLimits = FOLLOW_LIMITS): Promise<{ queued: PolicyReboot[]; waiting: number }> {
  const { db } = deps;
  const queued: PolicyReboot[] = [];
  let waiting = 0;
  const policies = await enabledRebootPolicies(db);
  const windows = policies.length > 0 ? await enabledWindows(db) : [];
  const rebooted = new Set<string>();
  // Installs decided without a reboot, marked together.
  const decided: string[] = [];
  for await (const install of finished(db, "install_updates", ["succeeded", "failed"], limits)) {
    const agent = install.agent;
    const policy = agent.decommissionedAt || rebooted.has(agent.id) ? undefined : policyFor(policies, agent);
    const wanted =
      policy !== undefined &&
      (policy.mode === "always" ? installedSomething(install) : policy.mode === "when_required" ? installedSomething(install) || agent.rebootRequired : false);
    if (!policy || !wanted) {
      decided.push(install.id);
      continue;
    }
    const at = windowsAt(windows, agent, now);
    if (at.blackout || (policy.windowOnly && !at.maintenance) || isBelow(agent.agentVersion, deps.settings?.minimumAgentVersion ?? "")) {
      waiting++;
      continue;
    }
    const action = create(RebootSchema, {
      delaySeconds: 0,
      message: `RedFlag: reboot after updates (policy ${policy.name})`,
      force: policy.mode === "always",
      preHook: policy.preHook,
      postHook: policy.postHook,
      hookTimeoutSeconds: policy.hookTimeoutSeconds,
    });
    const commandId = await inTransaction(db, async (tx) => {
      await lockAgentQueue(tx, agent.id);
      const pending = await lockPendingCommands(tx, agent.id, "reboot", 1);
      await markAgentInstallsFollowedUp(tx, agent.id, now);
      if (pending.length > 0) return undefined;
      const row = await storeCommand(tx, {
        agentId: agent.id,
        type: "reboot",
        action: toBinary(CommandSchema, create(CommandSchema, { action: { case: "reboot", value: action } })),
        // A pre-hook may run up to its limit before the restart is scheduled.
        timeoutSeconds: policy.preHook ? Math.max(600, policy.hookTimeoutSeconds + 120) : 0,
        createdBy: `reboot-policy:${policy.name}`,
        createdByKind: "system",
      });
      await recordAudit(tx, {
        actorKind: "reboot_policy",
        actorId: policy.id,
        actorName: policy.name,
        action: "scheduler/RebootAfterInstall",
        target: `agent:${agent.id}`,
        remoteAddr: "",
        after: { commandId: row.id, installCommandId: install.id, hostname: agent.hostname, mode: policy.mode, force: action.force, preHook: policy.preHook, postHook: policy.postHook },
      });
      return row.id;
    });
    rebooted.add(agent.id);
    if (commandId) {
      deps.wakeups.notify(agent.id);
      deps.events.publish([{ commandId, agentId: agent.id }]);
    }
    queued.push({ agentId: agent.id, policyName: policy.name, installCommandId: install.id, commandId });
  }
  await markFollowedUp(db, decided, now);
  return { queued, waiting };
}

// The scheduler's job after reboots: a reboot the agent scheduled (RebootResult.scheduled) is
// followed until the agent polls after its reboot time; if it has not by then plus its policy's
// return timeout (DEFAULT_RETURN_TIMEOUT_SECONDS without one), the agent is flagged and
// reboot_overdue notified, once. Flags of agents that have polled since are cleared first.
export async function followReboots(db: Prisma, now: Date, limits: FollowLimits = FOLLOW_LIMITS): Promise<{ overdue: string[]; back: number; cleared: number }> {
  const cleared = (await clearRebootOverdue(db, 1000)).length;
  const policies = await enabledRebootPolicies(db);
  const overdue: string[] = [];
  let back = 0;
  // Reboots with nothing (more) to watch, marked together.
  const done: string[] = [];
  for await (const reboot of finished(db, "reboot", ["succeeded"], limits)) {
    const detail = decode(reboot.result)?.detail;
    const agent = reboot.agent;
    if (detail?.case !== "reboot" || !detail.value.scheduled || !detail.value.rebootTime || agent.decommissionedAt) {
      done.push(reboot.id);
      continue;
    }
    const rebootTime = timestampDate(detail.value.rebootTime);
    if (agent.lastSeenAt && agent.lastSeenAt > rebootTime) {
      back++;
      done.push(reboot.id);
      continue;
    }
    const timeout = policyFor(policies, agent)?.returnTimeoutSeconds ?? DEFAULT_RETURN_TIMEOUT_SECONDS;
    const deadline = new Date(rebootTime.getTime() + timeout * 1000);
    if (now < deadline) continue;
    await inTransaction(db, async (tx) => {
      await markFollowedUp(tx, [reboot.id], now);
      if (await flagRebootOverdue(tx, agent.id, deadline)) {
        const minutes = Math.round(timeout / 60);
        await enqueueNotification(tx, {
          kind: "reboot_overdue",
          severity: "warning",
          agentId: agent.id,
          text: `has not polled since its reboot at ${rebootTime.toISOString()} (allowed ${minutes} minute${minutes === 1 ? "" : "s"} to come back)`,
        });
        overdue.push(agent.id);
      }
    });
  }
  await markFollowedUp(db, done, now);
  return { overdue, back, cleared };
}

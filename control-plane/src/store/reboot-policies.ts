import { newId } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import type { Prisma, Tx } from "./types.ts";

export type RebootMode = "never" | "when_required" | "always";

export interface RebootPolicyInput {
  name: string;
  allAgents: boolean;
  groups: string[];
  tags: string[];
  agentIds: string[];
  mode: RebootMode;
  windowOnly: boolean;
  preHook: string;
  postHook: string;
  hookTimeoutSeconds: number;
  returnTimeoutSeconds: number;
  enabled: boolean;
}

export interface RebootPolicyRow extends RebootPolicyInput {
  id: string;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

// At most this many: every finished install is matched against the enabled ones.
export const MAX_REBOOT_POLICIES = 200;

export type RebootPolicyWriteOutcome = { policy: RebootPolicyRow } | { missingAgents: string[] } | { nameTaken: true } | { full: number } | { missing: true };

export function listRebootPolicies(db: Prisma | Tx): Promise<RebootPolicyRow[]> {
  return db.rebootPolicy.findMany({ orderBy: { name: "asc" } });
}

export function enabledRebootPolicies(db: Prisma | Tx): Promise<RebootPolicyRow[]> {
  return db.rebootPolicy.findMany({ where: { enabled: true }, orderBy: { name: "asc" } });
}

export function getRebootPolicy(db: Prisma | Tx, id: string): Promise<RebootPolicyRow | null> {
  return db.rebootPolicy.findUnique({ where: { id } });
}

async function missingAgents(tx: Tx, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const found = new Set((await tx.agent.findMany({ where: { id: { in: ids } }, select: { id: true } })).map((a) => a.id));
  return ids.filter((id) => !found.has(id));
}

async function write(fn: () => Promise<RebootPolicyRow>): Promise<RebootPolicyWriteOutcome> {
  try {
    return { policy: await fn() };
  } catch (err) {
    if (isUniqueViolation(err)) return { nameTaken: true };
    throw err;
  }
}

// Adds a policy unless an agent it names is unknown, its name is taken, or there are already
// MAX_REBOOT_POLICIES (counted under a transaction-scoped advisory lock).
export async function createRebootPolicy(tx: Tx, input: RebootPolicyInput & { createdBy: string }): Promise<RebootPolicyWriteOutcome> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_reboot_policies'))`;
  const missing = await missingAgents(tx, input.agentIds);
  if (missing.length > 0) return { missingAgents: missing };
  if (await tx.rebootPolicy.findUnique({ where: { name: input.name }, select: { id: true } })) return { nameTaken: true };
  const count = await tx.rebootPolicy.count();
  if (count >= MAX_REBOOT_POLICIES) return { full: count };
  return write(() => tx.rebootPolicy.create({ data: { id: newId(), ...input } }));
}

export async function updateRebootPolicy(tx: Tx, id: string, input: RebootPolicyInput, now: Date): Promise<RebootPolicyWriteOutcome> {
  if (!(await getRebootPolicy(tx, id))) return { missing: true };
  const missing = await missingAgents(tx, input.agentIds);
  if (missing.length > 0) return { missingAgents: missing };
  const clash = await tx.rebootPolicy.findUnique({ where: { name: input.name }, select: { id: true } });
  if (clash && clash.id !== id) return { nameTaken: true };
  return write(() => tx.rebootPolicy.update({ where: { id }, data: { ...input, updatedAt: now } }));
}

export async function deleteRebootPolicy(tx: Tx, id: string): Promise<void> {
  await tx.rebootPolicy.deleteMany({ where: { id } });
}

// ---- the leader's follow-ups of finished commands

export interface FinishedCommand {
  id: string;
  agentId: string;
  state: string;
  finishedAt: Date;
  // Serialized redflag.v1.CommandResult, when the agent sent one.
  result: Uint8Array | null;
  agent: { id: string; hostname: string; group: string; tags: string[]; agentVersion: string; rebootRequired: boolean; lastSeenAt: Date | null; decommissionedAt: Date | null };
}

// Finished commands of this type (in these states) not followed up yet, oldest first, after the
// cursor (finish time, ID). At most `limit`.
export async function commandsToFollow(
  db: Prisma | Tx,
  type: "install_updates" | "reboot",
  states: ("succeeded" | "failed" | "rejected" | "timed_out" | "cancelled")[],
  after: { finishedAt: Date; id: string } | undefined,
  limit: number,
): Promise<FinishedCommand[]> {
  const rows = await db.command.findMany({
    where: {
      type,
      followedUpAt: null,
      finishedAt: { not: null },
      state: { in: states },
      ...(after ? { OR: [{ finishedAt: { gt: after.finishedAt } }, { finishedAt: after.finishedAt, id: { gt: after.id } }] } : {}),
    },
    orderBy: [{ finishedAt: "asc" }, { id: "asc" }],
    take: limit,
    select: {
      id: true,
      agentId: true,
      state: true,
      finishedAt: true,
      result: { select: { result: true } },
      agent: { select: { id: true, hostname: true, group: true, tags: true, agentVersion: true, rebootRequired: true, lastSeenAt: true, decommissionedAt: true } },
    },
  });
  return rows.map((r) => ({ ...r, finishedAt: r.finishedAt!, result: r.result?.result ?? null }));
}

// Marks commands as followed up (each is decided once).
export async function markFollowedUp(db: Prisma | Tx, ids: readonly string[], now: Date): Promise<void> {
  for (let i = 0; i < ids.length; i += 1000) {
    await db.command.updateMany({ where: { id: { in: ids.slice(i, i + 1000) }, followedUpAt: null }, data: { followedUpAt: now } });
  }
}

// Every finished install of this agent not followed up yet: one reboot covers them all.
export async function markAgentInstallsFollowedUp(tx: Tx, agentId: string, now: Date): Promise<void> {
  await tx.command.updateMany({ where: { agentId, type: "install_updates", followedUpAt: null, finishedAt: { not: null } }, data: { followedUpAt: now } });
}

// Flags an agent whose reboot is overdue, unless it already is; true when this flagged it.
export async function flagRebootOverdue(tx: Tx, agentId: string, since: Date): Promise<boolean> {
  return (await tx.agent.updateMany({ where: { id: agentId, rebootOverdueSince: null }, data: { rebootOverdueSince: since } })).count > 0;
}

// Clears the flag of agents that have polled since it was set (or were decommissioned).
export async function clearRebootOverdue(db: Prisma | Tx, limit: number): Promise<{ id: string }[]> {
  return db.$queryRaw<{ id: string }[]>`
    UPDATE agents SET reboot_overdue_since = NULL
     WHERE id IN (SELECT id FROM agents
                   WHERE reboot_overdue_since IS NOT NULL AND (last_seen_at > reboot_overdue_since OR decommissioned_at IS NOT NULL)
                   LIMIT ${limit} FOR UPDATE SKIP LOCKED)
    RETURNING id::text`;
}

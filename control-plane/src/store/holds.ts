import { MAX_HOLDS_PER_SCOPE } from "@redflag/common/holds";
import { newId } from "../ids.ts";
import type { Prisma, Tx } from "./types.ts";

export interface HoldRow {
  id: string;
  agentId: string | null;
  source: string;
  name: string;
  reason: string;
  createdBy: string;
  createdAt: Date;
}

// The holds that apply to these agents: fleet-wide ones and each agent's own.
export function holdsFor(db: Prisma | Tx, agentIds: string[]): Promise<HoldRow[]> {
  return db.hold.findMany({ where: { OR: [{ agentId: null }, { agentId: { in: agentIds } }] } });
}

// Every hold, or the fleet-wide ones plus one agent's, oldest first.
export function listHolds(db: Prisma, agentId: string | undefined): Promise<HoldRow[]> {
  return db.hold.findMany({ where: agentId ? { OR: [{ agentId: null }, { agentId }] } : {}, orderBy: { createdAt: "asc" } });
}

export function getHold(db: Prisma | Tx, id: string): Promise<HoldRow | null> {
  return db.hold.findUnique({ where: { id } });
}

export async function deleteHold(db: Prisma | Tx, id: string): Promise<void> {
  await db.hold.deleteMany({ where: { id } });
}

// Every hold, oldest first (what agents' configs are built from).
export function allHolds(db: Prisma): Promise<HoldRow[]> {
  return db.hold.findMany({ orderBy: { createdAt: "asc" } });
}

export type CreateHoldOutcome = { hold: HoldRow } | { missingAgent: true } | { full: number };

// Adds a hold unless the agent is unknown or its scope (fleet-wide, or one agent) already has
// MAX_HOLDS_PER_SCOPE (then `full` is how many it has): every hold is sent to agents in their
// config and checked against every package an install touches. Runs inside the caller's
// transaction (inTransaction): the count and the insert hold a transaction-scoped advisory lock
// until it ends, so concurrent calls cannot overshoot.
export async function createHold(
  tx: Tx,
  input: { agentId: string | null; source: string; name: string; reason: string; createdBy: string },
): Promise<CreateHoldOutcome> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_holds'))`;
  if (input.agentId && !(await tx.agent.findUnique({ where: { id: input.agentId }, select: { id: true } }))) return { missingAgent: true };
  const count = await tx.hold.count({ where: { agentId: input.agentId } });
  if (count >= MAX_HOLDS_PER_SCOPE) return { full: count };
  return { hold: await tx.hold.create({ data: { id: newId(), ...input } }) };
}

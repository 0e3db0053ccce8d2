import { Code, ConnectError } from "@connectrpc/connect";
import { MAX_HOLDS_PER_SCOPE } from "@redflag/common/holds";
import { newId } from "../ids.ts";
import type { Prisma } from "./types.ts";

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
export function holdsFor(db: Prisma, agentIds: string[]): Promise<HoldRow[]> {
  return db.hold.findMany({ where: { OR: [{ agentId: null }, { agentId: { in: agentIds } }] } });
}

// Every hold, or the fleet-wide ones plus one agent's, oldest first.
export function listHolds(db: Prisma, agentId: string | undefined): Promise<HoldRow[]> {
  return db.hold.findMany({ where: agentId ? { OR: [{ agentId: null }, { agentId }] } : {}, orderBy: { createdAt: "asc" } });
}

export function getHold(db: Prisma, id: string): Promise<HoldRow | null> {
  return db.hold.findUnique({ where: { id } });
}

export async function deleteHold(db: Prisma, id: string): Promise<void> {
  await db.hold.deleteMany({ where: { id } });
}

// Adds a hold unless its scope (fleet-wide, or one agent) already has MAX_HOLDS_PER_SCOPE: every
// hold is sent to agents in their config and checked against every package an install touches.
// The count and the insert run under one transaction-scoped advisory lock, so concurrent calls
// cannot overshoot.
export async function createHold(db: Prisma, input: { agentId: string | null; source: string; name: string; reason: string; createdBy: string }): Promise<HoldRow> {
  return db.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_holds'))`;
    if (input.agentId && !(await tx.agent.findUnique({ where: { id: input.agentId }, select: { id: true } }))) {
      throw new ConnectError(`agent ${input.agentId} does not exist`, Code.NotFound);
    }
    const count = await tx.hold.count({ where: { agentId: input.agentId } });
    if (count >= MAX_HOLDS_PER_SCOPE) {
      const scope = input.agentId ? `agent ${input.agentId} has` : "the fleet has";
      throw new ConnectError(
        `${scope} ${count} holds, the most allowed (${MAX_HOLDS_PER_SCOPE}); remove one first, or hold a pattern ("linux-image-*") instead of single packages`,
        Code.ResourceExhausted,
      );
    }
    return tx.hold.create({ data: { id: newId(), ...input } });
  });
}

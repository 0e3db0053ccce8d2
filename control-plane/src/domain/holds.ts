import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { compileHolds, MAX_HOLDS_PER_SCOPE } from "@redflag/common/holds";
import { callerName } from "../services/audit.ts";
import { inTransaction } from "../store/db.ts";
import { createHold, deleteHold, getHold, type HoldRow } from "../store/holds.ts";
import type { Prisma } from "../store/types.ts";
import type { AgentConfigs } from "./agent-config.ts";
import { auditIn } from "./audit.ts";

// Holds keep packages from being approved and installed, fleet-wide or on one agent; agents get
// them in their signed config and refuse held packages themselves too.

// Which of these agents' updates a hold keeps: the fleet-wide holds and each agent's own, every
// pattern compiled once (common/holds matches without backtracking).
export function heldBy(holds: HoldRow[]) {
  const fleet = compileHolds(holds.filter((h) => h.agentId === null));
  const own = new Map<string, HoldRow[]>();
  for (const h of holds) if (h.agentId) own.set(h.agentId, [...(own.get(h.agentId) ?? []), h]);
  const perAgent = new Map([...own].map(([id, list]) => [id, compileHolds(list)]));
  return (u: { agentId: string; source: string; name: string }) =>
    fleet.find(u.source, u.name) !== undefined || perAgent.get(u.agentId)?.find(u.source, u.name) !== undefined;
}

export interface NewHold {
  agentId: string | null;
  source: string;
  name: string;
  reason: string;
}

// Adds a hold (checked: source, name pattern and reason) and records it in the audit log, in
// one transaction; the next poll of each agent gets the new config.
export async function setHold(db: Prisma, agentConfigs: AgentConfigs, ctx: HandlerContext, input: NewHold): Promise<HoldRow> {
  const row = await inTransaction(db, async (tx) => {
    const outcome = await createHold(tx, { ...input, createdBy: callerName(ctx) });
    if ("missingAgent" in outcome) throw new ConnectError(`agent ${input.agentId} does not exist`, Code.NotFound);
    if ("full" in outcome) {
      const scope = input.agentId ? `agent ${input.agentId} has` : "the fleet has";
      throw new ConnectError(
        `${scope} ${outcome.full} holds, the most allowed (${MAX_HOLDS_PER_SCOPE}); remove one first, or hold a pattern ("linux-image-*") instead of single packages`,
        Code.ResourceExhausted,
      );
    }
    await auditIn(tx, ctx, { target: outcome.hold.agentId ? `agent:${outcome.hold.agentId}` : "fleet", after: holdJson(outcome.hold) });
    return outcome.hold;
  });
  agentConfigs.invalidate();
  return row;
}

// Removes a hold and records it in the audit log, in one transaction.
export async function removeHold(db: Prisma, agentConfigs: AgentConfigs, ctx: HandlerContext, id: string): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await getHold(tx, id);
    if (!row) throw new ConnectError(`hold ${id} does not exist`, Code.NotFound);
    await deleteHold(tx, id);
    await auditIn(tx, ctx, { target: row.agentId ? `agent:${row.agentId}` : "fleet", before: holdJson(row) });
  });
  agentConfigs.invalidate();
}

const holdJson = (row: HoldRow) => ({ id: row.id, agentId: row.agentId, source: row.source, name: row.name, reason: row.reason });

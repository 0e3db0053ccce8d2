import { Code, ConnectError } from "@connectrpc/connect";
import { compileHolds, MAX_HOLDS_PER_SCOPE } from "@redflag/common/holds";
import { inTransaction } from "../store/db.ts";
import { createHold, deleteHold, getHold, type HoldRow } from "../store/holds.ts";
import type { Prisma } from "../store/types.ts";
import type { AgentConfigs } from "./agent-config.ts";
import type { AuditHook } from "./audit.ts";

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
  createdBy: string;
}

// Adds a hold (checked: source, name pattern and reason) and its audit entry, in one
// transaction; the next poll of each agent gets the new config.
export async function setHold(db: Prisma, agentConfigs: AgentConfigs, input: NewHold, record: AuditHook<HoldRow>): Promise<HoldRow> {
  const row = await inTransaction(db, async (tx) => {
    const outcome = await createHold(tx, input);
    if ("missingAgent" in outcome) throw new ConnectError(`agent ${input.agentId} does not exist`, Code.NotFound);
    if ("full" in outcome) {
      const scope = input.agentId ? `agent ${input.agentId} has` : "the fleet has";
      throw new ConnectError(
        `${scope} ${outcome.full} holds, the most allowed (${MAX_HOLDS_PER_SCOPE}); remove one first, or hold a pattern ("linux-image-*") instead of single packages`,
        Code.ResourceExhausted,
      );
    }
    await record(tx, outcome.hold);
    return outcome.hold;
  });
  agentConfigs.invalidate();
  return row;
}

// Removes a hold and records it (as it was) in the audit log, in one transaction.
export async function removeHold(db: Prisma, agentConfigs: AgentConfigs, id: string, record: AuditHook<HoldRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await getHold(tx, id);
    if (!row) throw new ConnectError(`hold ${id} does not exist`, Code.NotFound);
    await deleteHold(tx, id);
    await record(tx, row);
  });
  agentConfigs.invalidate();
}

import { Code, ConnectError } from "@connectrpc/connect";
import { createCommand, type CommandRefused, type CommandRow, type CreateCommandInput } from "../store/commands.ts";
import type { Prisma, Tx } from "../store/types.ts";

// Why the store would not queue a command, as the caller is told.
export function commandRefusal(outcome: CommandRefused, agentId: string): ConnectError {
  return outcome.refused === "missing_agent"
    ? new ConnectError(`agent ${agentId} does not exist`, Code.NotFound)
    : new ConnectError(`agent ${agentId} is decommissioned`, Code.FailedPrecondition);
}

// Stores a command for an agent that exists and is still part of the fleet.
export async function storeCommand(db: Prisma | Tx, input: CreateCommandInput): Promise<CommandRow> {
  const outcome: CommandRow | CommandRefused | null = await createCommand(db, input);
  // Seen under heavy load: a query of an interactive transaction that had run out of time
  // resolved with nothing instead of failing. The command was not stored; the caller may retry.
  if (!outcome) throw new ConnectError("the command could not be stored in time; try again", Code.Unavailable, { "retry-after": "5" });
  if ("refused" in outcome) throw commandRefusal(outcome, input.agentId);
  return outcome;
}

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Command, CommandOutcome, type CommandResult, CommandResultSchema, type SignedCommand } from "@redflag/gen/command_pb";
import type { PinnedKeys } from "./envelope.ts";
import type { Logger } from "./log.ts";
import type { Journal } from "./state/journal.ts";
import { checkCommand, openSignedCommand } from "./verify.ts";

export interface ProcessDeps {
  journal: Journal;
  pins: PinnedKeys;
  agentId: string;
  // Runs a verified command; never throws (see executeCommand).
  execute(command: Command): Promise<CommandResult>;
  // True once the agent is stopping: commands not yet started are not started.
  stopping(): boolean;
  logger: Logger;
  now?: () => Date;
}

export interface ProcessSummary {
  executed: number;
  rejected: number;
  redelivered: number;
  dropped: number;
}

// Takes the commands of one poll from signed bytes to journaled results. Signatures are checked
// first and only verified bytes are decoded; then verified commands run one at a time in
// sequence order, each checked against the state left by the one before.
export async function processCommands(
  signed: readonly SignedCommand[],
  nonce: Uint8Array,
  deps: ProcessDeps,
): Promise<ProcessSummary> {
  const { journal, logger } = deps;
  const now = deps.now ?? (() => new Date());
  const summary: ProcessSummary = { executed: 0, rejected: 0, redelivered: 0, dropped: 0 };
  const verified: Command[] = [];
  const unverified: { commandId: string | undefined; reason: string }[] = [];
  for (const item of signed) {
    const opened = openSignedCommand(item, deps.pins);
    if (opened.ok) verified.push(opened.command);
    else unverified.push(opened);
  }

  verified.sort((a, b) => (a.sequence < b.sequence ? -1 : a.sequence > b.sequence ? 1 : 0));
  for (const command of verified) {
    const log = { commandId: command.id, sequence: command.sequence.toString(), kind: command.action.case };
    if (journal.has(command.id)) {
      // Delivered again (for example its result was never acknowledged): answer, never re-run.
      logger.info(log, "command delivered again; reporting its stored result");
      await journal.redeliver(command.id);
      summary.redelivered++;
      continue;
    }
    const reason = checkCommand(command, {
      agentId: deps.agentId,
      nonce,
      lastSequence: journal.lastSequence,
      now: now(),
    });
    if (reason) {
      logger.warn({ ...log, reason }, "rejected a command");
      await journal.record(rejection(command.id, reason, command.sequence, now()));
      summary.rejected++;
      continue;
    }
    if (deps.stopping()) {
      await journal.record(
        create(CommandResultSchema, {
          commandId: command.id,
          outcome: CommandOutcome.FAILED,
          message: "agent stopped before running the command",
          finishTime: timestampFromDate(now()),
          sequence: command.sequence,
        }),
      );
      continue;
    }
    // On disk before it runs: after a crash this command is reported as interrupted, never re-run.
    await journal.begin(command.id, command.sequence);
    logger.info(log, "running command");
    const result = await deps.execute(command);
    await journal.complete(result);
    logger.info({ ...log, outcome: CommandOutcome[result.outcome], message: result.message }, "command finished");
    summary.executed++;
  }
  // Rejections of unverifiable commands come last: a forged copy of a genuine command in the
  // same poll must not take the place of the genuine one's result.
  for (const { commandId, reason } of unverified) {
    // Whatever the bytes claim, an ID that already has a result keeps it.
    if (commandId === undefined || journal.has(commandId)) {
      logger.error({ commandId, reason }, "dropped a command that failed verification");
      summary.dropped++;
      continue;
    }
    logger.error({ commandId, reason }, "rejected a command that failed verification");
    await journal.record(rejection(commandId, reason, 0n, now()));
    summary.rejected++;
  }
  return summary;
}

function rejection(commandId: string, reason: string, sequence: bigint, now: Date): CommandResult {
  return create(CommandResultSchema, {
    commandId,
    outcome: CommandOutcome.REJECTED,
    message: reason,
    finishTime: timestampFromDate(now),
    sequence,
  });
}

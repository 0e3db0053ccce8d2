import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Command, CommandOutcome, type CommandResult, CommandResultSchema, type SignedCommand } from "@redflag/gen/command_pb";
import type { PinnedKeys } from "./trust/envelope.ts";
import type { Logger } from "./log.ts";
import { type Journal, type JournalRecovery, JournalWriteError } from "./state/journal.ts";
import { checkCommand, openSignedCommand } from "./trust/verify.ts";

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
  await learnBarrier(journal, verified.filter((c) => c.agentId === deps.agentId));
  // Refusals of verified commands are recorded after the run, like those of unverifiable ones:
  // a stale copy of a command (an earlier delivery replayed, with a lower sequence and another
  // poll's nonce) sorts before its genuine re-delivery and must not take its place.
  const refused: { id: string; reason: string; sequence: bigint }[] = [];
  for (const command of verified) {
    const log = { commandId: command.id, sequence: command.sequence.toString(), kind: command.action.case };
    if (journal.running(command.id)) {
      logger.warn(log, "command delivered again while it is still running; it is not started again");
      summary.redelivered++;
      continue;
    }
    if (journal.has(command.id)) {
      // Delivered again (for example its result was never acknowledged): answer, never re-run.
      logger.info(log, "command delivered again; reporting its stored result");
      await journal.redeliver(command.id);
      summary.redelivered++;
      continue;
    }
    const reason =
      checkCommand(command, {
        agentId: deps.agentId,
        nonce,
        lastSequence: journal.lastSequence,
        now: now(),
      }) ?? beforeRecovery(command, journal.recovery);
    if (reason) {
      refused.push({ id: command.id, reason, sequence: command.sequence });
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
    // A command that cannot be journaled is not run; the refusal is reported from memory.
    try {
      await journal.begin(command.id, command.sequence);
    } catch (err) {
      if (!(err instanceof JournalWriteError)) throw err;
      const why = `not run: the agent cannot record the command in its journal before running it (${err.message}); free space or make the state directory writable, then queue it again`;
      logger.error({ ...log, reason: why }, "rejected a command it cannot journal");
      await journal.record(rejection(command.id, why, command.sequence, now()));
      summary.rejected++;
      continue;
    }
    logger.info(log, "running command");
    const result = await deps.execute(command);
    await journal.complete(result);
    logger.info({ ...log, outcome: CommandOutcome[result.outcome], message: result.message }, "command finished");
    summary.executed++;
  }
  for (const { id, reason, sequence } of refused) {
    // The same ID ran (or was answered) in this poll: the refused copy changes nothing.
    if (journal.has(id)) {
      logger.warn({ commandId: id, sequence: sequence.toString(), reason }, "dropped a stale copy of a command answered in this poll");
      summary.dropped++;
      continue;
    }
    logger.warn({ commandId: id, sequence: sequence.toString(), reason }, "rejected a command");
    await journal.record(rejection(id, reason, sequence, now()));
    summary.rejected++;
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

// After the journal was found damaged, the first commands delivered (verified, for this
// agent) fix the barrier: they were numbered after everything the agent may have run.
async function learnBarrier(journal: Journal, ours: readonly Command[]): Promise<void> {
  if (!journal.recovery || journal.recovery.barrier !== undefined || ours.length === 0) return;
  const lowest = ours.reduce((min, c) => (c.sequence < min ? c.sequence : min), ours[0]!.sequence);
  await journal.setBarrier(lowest - 1n);
}

// A command first delivered before the journal was lost may already have run: never run it.
function beforeRecovery(command: Command, recovery: JournalRecovery | undefined): string | undefined {
  if (recovery?.barrier === undefined) return undefined;
  const first = command.firstSequence || command.sequence;
  if (first > recovery.barrier) return undefined;
  return (
    `not run: this agent's journal was found damaged at ${recovery.at.toISOString()} and set aside as ${recovery.damagedFile}; ` +
    "this command was first delivered before that and may already have run, so it is not run again (queue it again if it did not run)"
  );
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

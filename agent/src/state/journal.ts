import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, type CommandResult, CommandResultSchema } from "@redflag/gen/command_pb";
import { rename } from "node:fs/promises";
import path from "node:path";
import { createSerialWriter, readIfExists, StateError, writeFileAtomic } from "./files.ts";

// Acknowledged entries kept so a command delivered again can still be answered with its result.
const KEEP_ACKNOWLEDGED = 200;
// Results the control plane refused are kept this long (longer than its longest result
// timeout, after which it never delivers a command again), so a re-delivery is never run.
const KEEP_REFUSED_MS = 8 * 86_400_000;

const JOURNAL_FILE = "journal.json";

interface Entry {
  commandId: string;
  sequence: bigint;
  // running: started, no result yet. A journal loaded with a running entry means the agent
  // stopped mid-command; that command is reported as failed, never started again.
  state: "running" | "done";
  // True once the result is durably stored by the control plane, or refused by it for good.
  acknowledged: boolean;
  // When the control plane refused the result (ms since the epoch); such an entry stays as a
  // marker that the command was handled, for a control plane that delivers it again.
  refusedAt: number | undefined;
  result: CommandResult | undefined;
}

export interface JournalStats {
  entries: number;
  unacknowledged: number;
}

// The journal file was found damaged (a torn write, a bad disk) and set aside. The agent no
// longer knows which commands it ran, so none delivered before the damage is run; `barrier`
// (learnt from the first commands delivered afterwards) tells those from new ones.
export interface JournalRecovery {
  at: Date;
  // Where the damaged file was moved.
  damagedFile: string;
  reason: string;
  // Commands first delivered with a sequence up to this one are never run. Unset until the
  // first verified commands arrive after the recovery.
  barrier: bigint | undefined;
}

// The journal could not be written: a command whose start is not on disk must not run.
export class JournalWriteError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "JournalWriteError";
  }
}

// The journal is the agent's memory of what it ran: the last executed sequence and, per command
// ID, the one result this agent will ever give for it. The sequence and the entries live in one
// file, so "ran command N" and "last sequence is N" are always written together, and both are
// on disk before the command starts (begin() fails otherwise). Later writes (results,
// acknowledgements) that fail, for example on a full disk, are kept in memory, reported, and
// written with the next write that succeeds: losing them can only make a finished command
// look interrupted, never run it again.
export interface Journal {
  readonly lastSequence: bigint;
  has(commandId: string): boolean;
  // True while a command has begun and has no result.
  running(commandId: string): boolean;
  // Marks a command as started and raises the last sequence, durably; throws
  // JournalWriteError (and changes nothing) when that cannot be written.
  begin(commandId: string, sequence: bigint): Promise<void>;
  // Stores the result of a started command.
  complete(result: CommandResult): Promise<void>;
  // Stores the result of a command that was not run (rejected, or the agent was stopping).
  record(result: CommandResult): Promise<void>;
  // A command delivered again: its stored result is sent again, it is never run again.
  redeliver(commandId: string): Promise<void>;
  pending(): CommandResult[];
  // Applies a ReportResults answer: acknowledged results are kept briefly; refused ones are no
  // longer sent, but the command stays known, so a re-delivery is answered and never run.
  settle(acknowledged: readonly string[], dropped: readonly string[]): Promise<void>;
  // A different agent ID starts from scratch: its sequence numbers are unrelated to the old ones.
  reset(): Promise<void>;
  // Set when the journal was found damaged and started again.
  readonly recovery: JournalRecovery | undefined;
  setBarrier(sequence: bigint): Promise<void>;
  // The last write that failed (and is still not written), for logs.
  readonly writeError: Error | undefined;
  stats(): JournalStats;
}

// readOnly: look without recovering interrupted commands or a damaged file (for `status`,
// beside a running agent).
export async function openJournal(stateDir: string, opts: { readOnly?: boolean; now?: () => Date } = {}): Promise<Journal> {
  const now = opts.now ?? (() => new Date());
  const file = path.join(stateDir, JOURNAL_FILE);
  const write = createSerialWriter(file);
  const entries = new Map<string, Entry>();
  let lastSequence = 0n;
  let recovery: JournalRecovery | undefined;
  let writeError: Error | undefined;

  const data = await readIfExists(file);
  let damaged: string | undefined;
  if (data) {
    try {
      ({ lastSequence, recovery } = parse(data, entries));
    } catch (err) {
      if (opts.readOnly) throw damagedError(file, err);
      damaged = (err as Error).message;
    }
  }

  const save = () =>
    write(
      JSON.stringify({
        version: 1,
        lastSequence: lastSequence.toString(),
        ...(recovery
          ? {
              recovery: {
                at: recovery.at.toISOString(),
                damagedFile: recovery.damagedFile,
                reason: recovery.reason,
                barrier: recovery.barrier?.toString() ?? null,
              },
            }
          : {}),
        entries: [...entries.values()].map((e) => ({
          commandId: e.commandId,
          sequence: e.sequence.toString(),
          state: e.state,
          acknowledged: e.acknowledged,
          ...(e.refusedAt === undefined ? {} : { refusedAt: e.refusedAt }),
          result: e.result ? Buffer.from(toBinary(CommandResultSchema, e.result)).toString("base64") : null,
        })),
      }) + "\n",
    );
  // For writes whose loss is safe (see Journal): kept in memory when the disk refuses them.
  const persist = async () => {
    try {
      await save();
      writeError = undefined;
    } catch (err) {
      writeError = err as Error;
    }
  };

  if (damaged !== undefined) {
    // Set aside, never deleted: it is the only record of what ran, for a person to read.
    const damagedFile = `${file}.damaged-${now().toISOString().replace(/[:.]/g, "-")}`;
    try {
      await rename(file, damagedFile);
      recovery = { at: now(), damagedFile, reason: damaged, barrier: undefined };
      await save();
    } catch (err) {
      throw new StateError(
        `${file} is damaged (${damaged}) and cannot be set aside (${(err as Error).message}); the agent will not run commands without knowing which it already ran`,
        { cause: err },
      );
    }
  }

  let recovered = false;
  for (const entry of entries.values()) {
    if (entry.state !== "running" || opts.readOnly) continue;
    entry.state = "done";
    entry.acknowledged = false;
    entry.result = create(CommandResultSchema, {
      commandId: entry.commandId,
      outcome: CommandOutcome.FAILED,
      message: "the agent stopped before the command finished; it was not run again",
      finishTime: timestampNow(),
      sequence: entry.sequence,
    });
    recovered = true;
  }
  if (recovered) await save();

  const prune = () => {
    const settled = [...entries.values()].filter((e) => e.acknowledged && e.refusedAt === undefined);
    for (const entry of settled.slice(0, Math.max(0, settled.length - KEEP_ACKNOWLEDGED))) entries.delete(entry.commandId);
    const cutoff = now().getTime() - KEEP_REFUSED_MS;
    for (const entry of entries.values()) if (entry.refusedAt !== undefined && entry.refusedAt < cutoff) entries.delete(entry.commandId);
  };

  return {
    get lastSequence() {
      return lastSequence;
    },
    has: (commandId) => entries.has(commandId),
    running: (commandId) => entries.get(commandId)?.state === "running",
    async begin(commandId, sequence) {
      if (entries.has(commandId)) throw new Error(`command ${commandId} is already in the journal`);
      const before = lastSequence;
      entries.set(commandId, { commandId, sequence, state: "running", acknowledged: false, refusedAt: undefined, result: undefined });
      if (sequence > lastSequence) lastSequence = sequence;
      try {
        await save();
        writeError = undefined;
      } catch (err) {
        // Memory matches the disk again: the command never began.
        entries.delete(commandId);
        lastSequence = before;
        writeError = err as Error;
        throw new JournalWriteError(`cannot write ${file}: ${(err as Error).message}`, { cause: err });
      }
    },
    async complete(result) {
      const entry = entries.get(result.commandId);
      if (!entry || entry.state !== "running") throw new Error(`command ${result.commandId} was not started`);
      entry.state = "done";
      entry.result = result;
      await persist();
    },
    async record(result) {
      if (entries.has(result.commandId)) return;
      entries.set(result.commandId, {
        commandId: result.commandId,
        sequence: result.sequence,
        state: "done",
        acknowledged: false,
        refusedAt: undefined,
        result,
      });
      await persist();
    },
    async redeliver(commandId) {
      const entry = entries.get(commandId);
      if (!entry || entry.state !== "done" || !entry.acknowledged) return;
      entry.acknowledged = false;
      await persist();
    },
    pending: () =>
      [...entries.values()].filter((e) => e.state === "done" && !e.acknowledged && e.result).map((e) => e.result!),
    async settle(acknowledged, dropped) {
      let changed = false;
      for (const id of acknowledged) {
        const entry = entries.get(id);
        if (entry && entry.state === "done" && !entry.acknowledged) {
          entry.acknowledged = true;
          entry.refusedAt = undefined;
          // Re-append so pruning drops the oldest acknowledgements first.
          entries.delete(id);
          entries.set(id, entry);
          changed = true;
        }
      }
      for (const id of dropped) {
        const entry = entries.get(id);
        if (entry && entry.state === "done" && !entry.acknowledged) {
          entry.acknowledged = true;
          entry.refusedAt = now().getTime();
          changed = true;
        }
      }
      if (!changed && !writeError) return;
      prune();
      await persist();
    },
    async reset() {
      entries.clear();
      lastSequence = 0n;
      recovery = undefined;
      await save();
    },
    get recovery() {
      return recovery;
    },
    async setBarrier(sequence) {
      if (!recovery || recovery.barrier !== undefined) return;
      recovery.barrier = sequence;
      await persist();
    },
    get writeError() {
      return writeError;
    },
    stats: () => ({
      entries: entries.size,
      unacknowledged: [...entries.values()].filter((e) => !e.acknowledged).length,
    }),
  };
}

// Starts an empty journal without reading the old one (which may belong to another agent ID).
export async function resetJournal(stateDir: string): Promise<void> {
  await writeFileAtomic(path.join(stateDir, JOURNAL_FILE), JSON.stringify({ version: 1, lastSequence: "0", entries: [] }) + "\n");
}

function damagedError(file: string, err: unknown): StateError {
  return new StateError(`${file} is damaged (${(err as Error).message}); a running agent sets it aside and starts a new journal`);
}

interface RawJournal {
  lastSequence: string;
  recovery?: { at: string; damagedFile: string; reason: string; barrier: string | null };
  entries: { commandId: string; sequence: string; state: string; acknowledged: boolean; refusedAt?: number; result: string | null }[];
}

// Never guesses: anything unexpected is damage (see openJournal).
function parse(data: Buffer, into: Map<string, Entry>): { lastSequence: bigint; recovery: JournalRecovery | undefined } {
  const raw = JSON.parse(data.toString("utf8")) as RawJournal;
  if (typeof raw !== "object" || raw === null || !Array.isArray(raw.entries)) throw new Error("not a journal");
  for (const e of raw.entries) {
    if (e.state !== "running" && e.state !== "done") throw new Error(`unknown state ${e.state}`);
    if (typeof e.commandId !== "string" || e.commandId === "") throw new Error("an entry without a command ID");
    into.set(e.commandId, {
      commandId: e.commandId,
      sequence: BigInt(e.sequence),
      state: e.state,
      acknowledged: Boolean(e.acknowledged),
      refusedAt: typeof e.refusedAt === "number" ? e.refusedAt : undefined,
      result: e.result ? fromBinary(CommandResultSchema, Buffer.from(e.result, "base64")) : undefined,
    });
  }
  const recovery = raw.recovery
    ? {
        at: new Date(raw.recovery.at),
        damagedFile: String(raw.recovery.damagedFile),
        reason: String(raw.recovery.reason),
        barrier: raw.recovery.barrier === null ? undefined : BigInt(raw.recovery.barrier),
      }
    : undefined;
  if (recovery && Number.isNaN(recovery.at.getTime())) throw new Error("a recovery without a time");
  return { lastSequence: BigInt(raw.lastSequence), recovery };
}

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, type CommandResult, CommandResultSchema } from "@redflag/gen/command_pb";
import path from "node:path";
import { createSerialWriter, readIfExists, StateError, writeFileAtomic } from "./files.ts";

// Acknowledged entries kept so a command delivered again can still be answered with its result.
const KEEP_ACKNOWLEDGED = 200;

const JOURNAL_FILE = "journal.json";

interface Entry {
  commandId: string;
  sequence: bigint;
  // running: started, no result yet. A journal loaded with a running entry means the agent
  // stopped mid-command; that command is reported as failed, never started again.
  state: "running" | "done";
  // True once the result is durably stored by the control plane.
  acknowledged: boolean;
  result: CommandResult | undefined;
}

export interface JournalStats {
  entries: number;
  unacknowledged: number;
}

// The journal is the agent's memory of what it ran: the last executed sequence and, per command
// ID, the one result this agent will ever give for it. The sequence and the entries live in one
// file, so "ran command N" and "last sequence is N" are always written together, and both are
// on disk before the command starts and before its result is reported.
export interface Journal {
  readonly lastSequence: bigint;
  has(commandId: string): boolean;
  // Marks a command as started and raises the last sequence.
  begin(commandId: string, sequence: bigint): Promise<void>;
  // Stores the result of a started command.
  complete(result: CommandResult): Promise<void>;
  // Stores the result of a command that was not run (rejected, or the agent was stopping).
  record(result: CommandResult): Promise<void>;
  // A command delivered again: its stored result is sent again, it is never run again.
  redeliver(commandId: string): Promise<void>;
  pending(): CommandResult[];
  // Applies a ReportResults answer: acknowledged results are kept briefly, refused ones dropped.
  settle(acknowledged: readonly string[], dropped: readonly string[]): Promise<void>;
  // A different agent ID starts from scratch: its sequence numbers are unrelated to the old ones.
  reset(): Promise<void>;
  stats(): JournalStats;
}

// readOnly: look without recovering interrupted commands (for `status`, beside a running agent).
export async function openJournal(stateDir: string, opts: { readOnly?: boolean } = {}): Promise<Journal> {
  const file = path.join(stateDir, JOURNAL_FILE);
  const write = createSerialWriter(file);
  const entries = new Map<string, Entry>();
  let lastSequence = 0n;

  const data = await readIfExists(file);
  if (data) ({ lastSequence } = parse(file, data, entries));

  const save = () =>
    write(
      JSON.stringify({
        version: 1,
        lastSequence: lastSequence.toString(),
        entries: [...entries.values()].map((e) => ({
          commandId: e.commandId,
          sequence: e.sequence.toString(),
          state: e.state,
          acknowledged: e.acknowledged,
          result: e.result ? Buffer.from(toBinary(CommandResultSchema, e.result)).toString("base64") : null,
        })),
      }) + "\n",
    );

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
    const acknowledged = [...entries.values()].filter((e) => e.acknowledged);
    for (const entry of acknowledged.slice(0, Math.max(0, acknowledged.length - KEEP_ACKNOWLEDGED))) {
      entries.delete(entry.commandId);
    }
  };

  return {
    get lastSequence() {
      return lastSequence;
    },
    has: (commandId) => entries.has(commandId),
    async begin(commandId, sequence) {
      if (entries.has(commandId)) throw new Error(`command ${commandId} is already in the journal`);
      entries.set(commandId, { commandId, sequence, state: "running", acknowledged: false, result: undefined });
      if (sequence > lastSequence) lastSequence = sequence;
      await save();
    },
    async complete(result) {
      const entry = entries.get(result.commandId);
      if (!entry || entry.state !== "running") throw new Error(`command ${result.commandId} was not started`);
      entry.state = "done";
      entry.result = result;
      await save();
    },
    async record(result) {
      if (entries.has(result.commandId)) return;
      entries.set(result.commandId, {
        commandId: result.commandId,
        sequence: result.sequence,
        state: "done",
        acknowledged: false,
        result,
      });
      await save();
    },
    async redeliver(commandId) {
      const entry = entries.get(commandId);
      if (!entry || !entry.acknowledged) return;
      entry.acknowledged = false;
      await save();
    },
    pending: () =>
      [...entries.values()].filter((e) => e.state === "done" && !e.acknowledged && e.result).map((e) => e.result!),
    async settle(acknowledged, dropped) {
      let changed = false;
      for (const id of acknowledged) {
        const entry = entries.get(id);
        if (entry && entry.state === "done" && !entry.acknowledged) {
          entry.acknowledged = true;
          // Re-append so pruning drops the oldest acknowledgements first.
          entries.delete(id);
          entries.set(id, entry);
          changed = true;
        }
      }
      for (const id of dropped) {
        const entry = entries.get(id);
        if (entry && entry.state === "done") {
          entries.delete(id);
          changed = true;
        }
      }
      if (!changed) return;
      prune();
      await save();
    },
    async reset() {
      entries.clear();
      lastSequence = 0n;
      await save();
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

function parse(file: string, data: Buffer, into: Map<string, Entry>): { lastSequence: bigint } {
  try {
    const raw = JSON.parse(data.toString("utf8")) as {
      lastSequence: string;
      entries: { commandId: string; sequence: string; state: string; acknowledged: boolean; result: string | null }[];
    };
    for (const e of raw.entries) {
      if (e.state !== "running" && e.state !== "done") throw new Error(`unknown state ${e.state}`);
      into.set(e.commandId, {
        commandId: e.commandId,
        sequence: BigInt(e.sequence),
        state: e.state,
        acknowledged: Boolean(e.acknowledged),
        result: e.result ? fromBinary(CommandResultSchema, Buffer.from(e.result, "base64")) : undefined,
      });
    }
    return { lastSequence: BigInt(raw.lastSequence) };
  } catch (err) {
    // Never guess here: a lost sequence could let an old command run again.
    throw new StateError(
      `${file} is damaged (${(err as Error).message}); the agent will not guess its last executed sequence. ` +
        "Deleting the file starts again from sequence 0 and forgets unreported results",
    );
  }
}

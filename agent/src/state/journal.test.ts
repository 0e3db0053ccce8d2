import { create } from "@bufbuild/protobuf";
import { CommandOutcome, type CommandResult, CommandResultSchema } from "@redflag/gen/command_pb";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { StateError } from "./files.ts";
import { openJournal, resetJournal } from "./journal.ts";

const dirs: string[] = [];
const tempDir = async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-journal-"));
  dirs.push(dir);
  return dir;
};
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

const result = (commandId: string, sequence: bigint, outcome = CommandOutcome.SUCCEEDED): CommandResult =>
  create(CommandResultSchema, { commandId, sequence, outcome, message: `result of ${commandId}` });

describe("journal", () => {
  it("persists the sequence and the running marker before the command runs", async () => {
    const dir = await tempDir();
    const journal = await openJournal(dir);
    await journal.begin("a", 3n);
    expect((await stat(path.join(dir, "journal.json"))).mode & 0o777).toBe(0o600);
    const onDisk = await openJournal(dir, { readOnly: true });
    expect(onDisk.lastSequence).toBe(3n);
    expect(onDisk.has("a")).toBe(true);
    expect(onDisk.pending()).toEqual([]);
  });

  it("keeps results until acknowledged, across restarts", async () => {
    const dir = await tempDir();
    let journal = await openJournal(dir);
    await journal.begin("a", 1n);
    await journal.complete(result("a", 1n));
    await journal.begin("b", 2n);
    await journal.complete(result("b", 2n));
    await journal.settle(["b"], []);

    journal = await openJournal(dir);
    expect(journal.pending().map((r) => r.commandId)).toEqual(["a"]);
    expect(journal.pending()[0]!.message).toBe("result of a");
    await journal.settle([], []);
    expect(journal.pending().map((r) => r.commandId)).toEqual(["a"]);
    await journal.settle(["a"], []);
    journal = await openJournal(dir);
    expect(journal.pending()).toEqual([]);
    expect(journal.stats()).toEqual({ entries: 2, unacknowledged: 0 });
    // Acknowledged commands are still known, so a re-delivery is answered, not re-run.
    expect(journal.has("a") && journal.has("b")).toBe(true);
    expect(journal.lastSequence).toBe(2n);
  });

  it("drops refused results for good", async () => {
    const dir = await tempDir();
    let journal = await openJournal(dir);
    await journal.record(result("r", 0n, CommandOutcome.REJECTED));
    await journal.settle([], ["r"]);
    journal = await openJournal(dir);
    expect(journal.pending()).toEqual([]);
    expect(journal.has("r")).toBe(false);
  });

  it("re-sends the stored result of a command delivered again", async () => {
    const journal = await openJournal(await tempDir());
    await journal.begin("a", 1n);
    await journal.complete(result("a", 1n));
    await journal.settle(["a"], []);
    await journal.redeliver("a");
    expect(journal.pending().map((r) => r.message)).toEqual(["result of a"]);
  });

  it("turns a command interrupted by a crash into a failure, without running it again", async () => {
    const dir = await tempDir();
    const journal = await openJournal(dir);
    await journal.begin("a", 5n);
    // No complete(): the process died here.
    const readOnly = await openJournal(dir, { readOnly: true });
    expect(readOnly.pending()).toEqual([]);
    const recovered = await openJournal(dir);
    const [failed] = recovered.pending();
    expect(failed).toMatchObject({ commandId: "a", outcome: CommandOutcome.FAILED, sequence: 5n });
    expect(failed!.message).toMatch(/stopped before the command finished/);
    expect(recovered.lastSequence).toBe(5n);
    expect(recovered.has("a")).toBe(true);
  });

  it("keeps the first result for a command ID", async () => {
    const journal = await openJournal(await tempDir());
    await journal.record(result("a", 0n, CommandOutcome.REJECTED));
    await journal.record(result("a", 0n, CommandOutcome.SUCCEEDED));
    expect(journal.pending().map((r) => r.outcome)).toEqual([CommandOutcome.REJECTED]);
    await expect(journal.begin("a", 1n)).rejects.toThrow(/already in the journal/);
  });

  it("forgets old acknowledged entries but never the sequence", async () => {
    const journal = await openJournal(await tempDir());
    for (let i = 1; i <= 250; i++) {
      await journal.record(result(`c${i}`, BigInt(i)));
    }
    await journal.begin("last", 251n);
    await journal.complete(result("last", 251n));
    await journal.settle(journal.pending().map((r) => r.commandId), []);
    expect(journal.stats().entries).toBe(200);
    expect(journal.has("c1")).toBe(false);
    expect(journal.has("last")).toBe(true);
    expect(journal.lastSequence).toBe(251n);
  });

  it("refuses to guess when the file is damaged, and resets on request", async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "journal.json"), "{ not json");
    await expect(openJournal(dir)).rejects.toThrow(StateError);
    await resetJournal(dir);
    expect((await openJournal(dir)).lastSequence).toBe(0n);
    expect(JSON.parse(await readFile(path.join(dir, "journal.json"), "utf8"))).toMatchObject({ lastSequence: "0" });
  });
});

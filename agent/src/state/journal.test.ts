import { create } from "@bufbuild/protobuf";
import { CommandOutcome, type CommandResult, CommandResultSchema } from "@redflag/gen/command_pb";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { StateError } from "./files.ts";
import { JournalWriteError, openJournal, resetJournal } from "./journal.ts";

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

  it("stops sending refused results, but remembers the command so a re-delivery never runs it", async () => {
    const dir = await tempDir();
    let journal = await openJournal(dir);
    await journal.begin("r", 1n);
    await journal.complete(result("r", 1n));
    await journal.settle([], ["r"]);
    journal = await openJournal(dir);
    expect(journal.pending()).toEqual([]);
    expect(journal.has("r")).toBe(true);
    // Kept beyond the acknowledged ones' limit, for as long as a control plane may deliver again.
    for (let i = 2; i <= 260; i++) await journal.record(result(`c${i}`, BigInt(i)));
    await journal.settle(journal.pending().map((r) => r.commandId), []);
    expect(journal.stats().entries).toBe(201);
    expect(journal.has("r")).toBe(true);
    const later = await openJournal(dir, { now: () => new Date(Date.now() + 9 * 86_400_000) });
    await later.record(result("x", 300n));
    await later.settle(["x"], []);
    expect(later.has("r")).toBe(false);
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

  it("sets a damaged file aside and starts again, remembering that it did (status only looks)", async () => {
    const dir = await tempDir();
    const journal = await openJournal(dir);
    await journal.begin("a", 7n);
    await journal.complete(result("a", 7n));
    const whole = await readFile(path.join(dir, "journal.json"));
    // A torn write: the file ends part-way.
    await writeFile(path.join(dir, "journal.json"), whole.subarray(0, Math.floor(whole.length / 2)));
    await expect(openJournal(dir, { readOnly: true })).rejects.toThrow(StateError);

    const at = new Date("2026-12-05T08:00:00.000Z");
    const recovered = await openJournal(dir, { now: () => at });
    expect(recovered.lastSequence).toBe(0n);
    expect(recovered.has("a")).toBe(false);
    expect(recovered.recovery).toMatchObject({ at, damagedFile: path.join(dir, "journal.json.damaged-2026-12-05T08-00-00-000Z"), barrier: undefined });
    expect(recovered.recovery!.reason).toMatch(/JSON/);
    expect(await readFile(recovered.recovery!.damagedFile)).toEqual(whole.subarray(0, Math.floor(whole.length / 2)));
    await recovered.setBarrier(41n);
    await recovered.setBarrier(99n);
    expect((await openJournal(dir)).recovery).toMatchObject({ at, barrier: 41n });

    await resetJournal(dir);
    expect((await openJournal(dir)).recovery).toBeUndefined();
    expect(JSON.parse(await readFile(path.join(dir, "journal.json"), "utf8"))).toMatchObject({ lastSequence: "0" });
  });

  it("refuses to start a command it cannot write down, and keeps later results in memory until the disk takes them", async () => {
    const dir = await tempDir();
    const journal = await openJournal(dir);
    await journal.begin("a", 1n);
    // The state directory stops taking writes: its journal is replaced by a directory, so no
    // rename onto it can succeed (as root, permissions would not stop the agent).
    await rm(path.join(dir, "journal.json"));
    await mkdir(path.join(dir, "journal.json"));
    await expect(journal.begin("b", 2n)).rejects.toThrow(JournalWriteError);
    expect(journal.has("b")).toBe(false);
    expect(journal.lastSequence).toBe(1n);
    await journal.complete(result("a", 1n));
    await journal.record(result("c", 3n, CommandOutcome.REJECTED));
    expect(journal.writeError).toBeInstanceOf(Error);
    expect(journal.pending().map((r) => r.commandId)).toEqual(["a", "c"]);
    await rm(path.join(dir, "journal.json"), { recursive: true });
    await journal.settle(["a"], []);
    expect(journal.writeError).toBeUndefined();
    const reopened = await openJournal(dir);
    expect(reopened.pending().map((r) => r.commandId)).toEqual(["c"]);
    expect(reopened.has("a")).toBe(true);
  });
});

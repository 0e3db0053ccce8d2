// A lock held by a process for as long as it lives: a file holding the owner's pid, created
// atomically with its content (link(2) fails if the name exists). A lock whose process is gone
// is stale and taken over. Used for the data directory (embedded.ts) and for the embedded
// database's files (embedded-worker.ts).
import { link, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { readFileSync, unlinkSync } from "node:fs";

export interface DataDirLock {
  release(): Promise<void>;
}

export interface HeldLock extends DataDirLock {
  // For a process about to exit at once: no await may come between this and the exit.
  releaseNow(): void;
}

// The lock, or the live process that holds it.
export async function tryLock(lockFile: string): Promise<HeldLock | { holder: number }> {
  const mine = `${process.pid}\n`;
  const temp = `${lockFile}.${process.pid}`;
  await writeFile(temp, mine, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await tryLink(temp, lockFile)) {
        return { release: () => releaseLock(lockFile, mine), releaseNow: () => releaseLockNow(lockFile, mine) };
      }
      const holder = await readLockHolder(lockFile);
      if (holder !== undefined && isRunning(holder)) return { holder };
      await rm(lockFile, { force: true });
    }
    throw new Error(`could not lock ${lockFile}: it keeps reappearing`);
  } finally {
    await rm(temp, { force: true });
  }
}

async function tryLink(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if (errorCode(err) === "EEXIST") return false;
    throw err;
  }
}

// undefined: no lock file (any more) or one without a pid, which only a crash can leave.
async function readLockHolder(lockFile: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(lockFile, "utf8");
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return errorCode(err) === "EPERM";
  }
}

async function releaseLock(lockFile: string, mine: string) {
  try {
    if ((await readFile(lockFile, "utf8")) === mine) await unlink(lockFile);
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
  }
}

function releaseLockNow(lockFile: string, mine: string) {
  try {
    if (readFileSync(lockFile, "utf8") === mine) unlinkSync(lockFile);
  } catch {
    // Gone already, or unreadable: the next owner finds this process dead either way.
  }
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

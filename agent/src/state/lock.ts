import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { StateError } from "./files.ts";

const LOCK_FILE = "agent.lock";

// One agent process per state directory: two would poll with the same credentials and could
// both run a command. The lock holds the owner's PID; a lock whose process is gone is taken over.
export async function acquireLock(stateDir: string): Promise<{ release(): Promise<void> }> {
  const file = path.join(stateDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
      return {
        async release() {
          await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number.parseInt(await readFile(file, "utf8").catch(() => ""), 10);
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new StateError(`another redflag-agent (pid ${owner}) is using ${stateDir}`);
    }
    await rm(file, { force: true });
  }
  throw new StateError(`cannot lock ${stateDir}: ${file} keeps reappearing`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

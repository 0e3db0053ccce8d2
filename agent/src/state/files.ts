import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { createHostAccess, type HostAccess } from "../platform.ts";
import { ensureWindowsPrivateDir } from "./windows-acl.ts";
import { StateError } from "../errors.ts";

// The state directory holds credentials and the agent's private key: no other user may read it.
// On Windows that is its ACL (windows-acl.ts).
export async function ensurePrivateDir(dir: string, host: HostAccess = createHostAccess({})): Promise<void> {
  if (host.platform === "win32") return ensureWindowsPrivateDir(dir, host);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

// Replaces `file` as a whole or not at all: a crash leaves either the old or the new content,
// never a mix. Temp file in the same directory, fsync, rename, then fsync the directory so the
// rename itself is durable.
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const handle = await open(tmp, "wx", 0o600);
    try {
      // The mode passed to open() is reduced by the umask; set it explicitly.
      await handle.chmod(0o600);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

async function syncDir(dir: string): Promise<void> {
  // Windows cannot flush a directory handle (EPERM); NTFS journals the rename itself.
  if (process.platform === "win32") return;
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

// Temp files of writes a crash interrupted.
export async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    if (name.endsWith(".tmp")) await rm(path.join(dir, name), { force: true });
  }
}

// Serialises writes of one file, so an older snapshot can never be renamed over a newer one.
export function createSerialWriter(file: string): (data: string | Uint8Array) => Promise<void> {
  let tail: Promise<void> = Promise.resolve();
  return (data) => {
    const next = tail.then(() => writeFileAtomic(file, data));
    tail = next.catch(() => {});
    return next;
  };
}

// Damaged or missing state: the message tells the operator what to do (errors.ts).
export { StateError };

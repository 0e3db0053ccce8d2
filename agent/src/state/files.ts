import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { createHostAccess, system32, toolOutput, type HostAccess } from "../platform.ts";

// The state directory holds credentials and the agent's private key: no other user may read it.
export async function ensurePrivateDir(dir: string, host: HostAccess = createHostAccess({})): Promise<void> {
  if (host.platform === "win32") return ensureWindowsPrivateDir(dir, host);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

// Who may use the state directory on Windows, by SID (account names are translated):
// LocalSystem and the Administrators group, full control, inherited by every file and folder in it.
export const WINDOWS_STATE_GRANTS = ["*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"];

// File modes mean nothing on Windows, and %ProgramData% lets every user read (and create)
// folders. So the directories the agent creates get their own ACL at creation, with the
// inherited entries removed: SYSTEM and Administrators only. Done once; an existing directory
// keeps the ACL it was given (by the agent or by the installer, which sets the same one). When
// the ACL cannot be set, the new directories are removed again and the agent stops.
async function ensureWindowsPrivateDir(dir: string, host: HostAccess): Promise<void> {
  const created = await mkdir(dir, { recursive: true });
  if (created === undefined) return;
  const icacls = system32(host, "icacls.exe");
  for (const target of new Set([created, dir])) {
    const out = await toolOutput(host, [icacls, target, "/inheritance:r", "/grant:r", ...WINDOWS_STATE_GRANTS]);
    if ("error" in out) {
      await rm(created, { recursive: true, force: true });
      throw new StateError(`cannot restrict ${target} to SYSTEM and Administrators, so it was not created: ${out.error}`);
    }
  }
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

export class StateError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateError";
  }
}

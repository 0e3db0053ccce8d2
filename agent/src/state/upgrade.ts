import { randomBytes } from "node:crypto";
import { readdir, readlink, rename, rm, symlink } from "node:fs/promises";
import path from "node:path";
import { readIfExists, writeFileAtomic } from "./files.ts";

// The files of an agent upgrade, in the install directory (REDFLAG_AGENT_INSTALL_DIR):
//
//   releases/<version>/    one directory per release; `current` points at the one that runs
//   current               the release the service manager starts (a symlink; a junction on Windows)
//   upgrade.json          a verified, unpacked release waiting for its trial (written by update_agent)
//   upgrade-confirmed.json written by the release on trial after its first complete poll cycle
//   upgrade-failed.json   the last upgrade that was abandoned, and why (reported to the control plane)
//
// The release that is known to work is the rollback authority: update_agent never moves
// `current`; the next start of that release runs the new one as a supervised child
// (upgrade-trial.ts) and switches only once the child has confirmed.

export const UPGRADE_FILE = "upgrade.json";
export const CONFIRMED_FILE = "upgrade-confirmed.json";
export const FAILED_FILE = "upgrade-failed.json";
// The variable that tells a release it runs on trial; its value is the version being tried.
export const TRIAL_ENV = "REDFLAG_AGENT_UPGRADE_TRIAL";
// Starts of a release on trial (by any parent process) before the upgrade is abandoned.
export const MAX_TRIAL_STARTS = 3;
// Releases kept after a switch: the new one and the one before it.
export const KEPT_RELEASES = 2;

export interface PendingUpgrade {
  version: string;
  // The version that installed it (the one to carry on as when the trial fails).
  from: string;
  // When update_agent recorded it.
  at: string;
  // Trial starts so far, counted before each start, so a parent that keeps dying mid-trial
  // cannot retry for ever.
  starts: number;
}

export interface FailedUpgrade {
  version: string;
  from: string;
  reason: string;
  at: string;
}

const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
const upgradeFile = (installDir: string) => path.join(installDir, UPGRADE_FILE);
export const releaseDir = (installDir: string, version: string) => path.join(installDir, "releases", version);

// A record that is damaged, or names a version that is not a plain name, counts as absent:
// it could otherwise point a path outside releases/.
async function readJson<T extends { version: string }>(file: string): Promise<T | undefined> {
  const data = await readIfExists(file);
  if (!data) return undefined;
  try {
    const value = JSON.parse(data.toString("utf8")) as T;
    return typeof value?.version === "string" && VERSION.test(value.version) ? value : undefined;
  } catch {
    return undefined;
  }
}

// update_agent: a verified release is in releases/<version>; it is tried at the next start. A
// new attempt replaces the record of an earlier failure.
export async function recordUpgrade(installDir: string, upgrade: { version: string; from: string }): Promise<void> {
  await rm(path.join(installDir, CONFIRMED_FILE), { force: true });
  await writeFileAtomic(upgradeFile(installDir), JSON.stringify({ ...upgrade, at: new Date().toISOString(), starts: 0 } satisfies PendingUpgrade) + "\n");
  await rm(path.join(installDir, FAILED_FILE), { force: true });
}

export const readPendingUpgrade = (installDir: string) => readJson<PendingUpgrade>(upgradeFile(installDir));

export async function savePendingUpgrade(installDir: string, upgrade: PendingUpgrade): Promise<void> {
  await writeFileAtomic(upgradeFile(installDir), JSON.stringify(upgrade) + "\n");
}

export async function clearPendingUpgrade(installDir: string): Promise<void> {
  await rm(upgradeFile(installDir), { force: true });
  await rm(path.join(installDir, CONFIRMED_FILE), { force: true });
}

// The release on trial, after its first complete poll cycle.
export async function writeConfirmation(installDir: string, version: string): Promise<void> {
  await writeFileAtomic(path.join(installDir, CONFIRMED_FILE), JSON.stringify({ version, at: new Date().toISOString() }) + "\n");
}

export const readConfirmation = (installDir: string) => readJson<{ version: string; at: string }>(path.join(installDir, CONFIRMED_FILE));

// The trial failed: `current` never moved; the record says why until the next update_agent.
export async function recordFailure(installDir: string, failure: Omit<FailedUpgrade, "at">): Promise<FailedUpgrade> {
  const record: FailedUpgrade = { ...failure, at: new Date().toISOString() };
  await writeFileAtomic(path.join(installDir, FAILED_FILE), JSON.stringify(record) + "\n");
  await clearPendingUpgrade(installDir);
  return record;
}

export async function readFailure(installDir: string | undefined): Promise<FailedUpgrade | undefined> {
  if (!installDir) return undefined;
  const failure = await readJson<FailedUpgrade>(path.join(installDir, FAILED_FILE));
  return failure && typeof failure.reason === "string" && typeof failure.at === "string" && Number.isFinite(Date.parse(failure.at)) ? failure : undefined;
}

// The version `current` points at (the name of its releases/ directory), if it points anywhere.
export async function currentRelease(installDir: string): Promise<string | undefined> {
  const target = await readlink(path.join(installDir, "current")).catch(() => undefined);
  return target ? path.basename(target.replace(/[\\/]+$/, "")) : undefined;
}

// Points `current` at releases/<version>.
//
// POSIX: a new symlink renamed over the old one, which is atomic: a crash leaves one or the other.
// Windows: creating a symlink needs a privilege services rarely have, so `current` is a directory
// junction (no privilege needed, and it must hold an absolute target). A junction cannot be
// renamed over another, so the switch is two renames with a moment between them without
// `current`; a crash in that moment leaves `current.old-*` beside it, which the next switch
// would not need but an operator can rename back. (Reasoned, not run: there is no Windows here.)
export async function switchCurrent(installDir: string, version: string, platform: NodeJS.Platform = process.platform): Promise<void> {
  const current = path.join(installDir, "current");
  const next = path.join(installDir, `.current-${randomBytes(4).toString("hex")}`);
  if (platform !== "win32") {
    await symlink(path.join("releases", version), next);
    await rename(next, current);
    return;
  }
  await symlink(releaseDir(installDir, version), next, "junction");
  const old = path.join(installDir, `current.old-${randomBytes(4).toString("hex")}`);
  const moved = await rename(current, old).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return false;
      throw err;
    },
  );
  await rename(next, current);
  // Removes the junction itself, never what it points at.
  if (moved) await rm(old, { force: true });
}

// After a switch: keeps the new release and the one before it, removes older releases and what
// interrupted downloads left behind. Never touches what `current` points at.
export async function pruneReleases(installDir: string, keep: string[]): Promise<string[]> {
  const releases = path.join(installDir, "releases");
  const current = await currentRelease(installDir);
  const kept = new Set([...keep.slice(0, KEPT_RELEASES), ...(current ? [current] : [])]);
  const removed: string[] = [];
  for (const name of await readdir(releases).catch(() => [] as string[])) {
    if (kept.has(name)) continue;
    await rm(path.join(releases, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

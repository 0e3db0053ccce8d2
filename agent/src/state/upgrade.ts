import { readlink, rename, rm, symlink } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { readIfExists, writeFileAtomic } from "./files.ts";

// The watchdog of an agent upgrade. update_agent writes upgrade.json in the install directory
// before it switches `current`; every start of the agent counts one attempt; the first poll
// cycle that completes confirms the release and removes the file. A release that keeps
// failing before it ever completes a cycle (it crashes, cannot reach the server with its new
// code, cannot read its state) is switched back after MAX_STARTS starts.

export const UPGRADE_FILE = "upgrade.json";
export const MAX_STARTS = 3;

export interface PendingUpgrade {
  version: string;
  // The link targets, relative to the install directory ("releases/0.1.0").
  from: string | null;
  to: string;
  starts: number;
  at: string;
}

const file = (installDir: string) => path.join(installDir, UPGRADE_FILE);

export async function recordUpgrade(installDir: string, upgrade: Omit<PendingUpgrade, "starts" | "at">): Promise<void> {
  await writeFileAtomic(file(installDir), JSON.stringify({ ...upgrade, starts: 0, at: new Date().toISOString() }) + "\n");
}

async function read(installDir: string): Promise<PendingUpgrade | undefined> {
  const data = await readIfExists(file(installDir));
  if (!data) return undefined;
  try {
    return JSON.parse(data.toString("utf8")) as PendingUpgrade;
  } catch {
    return undefined;
  }
}

// Atomically points `current` at `target` (relative to the install directory).
export async function switchCurrent(installDir: string, target: string): Promise<void> {
  const next = path.join(installDir, `.current-${randomBytes(4).toString("hex")}`);
  await symlink(target, next);
  await rename(next, path.join(installDir, "current"));
}

export type StartCheck = { action: "none" } | { action: "trying"; upgrade: PendingUpgrade } | { action: "rolled_back"; upgrade: PendingUpgrade };

// At start: counts this start of an unconfirmed release, and switches back when it has had
// its chances. Only an upgrade that is what `current` points at counts.
export async function checkUpgradeAtStart(installDir: string | undefined): Promise<StartCheck> {
  if (!installDir) return { action: "none" };
  const upgrade = await read(installDir);
  if (!upgrade) return { action: "none" };
  const current = await readlink(path.join(installDir, "current")).catch(() => undefined);
  if (current !== upgrade.to) {
    await rm(file(installDir), { force: true });
    return { action: "none" };
  }
  const starts = upgrade.starts + 1;
  if (starts > MAX_STARTS && upgrade.from) {
    await switchCurrent(installDir, upgrade.from);
    await rm(file(installDir), { force: true });
    await writeFileAtomic(path.join(installDir, "upgrade-failed.json"), JSON.stringify({ ...upgrade, starts, rolledBackAt: new Date().toISOString() }) + "\n");
    return { action: "rolled_back", upgrade: { ...upgrade, starts } };
  }
  await writeFileAtomic(file(installDir), JSON.stringify({ ...upgrade, starts }) + "\n");
  return { action: "trying", upgrade: { ...upgrade, starts } };
}

// After the first completed poll cycle: the release works.
export async function confirmUpgrade(installDir: string | undefined): Promise<PendingUpgrade | undefined> {
  if (!installDir) return undefined;
  const upgrade = await read(installDir);
  if (upgrade) await rm(file(installDir), { force: true });
  return upgrade;
}

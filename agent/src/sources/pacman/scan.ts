import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { describeFailure, which } from "../../run-process.ts";
import { C_LOCALE, parseSize, scanSession } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";
import { aurRunner } from "./aur.ts";

export const PACMAN = "pacman";

export interface PacmanCandidate {
  name: string;
  currentVersion: string;
  availableVersion: string;
  ignored: boolean;
}

const NAME = /^[a-z0-9@._+][a-z0-9@._+-]*$/;
const VERSION = /^[A-Za-z0-9._+:~-]+$/;

// "name old -> new" from checkupdates, `pacman -Qu` ("… [ignored]" for IgnorePkg) and the AUR
// helpers' `-Qua`.
export function parseUpgradeList(text: string): { candidates: PacmanCandidate[]; ignoredLines: number } {
  const candidates: PacmanCandidate[] = [];
  let ignoredLines = 0;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("::") || line.startsWith("==>")) continue;
    const m = /^(\S+) (\S+) -> (\S+)( \[ignored\])?$/.exec(line);
    if (!m || !NAME.test(m[1]!) || !VERSION.test(m[2]!) || !VERSION.test(m[3]!)) {
      ignoredLines++;
      continue;
    }
    candidates.push({ name: m[1]!, currentVersion: m[2]!, availableVersion: m[3]!, ignored: Boolean(m[4]) });
  }
  return { candidates, ignoredLines };
}

export interface SyncInfo {
  repository: string;
  architecture: string;
  sizeBytes: bigint;
}

// `pacman -Si` records ("Field : value", blank-line separated), LC_ALL=C.
export function parseSyncInfo(text: string): Map<string, SyncInfo> {
  const info = new Map<string, SyncInfo>();
  for (const record of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of record.split("\n")) {
      const m = /^([A-Za-z][A-Za-z ]*?)\s*:\s(.*)$/.exec(line);
      if (m) fields.set(m[1]!.trim(), m[2]!.trim());
    }
    const name = fields.get("Name");
    if (!name || info.has(name)) continue;
    info.set(name, {
      repository: fields.get("Repository") ?? "",
      architecture: fields.get("Architecture") ?? "",
      sizeBytes: parseSize(fields.get("Download Size")),
    });
  }
  return info;
}

// Kernels, microcode, the C library and the init system need a restart.
export const PACMAN_REBOOT_PACKAGES = /^(linux(-lts|-zen|-hardened|-rt|-rt-lts)?|systemd|glibc|(amd|intel)-ucode|linux-firmware(-.*)?)$/;

export function toPacmanUpdate(c: PacmanCandidate, info: SyncInfo | undefined, aur = false): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: PACMAN,
    name: c.name,
    currentVersion: c.currentVersion,
    availableVersion: c.availableVersion,
    architecture: info?.architecture ?? "",
    repository: aur ? "aur" : (info?.repository ?? ""),
    // Arch publishes no severity with its packages (arch-audit could add it later).
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: info?.sizeBytes ?? 0n,
    rebootRequired: !aur && PACMAN_REBOOT_PACKAGES.test(c.name),
  });
}

export async function scanPacman(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(PACMAN, opts, C_LOCALE);
  const path = s.env.PATH ?? "";
  const [pacman, checkupdates, paru, yay] = await Promise.all(["pacman", "checkupdates", "paru", "yay"].map((n) => which(n, path)));
  if (!pacman) return s.notPresent("pacman is not installed on this host");
  const notes: string[] = [];

  let listing: { candidates: PacmanCandidate[]; ignoredLines: number };
  if (checkupdates && opts.refresh) {
    // checkupdates syncs a private copy of the databases: safe, and no root needed.
    const res = await s.run([checkupdates]);
    // 0 updates, 2 none, 1 error.
    if (res.exitCode !== 0 && res.exitCode !== 2) return s.failed(describeFailure("checkupdates", res));
    listing = parseUpgradeList(res.stdout);
  } else {
    if (!opts.refresh) notes.push("sync databases not refreshed (refresh disabled)");
    else notes.push("sync databases not refreshed (install pacman-contrib for checkupdates)");
    const res = await s.run([pacman, "-Qu"]);
    // pacman -Qu exits 1 when nothing is upgradable, with nothing on stderr.
    if (res.exitCode !== 0 && !(res.exitCode === 1 && !res.stderr.trim())) return s.failed([describeFailure("pacman -Qu", res), ...notes].join("; "));
    listing = parseUpgradeList(res.stdout);
  }
  if (listing.ignoredLines > 0) notes.push(`${plural(listing.ignoredLines, "unrecognised line")} ignored`);
  const ignored = listing.candidates.filter((c) => c.ignored).length;
  if (ignored > 0) notes.push(`${ignored} held by IgnorePkg in pacman.conf`);

  const info = new Map<string, SyncInfo>();
  if (listing.candidates.length > 0) {
    const res = await s.run([pacman, "-Si", "--", ...listing.candidates.map((c) => c.name)]);
    for (const [k, v] of parseSyncInfo(res.stdout)) info.set(k, v);
  }
  const updates = listing.candidates.map((c) => toPacmanUpdate(c, info.get(c.name)));

  // AUR packages: the helpers compare installed foreign packages with the AUR. They refuse
  // to run as root, so a root agent runs them as the unprivileged build user (aur.ts); a
  // failure is a note, never a failed pacman scan.
  const helper = paru ?? yay;
  const runner = helper && opts.refresh ? await aurRunner((argv) => s.run(argv), path, opts.isRoot) : undefined;
  if (runner && "problem" in runner) notes.push(`AUR not checked: ${runner.problem}`);
  else if (helper && runner) {
    const res = await s.run([...runner.prefix, helper, "-Qua"], Math.min(60_000, s.remaining()));
    if (res.exitCode === 0 || (res.exitCode === 1 && !res.stderr.trim())) {
      const aur = parseUpgradeList(res.stdout);
      updates.push(...aur.candidates.map((c) => toPacmanUpdate(c, undefined, true)));
      if (aur.candidates.length > 0) notes.push(`${aur.candidates.length} from the AUR`);
    } else {
      notes.push(`AUR not checked: ${describeFailure(`${helper.split("/").pop()} -Qua`, res)}`);
    }
  }
  return s.ran(updates, notes);
}

export const pacmanScanner: Scanner = { name: PACMAN, scan: scanPacman };

import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { plural } from "@redflag/common/plural";
import {
  type PackageUpdate,
  PackageUpdateSchema,
  SubsystemRunSchema,
  SubsystemRunState,
  UpdateSeverity,
} from "@redflag/gen/command_pb";
import { describeFailure, runProcess, which, type ProcessResult } from "../../run-process.ts";
import { countSummary } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const APT = "apt";

export interface AptCandidate {
  name: string;
  architecture: string;
  currentVersion: string;
  availableVersion: string;
  // Archives offering the candidate, for example ["oldstable", "oldstable-security"].
  suites: string[];
}

// One line of `apt list --upgradable`:
//   name/suite[,suite…] candidate-version arch [upgradable from: installed-version]
// The bracket text is translated in other locales (the scanner forces LC_ALL=C, but recorded
// output may not have been), so only "<words>: <version>" is assumed of it.
const LINE = /^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\/(\S+)\s+(\S+)\s+([a-z0-9-]+)\s+\[([^\]]*)\]\s*$/;
const VERSION = /^[A-Za-z0-9.+~:_-]+$/;
const FROM_VERSION = /:\s*([A-Za-z0-9.+~:_-]+)\s*(?:,|$)/;

export function parseAptListUpgradable(text: string): { candidates: AptCandidate[]; ignoredLines: number } {
  const candidates: AptCandidate[] = [];
  const seen = new Set<string>();
  let ignoredLines = 0;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    // "Listing...", "Listing... Done" and their translations ("Auflistung… Fertig").
    if (!line || /^\S+(\.\.\.|…)(\s+\S+)?$/.test(line)) continue;
    const match = LINE.exec(line);
    const from = match ? FROM_VERSION.exec(match[5]!) : null;
    if (!match || !from || !VERSION.test(match[3]!)) {
      ignoredLines++;
      continue;
    }
    const [, name, suites, availableVersion, architecture] = match as unknown as [string, string, string, string, string];
    const key = `${name}:${architecture}`;
    if (seen.has(key)) continue;
    seen.add(key);
    candidates.push({
      name,
      architecture,
      availableVersion,
      currentVersion: from[1]!,
      suites: suites.split(",").filter(Boolean),
    });
  }
  return { candidates, ignoredLines };
}

// Security pockets: Debian's "bookworm-security" / "oldstable-security", Ubuntu's
// "jammy-security", and Ubuntu Pro's "jammy-infra-security" / "jammy-apps-security".
export function isSecuritySuite(suite: string): boolean {
  return /(^|-)security$/.test(suite);
}

// Updates that take effect only after a reboot: kernels, CPU microcode, and the C library and
// D-Bus that long-running processes keep loaded.
const REBOOT_PACKAGES = /^(linux-image-.*|linux-(generic|virtual|aws|azure|gcp|oracle|kvm|lowlatency)(-.*)?|.*-microcode|libc6|dbus)$/;

export function toPackageUpdate(c: AptCandidate, sizes: ReadonlyMap<string, bigint>): PackageUpdate {
  const security = c.suites.some(isSecuritySuite);
  return create(PackageUpdateSchema, {
    source: APT,
    name: c.name,
    currentVersion: c.currentVersion,
    availableVersion: c.availableVersion,
    architecture: c.architecture,
    repository: (security ? c.suites.find(isSecuritySuite) : c.suites[0]) ?? "",
    severity: security ? UpdateSeverity.SECURITY : UpdateSeverity.UNKNOWN,
    security,
    sizeBytes: sizes.get(sizeKey(c.name, c.architecture, c.availableVersion)) ?? 0n,
    rebootRequired: REBOOT_PACKAGES.test(c.name),
  });
}

const sizeKey = (name: string, arch: string, version: string) => `${name}:${arch}=${version}`;

// Download sizes from `apt-cache show` records (blank-line separated, "Field: value").
export function parseAptCacheSizes(text: string): Map<string, bigint> {
  const sizes = new Map<string, bigint>();
  for (const record of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of record.split("\n")) {
      const match = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (match) fields.set(match[1]!, match[2]!.trim());
    }
    const [name, arch, version, size] = ["Package", "Architecture", "Version", "Size"].map((f) => fields.get(f));
    if (name && arch && version && size && /^\d+$/.test(size)) sizes.set(sizeKey(name, arch, version), BigInt(size));
  }
  return sizes;
}

// `refresh` runs `apt-get update` first (as root only).
export type AptScanOptions = ScanOptions;
export type AptScan = ScanResult;

const SIZE_QUERY_CHUNK = 200;

export async function scanApt(opts: AptScanOptions): Promise<AptScan> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const remaining = () => Math.max(1000, deadline - Date.now());
  // Stable, untranslated output; never an interactive prompt.
  const env: NodeJS.ProcessEnv = { ...opts.env, LC_ALL: "C", LANG: "C", LANGUAGE: "", DEBIAN_FRONTEND: "noninteractive" };
  const run = (state: SubsystemRunState, message: string, updateCount = 0) =>
    create(SubsystemRunSchema, {
      subsystem: APT,
      state,
      message,
      duration: durationFromMs(Date.now() - started),
      updateCount,
    });

  const pathEnv = env.PATH ?? "";
  const [apt, aptGet, aptCache] = await Promise.all(["apt", "apt-get", "apt-cache"].map((n) => which(n, pathEnv)));
  if (!apt) return { run: run(SubsystemRunState.NOT_PRESENT, "apt is not installed on this host"), updates: [] };

  const notes: string[] = [];
  if (!opts.refresh) notes.push("package lists not refreshed (refresh disabled)");
  else if (!opts.isRoot) notes.push("package lists not refreshed (refreshing needs root)");
  else if (!aptGet) notes.push("package lists not refreshed (apt-get not found)");
  else {
    // A failed refresh still leaves the last lists to scan: report it, do not fail on it.
    const update = await runProcess([aptGet, "update", "-q"], {
      env,
      signal: opts.signal,
      timeoutMs: Math.min(5 * 60_000, remaining() * 0.6),
    });
    if (opts.signal?.aborted) return { run: run(SubsystemRunState.FAILED, "scan stopped"), updates: [] };
    if (update.exitCode !== 0) notes.push(`package lists not refreshed: ${failure("apt-get update", update)}`);
  }

  const list = await runProcess([apt, "list", "--upgradable"], { env, signal: opts.signal, timeoutMs: remaining() });
  if (list.exitCode !== 0) {
    return { run: run(SubsystemRunState.FAILED, [failure("apt list --upgradable", list), ...notes].join("; ")), updates: [] };
  }
  const { candidates, ignoredLines } = parseAptListUpgradable(list.stdout);
  if (ignoredLines > 0) notes.push(`${plural(ignoredLines, "unrecognised line")} in apt output ignored`);

  const sizes = new Map<string, bigint>();
  if (aptCache && candidates.length > 0) {
    for (let i = 0; i < candidates.length; i += SIZE_QUERY_CHUNK) {
      const specs = candidates.slice(i, i + SIZE_QUERY_CHUNK).map((c) => sizeKey(c.name, c.architecture, c.availableVersion));
      const show = await runProcess([aptCache, "show", "--no-all-versions", ...specs], {
        env,
        signal: opts.signal,
        timeoutMs: remaining(),
      });
      // Sizes are a nicety: without them the updates are still right.
      for (const [key, size] of parseAptCacheSizes(show.stdout)) sizes.set(key, size);
    }
  }

  const updates = candidates.map((c) => toPackageUpdate(c, sizes));
  const summary = countSummary(updates);
  return { run: run(SubsystemRunState.RAN, [summary, ...notes].join("; "), updates.length), updates };
}

// apt's "no stable CLI" warning is noise, not the reason.
const APT_NOISE = /does not have a stable CLI interface/;
const failure = (what: string, result: ProcessResult) => describeFailure(what, result, APT_NOISE);

export const aptScanner: Scanner = { name: APT, scan: scanApt };

import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { describeFailure, which } from "../../run-process.ts";
import { nameArch, queryRpm, RPM_REBOOT_PACKAGES } from "../rpm.ts";
import { C_LOCALE, scanSession, severityFromWord, severityRank } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const DNF = "dnf";

export interface RpmCandidate {
  name: string;
  architecture: string;
  availableVersion: string;
  repository: string;
}

const VERSION = /^(\d+:)?[A-Za-z0-9._+~^-]+$/;

// `dnf check-update` / `dnf5 check-upgrade` / `yum check-update`: "name.arch  version  repo",
// a long name wraps its version and repo onto the next line; metadata chatter before, and an
// "Obsoleting Packages" section after (not updates of their own) are ignored.
export function parseCheckUpdate(text: string): { candidates: RpmCandidate[]; ignoredLines: number } {
  const candidates: RpmCandidate[] = [];
  let ignoredLines = 0;
  let pendingName: string | undefined;
  for (const raw of text.split("\n")) {
    if (/^Obsoleting [Pp]ackages/.test(raw)) break;
    const tokens = raw.trim().split(/\s+/).filter(Boolean);
    if (pendingName && tokens.length === 2) tokens.unshift(pendingName);
    pendingName = undefined;
    if (tokens.length === 1 && nameArch(tokens[0]!)) {
      pendingName = tokens[0];
      continue;
    }
    const na = tokens.length > 0 ? nameArch(tokens[0]!) : undefined;
    if (!na) continue;
    if (tokens.length !== 3 || !VERSION.test(tokens[1]!)) {
      ignoredLines++;
      continue;
    }
    candidates.push({ name: na.name, architecture: na.arch, availableVersion: tokens[1]!, repository: tokens[2]! });
  }
  return { candidates, ignoredLines };
}

export interface Advisory {
  id: string;
  security: boolean;
  severity: UpdateSeverity;
}

// Advisories by package NEVRA ("openssl-libs-1:3.2.2-9.fc41.x86_64"). dnf4/yum print
// "ID  TYPE[/Sec.]  NEVRA" where TYPE is a severity for security advisories ("Important/Sec.")
// or bugfix/enhancement/newpackage; dnf5 prints a table "Name Type Severity Package Issued".
export function parseUpdateInfo(text: string): Map<string, Advisory> {
  const byNevra = new Map<string, Advisory>();
  for (const raw of text.split("\n")) {
    const tokens = raw.trim().split(/\s+/);
    if (tokens.length < 3 || /^(Name|Last|Updating|Repositories)$/.test(tokens[0]!)) continue;
    let advisory: Advisory;
    let nevra: string;
    const legacy = /^(?:(Critical|Important|Moderate|Low|Unknown|None)\/)?(Sec\.|security|bugfix|enhancement|newpackage|unspecified)$/i.exec(tokens[1]!);
    if (legacy && tokens.length === 3) {
      const security = /^(sec\.|security)$/i.test(legacy[2]!);
      advisory = { id: tokens[0]!, security, severity: security ? securitySeverity(legacy[1]) : UpdateSeverity.UNKNOWN };
      nevra = tokens[2]!;
    } else if (/^(security|bugfix|enhancement|newpackage|unspecified)$/.test(tokens[1]!) && tokens.length >= 4) {
      const security = tokens[1] === "security";
      // dnf5 leaves the severity column empty for most non-security advisories.
      const hasSeverity = /^(Critical|Important|Moderate|Low|None|Unknown)$/i.test(tokens[2]!);
      advisory = { id: tokens[0]!, security, severity: security ? securitySeverity(hasSeverity ? tokens[2] : undefined) : UpdateSeverity.UNKNOWN };
      nevra = hasSeverity ? tokens[3]! : tokens[2]!;
    } else continue;
    const known = byNevra.get(nevra);
    // One package can be fixed by several advisories: keep the most severe.
    if (!known || rank(advisory) > rank(known)) byNevra.set(nevra, advisory);
  }
  return byNevra;
}

const securitySeverity = (word: string | undefined) => {
  const severity = severityFromWord(word);
  return severity === UpdateSeverity.UNKNOWN ? UpdateSeverity.SECURITY : severity;
};

const rank = (a: Advisory) => (a.security ? 10 : 0) + severityRank(a.severity);

const withoutEpoch = (version: string) => version.replace(/^\d+:/, "");

export function toRpmUpdate(source: string, c: RpmCandidate, current: string | undefined, advisory: Advisory | undefined): PackageUpdate {
  return create(PackageUpdateSchema, {
    source,
    name: c.name,
    architecture: c.architecture,
    availableVersion: c.availableVersion,
    currentVersion: current ?? "",
    repository: c.repository,
    severity: advisory?.severity ?? UpdateSeverity.UNKNOWN,
    security: advisory?.security ?? false,
    rebootRequired: RPM_REBOOT_PACKAGES.test(c.name),
  });
}

export function advisoryFor(advisories: Map<string, Advisory>, c: RpmCandidate): Advisory | undefined {
  return (
    advisories.get(`${c.name}-${c.availableVersion}.${c.architecture}`) ??
    advisories.get(`${c.name}-${withoutEpoch(c.availableVersion)}.${c.architecture}`)
  );
}

// dnf or, on old RHEL/CentOS 7, yum.
export async function findDnf(env: NodeJS.ProcessEnv): Promise<{ tool: string; kind: "dnf" | "yum" } | undefined> {
  const path = env.PATH ?? "";
  const dnf = await which("dnf", path);
  if (dnf) return { tool: dnf, kind: "dnf" };
  const yum = await which("yum", path);
  return yum ? { tool: yum, kind: "yum" } : undefined;
}

export async function scanDnf(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(DNF, opts, C_LOCALE);
  const found = await findDnf(s.env);
  if (!found) return s.notPresent("dnf is not installed on this host");
  const { tool, kind } = found;
  const notes: string[] = [];

  if (!opts.refresh) notes.push("metadata not refreshed (refresh disabled)");
  else if (!opts.isRoot) notes.push("metadata not refreshed (refreshing needs root)");
  else {
    const refresh = await s.run([tool, "-q", "makecache"], Math.min(5 * 60_000, s.remaining() * 0.6));
    if (opts.signal?.aborted) return s.failed("scan stopped");
    if (refresh.exitCode !== 0) notes.push(`metadata not refreshed: ${describeFailure(`${kind} makecache`, refresh)}`);
  }

  // -C: use the cache only, so a scan never waits on the network after the refresh above.
  const check = await s.run([tool, "-q", ...(opts.refresh && opts.isRoot ? [] : ["-C"]), "check-update"]);
  // 100 means "updates available", 0 "none"; anything else is an error.
  if (check.exitCode !== 0 && check.exitCode !== 100) {
    return s.failed([describeFailure(`${kind} check-update`, check), ...notes].join("; "));
  }
  const { candidates, ignoredLines } = parseCheckUpdate(check.stdout);
  if (ignoredLines > 0) notes.push(`${plural(ignoredLines, "unrecognised line")} in ${kind} output ignored`);
  if (candidates.length === 0) return s.ran([], notes);

  const installed = await queryRpm(s.env, candidates.map((c) => c.name), s.run);

  // Advisories say which updates fix what, and how badly; without them severity is unknown.
  const info = await s.run(kind === "yum" ? [tool, "-q", "-C", "updateinfo", "list", "updates"] : [tool, "-q", "-C", "updateinfo", "list", "--updates"]);
  const advisories = info.exitCode === 0 ? parseUpdateInfo(info.stdout) : new Map<string, Advisory>();
  if (info.exitCode !== 0) notes.push(`no advisory data: ${describeFailure(`${kind} updateinfo`, info)}`);

  const updates = candidates.map((c) =>
    toRpmUpdate(DNF, c, installed.get(`${c.name}.${c.architecture}`) ?? installed.get(c.name), advisoryFor(advisories, c)),
  );
  if (kind === "yum") notes.push("using yum");
  return s.ran(updates, notes);
}

export const dnfScanner: Scanner = { name: DNF, scan: scanDnf };

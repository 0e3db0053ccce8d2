import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { plural, pluralOrNo } from "@redflag/common/plural";
import { type PackageUpdate, SubsystemRunSchema, SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { runProcess, type ProcessResult } from "../run-process.ts";
import type { ScanOptions, ScanResult } from "./types.ts";

// Untranslated output from tools that honour the C locale.
export const C_LOCALE = { LC_ALL: "C", LANG: "C", LANGUAGE: "" } as const;

// The clock and result builders of one scan: every child gets what is left of the budget.
export function scanSession(subsystem: string, opts: ScanOptions, extraEnv: NodeJS.ProcessEnv = {}) {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const env = { ...opts.env, ...extraEnv };
  const remaining = () => Math.max(1000, deadline - Date.now());
  const done = (state: SubsystemRunState, message: string, updates: PackageUpdate[] = []): ScanResult => ({
    run: create(SubsystemRunSchema, {
      subsystem,
      state,
      message,
      duration: durationFromMs(Date.now() - started),
      updateCount: updates.length,
    }),
    updates,
  });
  return {
    env,
    remaining,
    run: (argv: readonly string[], timeoutMs = remaining()): Promise<ProcessResult> =>
      runProcess(argv, { env, signal: opts.signal, timeoutMs: Math.min(timeoutMs, remaining()) }),
    notPresent: (message: string) => done(SubsystemRunState.NOT_PRESENT, message),
    failed: (message: string) => done(SubsystemRunState.FAILED, message),
    ran: (updates: PackageUpdate[], notes: string[] = []) => done(SubsystemRunState.RAN, [countSummary(updates), ...notes].join("; "), updates),
  };
}

// "5 updates, 2 security"; "no updates" when the source has none.
export function countSummary(updates: readonly PackageUpdate[]): string {
  if (updates.length === 0) return pluralOrNo(0, "update");
  return `${plural(updates.length, "update")}, ${updates.filter((u) => u.security).length} security`;
}

// "Critical", "important", "Moderate", "low" as advisories spell them; anything else is unknown.
export function severityFromWord(word: string | undefined): UpdateSeverity {
  switch (word?.trim().toLowerCase()) {
    case "critical":
      return UpdateSeverity.CRITICAL;
    case "important":
      return UpdateSeverity.IMPORTANT;
    case "moderate":
      return UpdateSeverity.MODERATE;
    case "low":
      return UpdateSeverity.LOW;
    default:
      return UpdateSeverity.UNKNOWN;
  }
}

// How bad a severity is, to keep the worst of several advisories: an unrated security fix
// ranks above "low" and below "moderate".
const SEVERITY_RANK: Record<number, number> = {
  [UpdateSeverity.UNKNOWN]: 0,
  [UpdateSeverity.LOW]: 1,
  [UpdateSeverity.SECURITY]: 2,
  [UpdateSeverity.MODERATE]: 3,
  [UpdateSeverity.IMPORTANT]: 4,
  [UpdateSeverity.CRITICAL]: 5,
};
export const severityRank = (severity: UpdateSeverity): number => SEVERITY_RANK[severity] ?? 0;

// "12.3 MiB", "58MB", "100 k", "2.3 M" → bytes; 0n when it cannot tell. `unit` is what the
// tool means by k/M/G: 1024 for most package managers, 1000 for snap and flatpak (SI).
export function parseSize(text: string | undefined, unit: 1000 | 1024 = 1024): bigint {
  const match = /^\s*([\d.,]+)\s*([kKmMgGtT]?)(i?[bB])?\s*$/.exec((text ?? "").replace(/\u00a0/g, " "));
  if (!match) return 0n;
  const value = Number(match[1]!.replace(",", "."));
  if (!Number.isFinite(value)) return 0n;
  const power = { "": 0, k: 1, m: 2, g: 3, t: 4 }[match[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  // "MiB" is always binary, whatever the tool's habit.
  const base = match[3]?.toLowerCase() === "ib" ? 1024 : unit;
  return BigInt(Math.round(value * base ** power));
}

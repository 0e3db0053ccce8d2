import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import type { ProcessResult } from "../../run-process.ts";
import { describeFailure, which } from "../../run-process.ts";
import { C_LOCALE, parseSize, scanSession } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const FLATPAK = "flatpak";

export const REMOTE_COLUMNS = "application,version,branch,origin,arch,commit,download-size";
export const LIST_COLUMNS = "application,version,branch,arch,origin,active";

export interface FlatpakRow {
  application: string;
  version: string;
  branch: string;
  origin: string;
  arch: string;
  commit: string;
  size: string;
}

// flatpak prints --columns output tab-separated when stdout is not a terminal. Older
// releases pad with spaces instead; then cells are split on runs of two or more spaces.
export function parseColumns(text: string, columns: readonly string[]): Record<string, string>[] {
  const rows: Record<string, string>[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const cells = line.includes("\t") ? line.split("\t") : line.trim().split(/\s{2,}/);
    if (cells.length < 2) continue;
    const row: Record<string, string> = {};
    columns.forEach((c, i) => (row[c] = (cells[i] ?? "").trim()));
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$/.test(row.application ?? "")) continue;
    rows.push(row);
  }
  return rows;
}

export function parseRemoteUpdates(text: string): FlatpakRow[] {
  return parseColumns(text, REMOTE_COLUMNS.split(",")).map((r) => ({
    application: r.application!,
    version: r.version ?? "",
    branch: r.branch ?? "",
    origin: r.origin ?? "",
    arch: r.arch ?? "",
    commit: r.commit ?? "",
    size: r["download-size"] ?? "",
  }));
}

export interface InstalledRef {
  application: string;
  version: string;
  branch: string;
  arch: string;
  commit: string;
  // The remote it was installed from.
  origin?: string;
}

export function parseInstalled(text: string): Map<string, InstalledRef> {
  const refs = new Map<string, InstalledRef>();
  for (const r of parseColumns(text, LIST_COLUMNS.split(","))) {
    const ref = { application: r.application!, version: r.version ?? "", branch: r.branch ?? "", arch: r.arch ?? "", commit: r.active ?? "", origin: r.origin ?? "" };
    refs.set(`${ref.application}/${ref.arch}/${ref.branch}`, ref);
    if (!refs.has(ref.application)) refs.set(ref.application, ref);
  }
  return refs;
}

// Runtimes and many apps publish no version: the commit stands in for it.
export const versionOf = (version: string, commit: string) => version || commit.slice(0, 12) || "unknown";

export function toFlatpakUpdate(row: FlatpakRow, installed: InstalledRef | undefined): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: FLATPAK,
    name: row.application,
    currentVersion: installed ? versionOf(installed.version, installed.commit) : "",
    availableVersion: versionOf(row.version, row.commit),
    architecture: row.arch,
    repository: row.origin,
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: parseSize(row.size, 1000),
    rebootRequired: false,
  });
}

export async function pendingFlatpaks(run: (argv: string[]) => Promise<ProcessResult>, flatpak: string, cached: boolean) {
  const res = await run([flatpak, "remote-ls", "--system", "--updates", ...(cached ? ["--cached"] : []), `--columns=${REMOTE_COLUMNS}`]);
  if (res.exitCode !== 0) return { rows: [] as FlatpakRow[], error: describeFailure("flatpak remote-ls --updates", res) };
  return { rows: parseRemoteUpdates(res.stdout), error: undefined };
}

export async function scanFlatpak(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(FLATPAK, opts, C_LOCALE);
  const flatpak = await which("flatpak", s.env.PATH ?? "");
  if (!flatpak) return s.notPresent("flatpak is not installed on this host");
  const notes: string[] = [];
  // --cached reads the remotes' summaries flatpak already has instead of fetching them.
  if (!opts.refresh) notes.push("remote metadata not refreshed (refresh disabled)");
  const pending = await pendingFlatpaks(s.run, flatpak, !opts.refresh);
  if (pending.error) return s.failed([pending.error, ...notes].join("; "));
  const list = await s.run([flatpak, "list", "--system", `--columns=${LIST_COLUMNS}`]);
  const installed = list.exitCode === 0 ? parseInstalled(list.stdout) : new Map<string, InstalledRef>();
  if (list.exitCode !== 0) notes.push(`installed versions unknown: ${describeFailure("flatpak list", list)}`);
  const updates = pending.rows.map((r) => toFlatpakUpdate(r, installed.get(`${r.application}/${r.arch}/${r.branch}`) ?? installed.get(r.application)));
  return s.ran(updates, notes);
}

export const flatpakScanner: Scanner = { name: FLATPAK, scan: scanFlatpak };

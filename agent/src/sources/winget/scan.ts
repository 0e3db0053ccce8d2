import { create } from "@bufbuild/protobuf";
import { pick, plural } from "@redflag/common/plural";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { access, readdir } from "node:fs/promises";
import path from "node:path";
import { describeFailure, runProcess, which, type ProcessOptions, type ProcessResult } from "../../run-process.ts";
import { scanSession } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const WINGET = "winget";
// Never a prompt: agreements accepted up front, no interactive input.
export const WINGET_FLAGS: readonly string[] = ["--accept-source-agreements", "--disable-interactivity"];

// winget's exit codes are HRESULTs (doc/windows/package-manager/winget/returnCodes.md in
// microsoft/winget-cli); these are the ones an agent meets, in words an operator can act on.
export const WINGET_ERRORS: Readonly<Record<number, string>> = {
  0x8a150001: "internal error",
  0x8a150002: "invalid command line arguments",
  0x8a150003: "executing the command failed",
  0x8a150006: "running the installer failed",
  0x8a150008: "downloading the installer failed (network)",
  0x8a15000b: "the configured source information is corrupt (winget source reset --force)",
  0x8a15000f: "data required by the source is missing (winget source reset --force)",
  0x8a150010: "none of the installers applies to this system",
  0x8a150011: "the installer's hash does not match the manifest",
  0x8a150014: "no installed package matches",
  0x8a150015: "no sources are configured (winget source reset --force)",
  0x8a150016: "several packages match; an exact ID is needed",
  0x8a150017: "no manifest matches (the version may no longer be in the source)",
  0x8a150019: "the command needs administrator rights",
  0x8a15002b: "no applicable upgrade found",
  0x8a15003a: "blocked by Group Policy",
  0x8a150041: "package agreements were not accepted",
  0x8a150045: "a source could not be opened (network or source problem)",
  0x8a150046: "source agreements were not accepted",
  0x8a150049: "the MSI installation failed",
  0x8a15004b: "one or more sources could not be opened (network or source problem)",
  0x8a15004f: "the upgrade version is not newer than the installed one",
  0x8a150050: "the installed version is unknown",
  0x8a150056: "the installer refuses to run as administrator",
  0x8a15005e: "the server certificate did not match (a proxy intercepting TLS?)",
  0x8a150061: "a version of the package is already installed",
  0x8a150068: "the package is pinned (winget pin)",
  0x8a15006d: "a required service is busy or unavailable; try again later",
  0x8a15007d: "a package installed for one user cannot be changed from an administrator context",
  0x8a15008e: "the upgrade uses a different install technology; uninstall and install it instead",
  0x8a150101: "the application is running; close it and try again",
  0x8a150102: "another installation is in progress; try again later",
  0x8a150103: "files are in use; close the application and try again",
  0x8a150104: "a dependency is missing",
  0x8a150105: "the disk is full",
  0x8a150106: "not enough memory",
  0x8a150107: "the installer needs network access",
  0x8a150108: "the installer failed; contact the vendor",
  0x8a150109: "restart the computer to finish the installation",
  0x8a15010a: "restart the computer, then try again",
  0x8a15010b: "the computer will restart to finish the installation",
  0x8a15010c: "the installation was cancelled",
  0x8a15010d: "another version of the application is already installed",
  0x8a15010e: "a higher version of the application is already installed",
  0x8a15010f: "blocked by organization policy",
  0x8a150110: "installing the package's dependencies failed",
  0x8a150111: "the application is in use by another application",
  0x8a150113: "the package does not support this system",
  0x8a150114: "the installer cannot upgrade an existing installation",
};

export const UPDATE_NOT_APPLICABLE = 0x8a15002b;
export const NO_APPLICATIONS_FOUND = 0x8a150014;
export const PACKAGE_IS_PINNED = 0x8a150068;
const FAILED_TO_OPEN_ALL_SOURCES = 0x8a15004b;
// Exit codes that mean a restart is needed: to finish (success), before installing, or started.
export const REBOOT_CODES: ReadonlySet<number> = new Set([0x8a150109, 0x8a15010a, 0x8a15010b]);

// The exit status as winget's unsigned HRESULT (Node reports it signed on Windows).
export const wingetCode = (result: ProcessResult): number | undefined => (result.exitCode === null ? undefined : result.exitCode >>> 0);
export const hresult = (code: number): string => `0x${code.toString(16).toUpperCase().padStart(8, "0")}`;

// PATH as Windows spells it ("Path") when the environment is a plain copy.
export const envValue = (env: NodeJS.ProcessEnv, name: string): string | undefined =>
  env[name] ?? Object.entries(env).find(([k]) => k.toUpperCase() === name.toUpperCase())?.[1];

const ESCAPES = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)/g;

// What each line finally shows: winget (before 1.10, or on a console) redraws a spinner and
// progress bars with carriage returns before its output, and may colour it.
export function cleanLines(text: string): string[] {
  return text.split("\n").map((raw) => {
    const line = raw.replace(/\r+$/, "");
    return (line.split("\r").at(-1) ?? "").replace(ESCAPES, "").trimEnd();
  });
}

// Display columns of one character, as winget measures them: East Asian Wide and Fullwidth
// characters take two, everything else one (per grapheme cluster, so combining marks add
// nothing). The ranges below are the W/F blocks of Unicode's EastAsianWidth.txt.
const WIDE: readonly [number, number][] = [
  [0x1100, 0x115f], [0x231a, 0x231b], [0x2329, 0x232a], [0x23e9, 0x23ec], [0x23f0, 0x23f0], [0x23f3, 0x23f3],
  [0x25fd, 0x25fe], [0x2614, 0x2615], [0x2648, 0x2653], [0x267f, 0x267f], [0x2693, 0x2693], [0x26a1, 0x26a1],
  [0x26aa, 0x26ab], [0x26bd, 0x26be], [0x26c4, 0x26c5], [0x26ce, 0x26ce], [0x26d4, 0x26d4], [0x26ea, 0x26ea],
  [0x26f2, 0x26f3], [0x26f5, 0x26f5], [0x26fa, 0x26fa], [0x26fd, 0x26fd], [0x2705, 0x2705], [0x270a, 0x270b],
  [0x2728, 0x2728], [0x274c, 0x274c], [0x274e, 0x274e], [0x2753, 0x2755], [0x2757, 0x2757], [0x2795, 0x2797],
  [0x27b0, 0x27b0], [0x27bf, 0x27bf], [0x2b1b, 0x2b1c], [0x2b50, 0x2b50], [0x2b55, 0x2b55], [0x2e80, 0x303e],
  [0x3041, 0x33ff], [0x3400, 0x4dbf], [0x4e00, 0x9fff], [0xa000, 0xa4cf], [0xa960, 0xa97f], [0xac00, 0xd7a3],
  [0xf900, 0xfaff], [0xfe10, 0xfe19], [0xfe30, 0xfe6f], [0xff00, 0xff60], [0xffe0, 0xffe6], [0x16fe0, 0x16fe4],
  [0x17000, 0x18aff], [0x1b000, 0x1b2ff], [0x1f004, 0x1f004], [0x1f0cf, 0x1f0cf], [0x1f18e, 0x1f18e],
  [0x1f191, 0x1f19a], [0x1f200, 0x1f2ff], [0x1f300, 0x1f64f], [0x1f680, 0x1f6ff], [0x1f7e0, 0x1f7eb],
  [0x1f90c, 0x1f9ff], [0x1fa70, 0x1faff], [0x20000, 0x2fffd], [0x30000, 0x3fffd],
];

export function charWidth(codePoint: number): number {
  let lo = 0;
  let hi = WIDE.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [from, to] = WIDE[mid]!;
    if (codePoint < from) hi = mid - 1;
    else if (codePoint > to) lo = mid + 1;
    else return 2;
  }
  return 1;
}

const graphemes = new Intl.Segmenter("en", { granularity: "grapheme" });

// Each grapheme cluster of `line` with the display column it starts at.
function cells(line: string): { text: string; col: number }[] {
  const out: { text: string; col: number }[] = [];
  let col = 0;
  for (const { segment } of graphemes.segment(line)) {
    out.push({ text: segment, col });
    col += charWidth(segment.codePointAt(0)!);
  }
  return out;
}

export const displayWidth = (text: string): number => {
  const all = cells(text);
  const last = all.at(-1);
  return last ? last.col + charWidth(last.text.codePointAt(0)!) : 0;
};

// The text of `line` between display columns [from, to), trimmed.
export function sliceColumns(line: string, from: number, to: number): string {
  return cells(line)
    .filter((c) => c.col >= from && c.col < to)
    .map((c) => c.text)
    .join("")
    .trim();
}

export interface WingetTable {
  header: string[];
  rows: string[][];
}

const DASHES = /^-{3,}$/;
// "5 upgrades available.", "2 Aktualisierungen verfügbar.", "3 package(s) have pins …".
const COUNT_LINE = /^\d+\s.*[.。]$/;

// Every table in winget's output. winget prints each as a header line of translated titles,
// a line of dashes, then one line per row, with each column as wide as its widest cell (in
// display columns) and one space between columns; a column that is empty in every row is left
// out, title included. Column starts are the header's word starts, kept only where every row
// has a space just before and some row has text there (a title with a space inside, in some
// translation, is not a column). Rows end at a blank line, a count line, or the next table.
export function parseWingetTables(text: string): WingetTable[] {
  const lines = cleanLines(text);
  const tables: WingetTable[] = [];
  for (let i = 1; i < lines.length; i++) {
    if (!DASHES.test(lines[i]!.trim()) || !lines[i - 1]!.trim()) continue;
    const header = lines[i - 1]!;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length; j++) {
      const line = lines[j]!;
      if (!line.trim() || COUNT_LINE.test(line.trim()) || DASHES.test(lines[j + 1]?.trim() ?? "")) break;
      body.push(line);
    }
    const headerCells = cells(header);
    const candidates = headerCells.filter((c, k) => c.text !== " " && (k === 0 || headerCells[k - 1]!.text === " ")).map((c) => c.col);
    // What each display column of a row shows (both columns of a wide character).
    const byColumn = body.map((row) => new Map(cells(row).flatMap((c) => (charWidth(c.text.codePointAt(0)!) === 2 ? [[c.col, c.text], [c.col + 1, c.text]] : [[c.col, c.text]]) as [number, string][])));
    const blank = (row: Map<number, string>, col: number) => (row.get(col) ?? " ") === " ";
    const starts = candidates.filter(
      (col, k) => k === 0 || body.length === 0 || (byColumn.every((row) => blank(row, col - 1)) && byColumn.some((row) => !blank(row, col))),
    );
    const split = (line: string) => starts.map((s, k) => sliceColumns(line, s, starts[k + 1] ?? Infinity));
    tables.push({ header: split(header), rows: body.map(split) });
    i += body.length;
  }
  return tables;
}

export interface WingetRow {
  name: string;
  id: string;
  version: string;
  available: string;
  source: string;
}

const ID = /^[^\s"'`]+$/;

// `winget upgrade --include-unknown`: the first table lists what `winget upgrade --all` would
// upgrade (Name, Id, Version, Available, Source, in that order in every language); later
// tables list pinned packages that need explicit targeting. An ID cut off with "…" (a console
// narrower than the table) cannot be targeted and is counted instead.
export function parseUpgradeTable(text: string): { rows: WingetRow[]; truncated: number; explicit: number; ignored: number } {
  const [first, ...rest] = parseWingetTables(text);
  const rows: WingetRow[] = [];
  let truncated = 0;
  let ignored = 0;
  for (const cellsOfRow of first?.rows ?? []) {
    const [name = "", id = "", version = "", available = "", source = ""] = cellsOfRow;
    if (id.endsWith("…")) truncated++;
    else if (!ID.test(id) || !available || !version) ignored++;
    else rows.push({ name, id, version, available, source });
  }
  const explicit = rest.reduce((n, t) => n + t.rows.length, 0);
  return { rows, truncated, explicit, ignored };
}

// The installed version in `winget list --id X --exact` (Name, Id, Version, …), if listed.
export function parseListVersion(text: string, id: string): string | undefined {
  for (const table of parseWingetTables(text)) {
    const row = table.rows.find((r) => r[1]?.toLowerCase() === id.toLowerCase());
    if (row?.[2]) return row[2];
  }
  return undefined;
}

// winget says nothing about security or severity: every update is UNKNOWN.
export function toWingetUpdate(row: WingetRow): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: WINGET,
    name: row.id,
    currentVersion: row.version,
    availableVersion: row.available,
    architecture: "",
    repository: row.source || "winget",
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: 0n,
    rebootRequired: false,
  });
}

// winget's last words: its errors go to stdout, after any progress drawing.
export function wingetSaid(result: ProcessResult): string | undefined {
  const lines = cleanLines(`${result.stdout}\n${result.stderr}`)
    .map((l) => l.trim())
    .filter((l) => l && !/^[-\\|/\s█▒▓░]*$/.test(l) && !/^[█▒▓░]/.test(l));
  const last = lines.at(-1);
  return last === undefined ? undefined : last.length > 300 ? `${last.slice(0, 300)}…` : last;
}

// Why a winget run failed, in one line: the HRESULT, what it means, what winget printed last.
export function wingetFailure(what: string, result: ProcessResult): string {
  const code = wingetCode(result);
  if (result.spawnError || result.timedOut || result.aborted || code === undefined) return describeFailure(what, result);
  const status = code >= 0x80000000 ? hresult(code) : `exit status ${code}`;
  const known = WINGET_ERRORS[code];
  const said = wingetSaid(result);
  return `${what} failed (${status}${known ? `: ${known}` : ""})${said ? `: ${said}` : ""}`;
}

export interface WingetHostOptions {
  platform?: NodeJS.Platform;
  // Where the App Installer package lives (default %ProgramFiles%\WindowsApps).
  windowsApps?: string;
  // How children run (default runProcess). Tests widen a fake's 8-bit exit status to the
  // HRESULT winget exits with on Windows, which no POSIX process can.
  exec?: (argv: readonly string[], opts: ProcessOptions) => Promise<ProcessResult>;
}

const APP_INSTALLER = /^Microsoft\.DesktopAppInstaller_([\d.]+)_(x64|arm64|x86|neutral)__8wekyb3d8bbwe$/i;
const versionOrder = new Intl.Collator("en", { numeric: true }).compare;

// winget on PATH (the agent's which() adds .exe on Windows), else the App Installer package's
// own winget.exe: a service running as SYSTEM has no per-user WindowsApps alias on its PATH.
export async function findWinget(env: NodeJS.ProcessEnv, host: WingetHostOptions = {}): Promise<string | undefined> {
  const onPath = await which("winget", envValue(env, "PATH") ?? "");
  if (onPath || (host.platform ?? process.platform) !== "win32") return onPath;
  const dir = host.windowsApps ?? path.join(envValue(env, "ProgramW6432") ?? envValue(env, "ProgramFiles") ?? "C:\\Program Files", "WindowsApps");
  const arch = { x64: "x64", arm64: "arm64", ia32: "x86" }[process.arch as string] ?? "x64";
  const packages = (await readdir(dir).catch(() => [] as string[]))
    .map((entry) => ({ entry, match: APP_INSTALLER.exec(entry) }))
    .filter((p) => p.match)
    .sort((a, b) => Number(b.match![2]!.toLowerCase() === arch) - Number(a.match![2]!.toLowerCase() === arch) || versionOrder(b.match![1]!, a.match![1]!));
  for (const { entry } of packages) {
    const exe = path.join(dir, entry, "winget.exe");
    if (await access(exe).then(() => true, () => false)) return exe;
  }
  return undefined;
}

export const upgradeListArgv = (winget: string) => [winget, "upgrade", "--include-unknown", ...WINGET_FLAGS];

// The pending upgrades, or why winget could not list them.
export async function listUpgrades(run: (argv: string[]) => Promise<ProcessResult>, winget: string) {
  const result = await run(upgradeListArgv(winget));
  const code = wingetCode(result);
  const parsed = parseUpgradeTable(result.stdout);
  const notes: string[] = [];
  const hasTable = parseWingetTables(result.stdout).length > 0;
  if (code !== 0 && code !== UPDATE_NOT_APPLICABLE && code !== NO_APPLICATIONS_FOUND) {
    // One source failing (often msstore) still leaves the others' table.
    if (code !== FAILED_TO_OPEN_ALL_SOURCES || !hasTable) return { ...parsed, rows: [] as WingetRow[], notes, error: wingetFailure("winget upgrade", result) };
    notes.push(`some sources could not be opened (${hresult(code)}); their upgrades are missing`);
  }
  if (!hasTable && code === 0) {
    const said = wingetSaid(result);
    if (said && !COUNT_LINE.test(said)) notes.push(`no upgrade table in winget's output: ${said}`);
  }
  if (parsed.truncated > 0) notes.push(`${plural(parsed.truncated, "package")} left out: winget cut off ${pick(parsed.truncated, "its ID", "their IDs")}`);
  if (parsed.explicit > 0) notes.push(`${plural(parsed.explicit, "pinned package")} left out (winget pin)`);
  if (parsed.ignored > 0) notes.push(`${plural(parsed.ignored, "unrecognised row")} ignored`);
  return { ...parsed, notes, error: undefined };
}

export async function scanWinget(opts: ScanOptions, host: WingetHostOptions = {}): Promise<ScanResult> {
  const s = scanSession(WINGET, opts);
  const winget = await findWinget(s.env, host);
  if (!winget) return s.notPresent("winget is not installed on this host");
  const exec = host.exec ?? runProcess;
  // winget refreshes its source index itself when it is older than its update interval.
  const list = await listUpgrades((argv) => exec(argv, { env: s.env, signal: opts.signal, timeoutMs: s.remaining() }), winget);
  if (list.error) return s.failed(list.error);
  return s.ran(list.rows.map(toWingetUpdate), list.notes);
}

export const wingetScanner: Scanner = { name: WINGET, scan: (opts) => scanWinget(opts) };

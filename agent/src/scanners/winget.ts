import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { which, type ProcessResult } from "../run-process.ts";
import { scanSession } from "./common.ts";
import type { Scanner, ScanOptions, ScanResult } from "./types.ts";

export const WINGET = "winget";
export const WINGET_FLAGS = ["--accept-source-agreements", "--disable-interactivity"];

// winget's HRESULTs (exit codes) that mean "nothing to do", and the ones people meet most.
const NO_UPDATE = new Set([0x8a15002b, 0x8a150014]);
const KNOWN: Record<number, string> = {
  0x8a15002b: "no applicable upgrade found",
  0x8a150014: "no installed package matches",
  0x8a150011: "the source could not be opened (check the winget sources and the network)",
  0x8a15000f: "data required by the source is missing (run winget source reset)",
};

export const wingetCode = (result: ProcessResult) => (result.exitCode === null ? undefined : result.exitCode >>> 0);

export function wingetFailure(what: string, result: ProcessResult): string {
  if (result.spawnError) return `${what} could not start: ${result.spawnError.message}`;
  if (result.timedOut) return `${what} timed out after ${Math.round(result.durationMs / 1000)}s`;
  const code = wingetCode(result);
  const hex = code !== undefined ? `0x${code.toString(16).toUpperCase()}` : `signal ${result.signal}`;
  // winget writes its errors to stdout.
  const last = cleanLines(result.stdout).filter((l) => l.trim()).at(-1)?.trim();
  const known = code !== undefined ? KNOWN[code] : undefined;
  return `${what} failed (${hex}${known ? `: ${known}` : ""})${last ? `: ${last.slice(0, 300)}` : ""}`;
}

// winget redraws a progress spinner with carriage returns before the table: keep what each
// line finally shows.
export function cleanLines(text: string): string[] {
  return text.split("\n").map((l) => (l.split("\r").at(-1) ?? "").replace(/\u001b\[[0-9;]*[A-Za-z]/g, "").trimEnd());
}

// Display width of one character: East Asian wide and fullwidth characters take two columns,
// combining marks none. winget aligns its columns in display width, not in characters.
export function charWidth(code: number): number {
  if ((code >= 0x300 && code <= 0x36f) || code === 0x200b) return 0;
  if (
    (code >= 0x1100 && code <= 0x115f) ||
    (code >= 0x2e80 && code <= 0xa4cf && code !== 0x303f) ||
    (code >= 0xac00 && code <= 0xd7a3) ||
    (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) ||
    (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) ||
    (code >= 0x20000 && code <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}

// The text of `line` between display columns [from, to).
export function sliceColumns(line: string, from: number, to: number): string {
  let col = 0;
  let out = "";
  for (const ch of line) {
    const w = charWidth(ch.codePointAt(0)!);
    if (col >= from && col < to) out += ch;
    col += w;
    if (col >= to) break;
  }
  return out.trim();
}

// A winget table: the header line above the dashes gives the columns' start positions (its
// words are translated, so only their order counts), rows run until a blank line or the
// "N upgrades available." summary. Only the first table is read (later ones list packages
// that need explicit targeting).
export function parseWingetTable(text: string): string[][] {
  const lines = cleanLines(text);
  const dashes = lines.findIndex((l) => /^-{10,}$/.test(l.trim()));
  if (dashes < 1) return [];
  const header = lines[dashes - 1]!;
  const starts: number[] = [];
  let col = 0;
  let inWord = false;
  for (const ch of header) {
    const space = ch === " ";
    if (!space && !inWord) starts.push(col);
    inWord = !space;
    col += charWidth(ch.codePointAt(0)!);
  }
  const rows: string[][] = [];
  for (const line of lines.slice(dashes + 1)) {
    if (!line.trim() || /^\d+ \S.*\.$/.test(line.trim())) break;
    rows.push(starts.map((s, i) => sliceColumns(line, s, starts[i + 1] ?? Infinity)));
  }
  return rows;
}

export interface WingetRow {
  name: string;
  id: string;
  version: string;
  available: string;
  source: string;
}

export function parseUpgradeTable(text: string): { rows: WingetRow[]; truncated: number } {
  const rows: WingetRow[] = [];
  let truncated = 0;
  for (const cells of parseWingetTable(text)) {
    const [name = "", id = "", version = "", available = "", source = ""] = cells;
    if (!id || !available) continue;
    // A cut-off ID ("Microsoft.VCRedist.2015+…") cannot be installed by ID.
    if (id.endsWith("…")) {
      truncated++;
      continue;
    }
    rows.push({ name, id, version, available, source });
  }
  return { rows, truncated };
}

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
    rebootRequired: false,
  });
}

export async function listUpgrades(run: (argv: string[]) => Promise<ProcessResult>, winget: string) {
  const res = await run([winget, "upgrade", "--include-unknown", ...WINGET_FLAGS]);
  const code = wingetCode(res);
  if (code !== 0 && !(code !== undefined && NO_UPDATE.has(code))) return { error: wingetFailure("winget upgrade", res), rows: [] as WingetRow[], truncated: 0 };
  return { ...parseUpgradeTable(res.stdout), error: undefined };
}

export async function scanWinget(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(WINGET, opts);
  const winget = await which("winget", s.env.PATH ?? "");
  if (!winget) return s.notPresent("winget is not installed on this host");
  const list = await listUpgrades(s.run, winget);
  if (list.error) return s.failed(list.error);
  const notes = list.truncated > 0 ? [`${list.truncated} package(s) with cut-off IDs left out`] : [];
  return s.ran(list.rows.map(toWingetUpdate), notes);
}

export const wingetScanner: Scanner = { name: WINGET, scan: scanWinget };

import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { describeFailure, which, type ProcessResult } from "../../run-process.ts";
import { C_LOCALE, parseSize, scanSession } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const SNAP = "snap";

export interface SnapRow {
  name: string;
  version: string;
  revision: string;
  // `snap list`: the tracked channel; `snap refresh --list`: the download size.
  fourth: string;
  notes: string;
}

// `snap list [--all]` and `snap refresh --list` print a table whose cells never contain spaces:
//   Name     Version     Rev   Tracking       Publisher   Notes
//   firefox  131.0.3-1   5187  latest/stable  mozilla✓    -
export function parseSnapTable(text: string): SnapRow[] {
  const rows: SnapRow[] = [];
  for (const line of text.split("\n")) {
    const cells = line.trim().split(/\s+/);
    if (cells.length < 5 || cells[0] === "Name" || !/^[a-z0-9][a-z0-9-]*$/.test(cells[0]!) || !/^\d+$/.test(cells[2]!)) continue;
    rows.push({ name: cells[0]!, version: cells[1]!, revision: cells[2]!, fourth: cells[3]!, notes: cells[5] ?? "" });
  }
  return rows;
}

// snapd restarts with core and snapd refreshes; the kernel snap needs a reboot.
const SNAP_REBOOT = /^(pc-kernel|.*-kernel)$/;

export function toSnapUpdate(pending: SnapRow, installed: SnapRow | undefined): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: SNAP,
    name: pending.name,
    currentVersion: installed?.version ?? "",
    availableVersion: pending.version,
    architecture: "",
    repository: installed?.fourth ?? "",
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: parseSize(pending.fourth, 1000),
    rebootRequired: SNAP_REBOOT.test(pending.name),
  });
}

export async function pendingSnaps(run: (argv: string[]) => Promise<ProcessResult>, snap: string) {
  const list = await run([snap, "refresh", "--list"]);
  if (list.exitCode !== 0) return { error: describeFailure("snap refresh --list", list), rows: [] as SnapRow[] };
  return { rows: parseSnapTable(list.stdout), error: undefined };
}

export async function scanSnap(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(SNAP, opts, C_LOCALE);
  const snap = await which("snap", s.env.PATH ?? "");
  if (!snap) return s.notPresent("snap is not installed on this host");
  // The store is always asked: snapd keeps no offline list of refreshes.
  const pending = await pendingSnaps(s.run, snap);
  if (pending.error) return s.failed(pending.error);
  const notes: string[] = [];
  const installed = new Map<string, SnapRow>();
  if (pending.rows.length > 0) {
    const list = await s.run([snap, "list"]);
    if (list.exitCode === 0) for (const row of parseSnapTable(list.stdout)) installed.set(row.name, row);
    else notes.push(`installed versions unknown: ${describeFailure("snap list", list)}`);
  }
  return s.ran(pending.rows.map((r) => toSnapUpdate(r, installed.get(r.name))), notes);
}

export const snapScanner: Scanner = { name: SNAP, scan: scanSnap };

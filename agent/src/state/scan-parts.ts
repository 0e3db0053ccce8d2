import { clone, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ReportResultsRequestSchema, type ScanPart, ScanPartSchema } from "@redflag/gen/agent_service_pb";
import { PackageUpdateSchema, type ScanUpdatesResult, ScanUpdatesResultSchema } from "@redflag/gen/command_pb";
import { mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { readIfExists, writeFileAtomic } from "./files.ts";

// A scan with more updates than this, or whose updates take more bytes, goes to the control
// plane in parts of at most this many updates and bytes, one part per call. The control plane
// accepts at least 1,000 updates per call however it is configured (REDFLAG_MAX_REPORT_UPDATES),
// and at least 64 KiB per request; 1 MiB is well under its default of 8 MiB.
export const PART_UPDATES = 1000;
export const PART_BYTES = 1024 * 1024;

const DIR = "scan-parts";

export interface SplitScan {
  // The scan without its updates; update_parts says how many parts carry them.
  header: ScanUpdatesResult;
  parts: ScanPart[];
}

// Splits a scan that does not fit one call; undefined when it does. `scanId` is the command ID of
// a scan_updates result or the ID of a scheduled scan report.
export function splitScan(scanId: string, scan: ScanUpdatesResult): SplitScan | undefined {
  // An update's size on the wire: its bytes plus the field tag and length in front of them.
  const sizes = scan.updates.map((u) => toBinary(PackageUpdateSchema, u).length + 6);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (scan.updates.length <= PART_UPDATES && total <= PART_BYTES) return undefined;
  const slices: (typeof scan.updates)[] = [];
  let slice: typeof scan.updates = [];
  let bytes = 0;
  scan.updates.forEach((update, i) => {
    const size = sizes[i]!;
    if (slice.length > 0 && (slice.length >= PART_UPDATES || bytes + size > PART_BYTES)) {
      slices.push(slice);
      slice = [];
      bytes = 0;
    }
    slice.push(update);
    bytes += size;
  });
  if (slice.length > 0) slices.push(slice);
  const header = clone(ScanUpdatesResultSchema, scan);
  header.updates = [];
  header.updateParts = slices.length;
  const parts = slices.map((updates, index) => create(ScanPartSchema, { scanId, index, partCount: slices.length, updates }));
  return { header, parts };
}

// The parts of split scans, kept on disk (one file per scan, written before the scan's result or
// report is kept) until the control plane has acknowledged the whole scan.
export interface ScanPartStore {
  // Splits the scan when it is too big and keeps its parts; returns what to keep in its place.
  keep(scanId: string, scan: ScanUpdatesResult): Promise<ScanUpdatesResult>;
  // undefined when no parts are kept for the scan.
  load(scanId: string): Promise<ScanPart[] | undefined>;
  remove(scanId: string): Promise<void>;
  // Removes the parts of every scan not in `pending` (acknowledged or given up while the agent
  // was stopping, or a report that gave way to newer ones).
  prune(pending: Iterable<string>): Promise<void>;
}

export async function openScanPartStore(stateDir: string): Promise<ScanPartStore> {
  const dir = path.join(stateDir, DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // IDs are UUIDs (the control plane refuses anything else); the check keeps paths inside `dir`.
  const file = (scanId: string) => {
    if (!/^[0-9a-f-]{36}$/.test(scanId)) throw new Error(`not a scan ID: ${scanId}`);
    return path.join(dir, `${scanId}.pb`);
  };
  return {
    async keep(scanId, scan) {
      const split = splitScan(scanId, scan);
      if (!split) return scan;
      await writeFileAtomic(file(scanId), toBinary(ReportResultsRequestSchema, create(ReportResultsRequestSchema, { scanParts: split.parts })));
      return split.header;
    },
    async load(scanId) {
      const data = await readIfExists(file(scanId));
      if (!data) return undefined;
      try {
        return fromBinary(ReportResultsRequestSchema, data).scanParts;
      } catch {
        return undefined;
      }
    },
    async remove(scanId) {
      await rm(file(scanId), { force: true });
    },
    async prune(pending) {
      const keep = new Set([...pending].map((id) => `${id}.pb`));
      for (const name of await readdir(dir)) {
        if (!keep.has(name)) await rm(path.join(dir, name), { force: true });
      }
    },
  };
}

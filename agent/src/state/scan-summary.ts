import { type ScanUpdatesResult, SubsystemRunState } from "@redflag/gen/command_pb";
import path from "node:path";
import { createSerialWriter, readIfExists } from "./files.ts";

export interface SourceCounts {
  readonly pending: number;
  readonly security: number;
}

// What the last scans found, reported in AgentStatus on every poll. Kept per source, because a
// scan may cover only some sources (a schedule, a rescan after an install).
export interface ScanSummary {
  readonly scanTime: Date;
  readonly pendingUpdateCount: number;
  readonly securityUpdateCount: number;
  readonly bySource: Readonly<Record<string, SourceCounts>>;
}

// The summary after a scan: sources that ran take the counts of this scan, sources found
// missing are dropped, the others keep what an earlier scan said.
export function mergeScan(previous: ScanSummary | undefined, result: ScanUpdatesResult, scanTime: Date): ScanSummary {
  const bySource: Record<string, SourceCounts> = { ...previous?.bySource };
  for (const run of result.subsystems) {
    if (run.state === SubsystemRunState.NOT_PRESENT) delete bySource[run.subsystem];
    if (run.state !== SubsystemRunState.RAN) continue;
    const updates = result.updates.filter((u) => u.source === run.subsystem);
    bySource[run.subsystem] = { pending: updates.length, security: updates.filter((u) => u.security).length };
  }
  for (const key of Object.keys(bySource)) if (bySource[key]!.pending === 0) delete bySource[key];
  const counts = Object.values(bySource);
  return {
    scanTime,
    pendingUpdateCount: counts.reduce((n, c) => n + c.pending, 0),
    securityUpdateCount: counts.reduce((n, c) => n + c.security, 0),
    bySource,
  };
}

const FILE = "scan-summary.json";

export interface ScanSummaryFile {
  load(): Promise<ScanSummary | undefined>;
  save(summary: ScanSummary): Promise<void>;
}

export function scanSummaryFile(stateDir: string): ScanSummaryFile {
  const file = path.join(stateDir, FILE);
  const write = createSerialWriter(file);
  return {
    async load() {
      const data = await readIfExists(file);
      if (!data) return undefined;
      try {
        const raw = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
        const scanTime = new Date(String(raw.scanTime));
        if (Number.isNaN(scanTime.getTime())) return undefined;
        const bySource: Record<string, SourceCounts> = {};
        if (raw.bySource && typeof raw.bySource === "object") {
          for (const [source, c] of Object.entries(raw.bySource as Record<string, Record<string, unknown>>)) {
            bySource[source] = { pending: Number(c?.pending) || 0, security: Number(c?.security) || 0 };
          }
        }
        return {
          scanTime,
          pendingUpdateCount: Number(raw.pendingUpdateCount) || 0,
          securityUpdateCount: Number(raw.securityUpdateCount) || 0,
          bySource,
        };
      } catch {
        // Only informational: a damaged summary is replaced by the next scan.
        return undefined;
      }
    },
    save: (summary) =>
      write(
        JSON.stringify({
          version: 2,
          scanTime: summary.scanTime.toISOString(),
          pendingUpdateCount: summary.pendingUpdateCount,
          securityUpdateCount: summary.securityUpdateCount,
          bySource: summary.bySource,
        }) + "\n",
      ),
  };
}

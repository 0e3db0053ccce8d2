import path from "node:path";
import { createSerialWriter, readIfExists } from "./files.ts";

// What the last update scan found, reported in AgentStatus on every poll.
export interface ScanSummary {
  readonly scanTime: Date;
  readonly pendingUpdateCount: number;
  readonly securityUpdateCount: number;
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
        return {
          scanTime,
          pendingUpdateCount: Number(raw.pendingUpdateCount) || 0,
          securityUpdateCount: Number(raw.securityUpdateCount) || 0,
        };
      } catch {
        // Only informational: a damaged summary is replaced by the next scan.
        return undefined;
      }
    },
    save: (summary) =>
      write(
        JSON.stringify({
          version: 1,
          scanTime: summary.scanTime.toISOString(),
          pendingUpdateCount: summary.pendingUpdateCount,
          securityUpdateCount: summary.securityUpdateCount,
        }) + "\n",
      ),
  };
}

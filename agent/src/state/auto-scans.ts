import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type ScanReport, ScanReportSchema } from "@redflag/gen/agent_service_pb";
import type { AgentConfig } from "@redflag/gen/common_pb";
import path from "node:path";
import { createSerialWriter, readIfExists } from "./files.ts";

const FILE = "auto-scans.json";
// Reports kept while the control plane is unreachable; older ones give way to newer ones.
const MAX_PENDING = 20;

// Scheduled scans (SubsystemConfig.auto_run): when each subsystem last ran, and the reports not
// yet acknowledged. Kept on disk so a restart neither rescans at once nor loses a report.
export interface AutoScans {
  // Subsystems whose interval has passed since they last ran (never run counts as due).
  due(config: AgentConfig | undefined, now: Date): string[];
  markRun(subsystems: string[], at: Date): Promise<void>;
  add(report: ScanReport): Promise<void>;
  pending(): ScanReport[];
  settle(acknowledgedIds: string[]): Promise<void>;
}

interface Stored {
  lastRun: Record<string, string>;
  pending: string[];
}

export async function openAutoScans(stateDir: string): Promise<AutoScans> {
  const file = path.join(stateDir, FILE);
  const write = createSerialWriter(file);
  let state: Stored = { lastRun: {}, pending: [] };
  const data = await readIfExists(file);
  if (data) {
    try {
      const raw = JSON.parse(data.toString("utf8")) as Partial<Stored>;
      state = { lastRun: raw.lastRun ?? {}, pending: Array.isArray(raw.pending) ? raw.pending : [] };
    } catch {
      // A damaged schedule only means the next scans run early.
    }
  }
  let pending = state.pending.flatMap((b64) => {
    try {
      return [fromBinary(ScanReportSchema, Buffer.from(b64, "base64"))];
    } catch {
      return [];
    }
  });
  const save = () =>
    write(
      JSON.stringify({
        lastRun: state.lastRun,
        pending: pending.map((r) => Buffer.from(toBinary(ScanReportSchema, r)).toString("base64")),
      }),
    );

  return {
    due(config, now) {
      return (config?.subsystems ?? [])
        .filter((s) => s.enabled && s.autoRun && s.intervalSeconds > 0)
        .filter((s) => {
          const last = Date.parse(state.lastRun[s.name] ?? "");
          return Number.isNaN(last) || now.getTime() - last >= s.intervalSeconds * 1000;
        })
        .map((s) => s.name);
    },
    async markRun(subsystems, at) {
      for (const name of subsystems) state.lastRun[name] = at.toISOString();
      await save();
    },
    async add(report) {
      pending = [...pending, report].slice(-MAX_PENDING);
      await save();
    },
    pending: () => pending,
    async settle(ids) {
      const done = new Set(ids);
      pending = pending.filter((r) => !done.has(r.id));
      await save();
    },
  };
}

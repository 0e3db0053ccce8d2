import { AgentError, EXIT_USAGE } from "./errors.ts";
import { StateError } from "./state/files.ts";
import type { HostAccess } from "./platform.ts";
import { machineIdOfThisHost } from "./state/identity.ts";
import { openJournal } from "./state/journal.ts";
import { loadPinnedKeys, registrationFile } from "./state/registration.ts";
import { scanSummaryFile } from "./state/scan-summary.ts";
import { configIssueTime } from "./trust/signed-config.ts";

// What `redflag-agent status` shows. No secrets: IDs, times and counts only.
export interface AgentStatusReport {
  stateDir: string;
  agentId: string;
  server: string;
  machineId: string;
  pinnedKeyIds: string[];
  lastSequence: string;
  journal: { entries: number; unacknowledged: number };
  accessTokenExpireTime: string;
  configRevision: string | null;
  // When the control plane issued that config (a newer one must be issued later).
  configIssueTime: string | null;
  pollIntervalSeconds: number | null;
  lastScan: { time: string; pendingUpdates: number; securityUpdates: number } | null;
  registerTime: string;
}

export async function readStatus(opts: { stateDir: string; machineIdSeed?: string | undefined; host?: HostAccess | undefined }): Promise<AgentStatusReport> {
  try {
    const registration = await registrationFile(opts.stateDir).load();
    if (!registration) {
      throw new AgentError(`not registered: ${opts.stateDir} holds no registration`, EXIT_USAGE);
    }
    const [pins, journal, scan, machineId] = await Promise.all([
      loadPinnedKeys(opts.stateDir),
      // Never changes state: the running agent owns recovery of the journal.
      openJournal(opts.stateDir, { readOnly: true }),
      scanSummaryFile(opts.stateDir).load(),
      machineIdOfThisHost(opts.machineIdSeed, opts.host),
    ]);
    return {
      stateDir: opts.stateDir,
      agentId: registration.agentId,
      server: registration.serverUrl,
      machineId,
      pinnedKeyIds: [...pins.keys()],
      lastSequence: journal.lastSequence.toString(),
      journal: journal.stats(),
      accessTokenExpireTime: registration.accessTokenExpireTime.toISOString(),
      configRevision: registration.agentConfig ? registration.agentConfig.revision.toString() : null,
      configIssueTime: configIssueTime(registration.agentConfig)?.toISOString() ?? null,
      pollIntervalSeconds: registration.agentConfig?.pollIntervalSeconds ?? null,
      lastScan: scan
        ? { time: scan.scanTime.toISOString(), pendingUpdates: scan.pendingUpdateCount, securityUpdates: scan.securityUpdateCount }
        : null,
      registerTime: registration.registerTime.toISOString(),
    };
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(err.message, EXIT_USAGE, { cause: err });
    throw err;
  }
}

export function formatStatus(s: AgentStatusReport): string {
  const rows: [string, string][] = [
    ["agent ID", s.agentId],
    ["server", s.server],
    ["machine ID", s.machineId],
    ["pinned keys", s.pinnedKeyIds.join(", ") || "none"],
    ["last sequence", s.lastSequence],
    ["journal", `${s.journal.entries} entries, ${s.journal.unacknowledged} awaiting acknowledgement`],
    ["access token", `expires ${s.accessTokenExpireTime}`],
    ["config", s.configRevision ? `revision ${s.configRevision}, poll every ${s.pollIntervalSeconds}s${s.configIssueTime ? `, issued ${s.configIssueTime}` : ""}` : "none yet"],
    ["last scan", s.lastScan ? `${s.lastScan.time}: ${s.lastScan.pendingUpdates} updates, ${s.lastScan.securityUpdates} security` : "never"],
    ["state dir", s.stateDir],
  ];
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}`).join("\n");
}

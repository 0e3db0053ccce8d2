import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { StorageMetricsSchema, SystemMetricsSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import {
  DailyActivitySchema,
  HealthCountSchema,
  LabelCountSchema,
  MetricSampleSchema,
  ReportService,
  SeverityCountSchema,
} from "@redflag/gen/report_service_pb";
import type { LastSeenBuffer } from "../cluster/last-seen.ts";
import type { Settings } from "../settings.ts";
import {
  agentExists,
  agentLabels,
  dailyActivity,
  listMetricSamples,
  pendingUpdates,
  rebootRequiredAgents,
  recentFailures,
} from "../store/reports.ts";
import type { Prisma } from "../store/types.ts";
import { healthCutoffs } from "../domain/health.ts";
import { agentToProto, commandToProto, HEALTH_NAMES } from "./convert.ts";
import { countAgentsByHealth } from "../store/agents.ts";
import { withBufferedLastSeen } from "../domain/agents.ts";
import { invalid, time, uuid } from "./validate.ts";

export interface ReportServiceDeps {
  db: Prisma;
  settings: Settings;
  lastSeen: LastSeenBuffer;
}

const DAY_MS = 86_400_000;
const MAX_DAYS = 90;
const DEFAULT_DAYS = 14;
const MAX_REBOOT_HOSTS = 50;
const MAX_FAILURES = 10;
const MAX_SAMPLES = 1000;
const DEFAULT_SAMPLES = 288;
const DEFAULT_METRICS_WINDOW_MS = 7 * DAY_MS;

// Decommissioned last, as the contract asks.
const HEALTHS = [AgentHealth.ONLINE, AgentHealth.OFFLINE, AgentHealth.STALE, AgentHealth.NEVER_REPORTED, AgentHealth.DECOMMISSIONED];
// Most severe first; an unrated security fix ranks between low and moderate, as the agents'
// own scanners rank it.
const SEVERITY_ORDER = [
  UpdateSeverity.CRITICAL,
  UpdateSeverity.IMPORTANT,
  UpdateSeverity.MODERATE,
  UpdateSeverity.SECURITY,
  UpdateSeverity.LOW,
  UpdateSeverity.UNKNOWN,
];
// Stored severities are the enum names in lower case ("critical"); anything else is unknown.
const severityFromName = (name: string): UpdateSeverity => {
  const s = (UpdateSeverity as unknown as Record<string, UpdateSeverity | undefined>)[name.toUpperCase()];
  return s === undefined || s === UpdateSeverity.UNSPECIFIED ? UpdateSeverity.UNKNOWN : s;
};

// Labels with their counts, most common first (then by label, so the order is stable).
function labelCounts(entries: { label: string; count: number }[]) {
  const merged = new Map<string, number>();
  for (const e of entries) merged.set(e.label, (merged.get(e.label) ?? 0) + e.count);
  return [...merged]
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .map(([label, count]) => create(LabelCountSchema, { label, count }));
}

export function createReportService(deps: ReportServiceDeps): ServiceImpl<typeof ReportService> {
  const { db } = deps;
  const interval = () => deps.settings.pollIntervalSeconds;

  return {
    async getFleetOverview(req) {
      if (req.days > MAX_DAYS) throw invalid(`days must be from 1 to ${MAX_DAYS} (0 means ${DEFAULT_DAYS})`);
      const now = new Date();
      const today = Math.floor(now.getTime() / DAY_MS) * DAY_MS;
      const count = req.days || DEFAULT_DAYS;
      const days = Array.from({ length: count }, (_, i) => new Date(today - (count - 1 - i) * DAY_MS));

      const [healthCounts, pending, reboot, failures, daily, labels] = await Promise.all([
        countAgentsByHealth(db, HEALTHS.map((h) => HEALTH_NAMES.get(h)!), healthCutoffs(now, interval())),
        pendingUpdates(db),
        rebootRequiredAgents(db, MAX_REBOOT_HOSTS),
        recentFailures(db, MAX_FAILURES),
        dailyActivity(db, days),
        agentLabels(db),
      ]);

      const bySeverity = new Map<UpdateSeverity, number>();
      for (const s of pending.bySeverity) {
        const severity = severityFromName(s.severity);
        bySeverity.set(severity, (bySeverity.get(severity) ?? 0) + s.count);
      }
      return {
        generateTime: timestampFromDate(now),
        health: HEALTHS.map((health, i) => create(HealthCountSchema, { health, count: healthCounts[i]! })),
        totalAgents: healthCounts.slice(0, -1).reduce((a, b) => a + b, 0),
        pendingBySeverity: SEVERITY_ORDER.filter((s) => bySeverity.has(s)).map((severity) =>
          create(SeverityCountSchema, { severity, count: bySeverity.get(severity)! }),
        ),
        pendingUpdates: pending.pending,
        securityUpdates: pending.security,
        agentsWithUpdates: pending.agents,
        rebootRequired: reboot.rows.map((row) => agentToProto(withBufferedLastSeen(row, deps.lastSeen), now, interval())),
        rebootRequiredCount: reboot.total,
        recentFailures: failures.map(commandToProto),
        daily: daily.map((d) =>
          create(DailyActivitySchema, {
            day: timestampFromDate(d.day),
            updatesFound: d.updatesFound,
            updatesInstalled: d.updatesInstalled,
            updatesFailed: d.updatesFailed,
            commandsSucceeded: d.commandsSucceeded,
            commandsFailed: d.commandsFailed,
          }),
        ),
        agentsByOs: labelCounts(labels.os.map((r) => ({ label: `${r.name} ${r.version}`.trim() || "unknown", count: r.count }))),
        agentsByVersion: labelCounts(labels.versions.map((r) => ({ label: r.version || "unknown", count: r.count }))),
      };
    },

    async listAgentMetrics(req) {
      const agentId = uuid("agent_id", req.agentId);
      if (req.limit > MAX_SAMPLES) throw invalid(`limit must be from 1 to ${MAX_SAMPLES} (0 means ${DEFAULT_SAMPLES})`);
      const since = req.since ? time("since", req.since) : new Date(Date.now() - DEFAULT_METRICS_WINDOW_MS);
      if (!(await agentExists(db, agentId))) throw new ConnectError(`agent ${agentId} does not exist`, Code.NotFound);
      const rows = await listMetricSamples(db, agentId, since, req.limit || DEFAULT_SAMPLES);
      return {
        samples: rows.map((r) =>
          create(MetricSampleSchema, {
            time: timestampFromDate(r.time),
            system: r.system ? fromBinary(SystemMetricsSchema, r.system) : undefined,
            storage: r.storage ? fromBinary(StorageMetricsSchema, r.storage) : undefined,
          }),
        ),
      };
    },
  };
}

import type { Prisma as PrismaNs } from "../generated/prisma/client.ts";
import { listAgents, type AgentRow } from "./agents.ts";
import { pruneStagedScans } from "./scans.ts";
import type { Prisma } from "./types.ts";

// Queries for ReportService. Every figure is counted by the database; only small grouped
// results (a row per severity, per day, per OS) come back.

export interface PendingSummary {
  bySeverity: { severity: string; count: number }[];
  pending: number;
  security: number;
  agents: number;
}

// Pending updates (not rejected; installed ones leave with the next scan) of agents that are
// not decommissioned. The ROLLUP row (severity NULL; the column is never null) holds the
// totals, so agents with updates are counted once however many severities they have.
export async function pendingUpdates(db: Prisma): Promise<PendingSummary> {
  const rows = await db.$queryRaw<{ severity: string | null; updates: number; security: number; agents: number }[]>`
    SELECT u.severity, count(*)::int AS updates, (count(*) FILTER (WHERE u.security))::int AS security,
           count(DISTINCT u.agent_id)::int AS agents
      FROM package_updates u JOIN agents a ON a.id = u.agent_id
     WHERE u.status <> 'rejected' AND a.decommissioned_at IS NULL
     GROUP BY ROLLUP (u.severity)`;
  const total = rows.find((r) => r.severity === null);
  return {
    bySeverity: rows.flatMap((r) => (r.severity === null ? [] : [{ severity: r.severity, count: r.updates }])),
    pending: total?.updates ?? 0,
    security: total?.security ?? 0,
    agents: total?.agents ?? 0,
  };
}

// Agents whose latest status or scan said the host needs a reboot: the first `limit` by
// hostname, and how many in all.
export async function rebootRequiredAgents(db: Prisma, limit: number): Promise<{ rows: AgentRow[]; total: number }> {
  const where: PrismaNs.AgentWhereInput = { rebootRequired: true, decommissionedAt: null };
  const [page, total] = await Promise.all([listAgents(db, limit, undefined, { where, orderBy: [{ hostname: "asc" }] }), db.agent.count({ where })]);
  return { rows: page.rows, total };
}

// The latest commands that failed, were rejected or timed out, newest first.
export async function recentFailures(db: Prisma, limit: number) {
  return db.command.findMany({
    where: { state: { in: ["failed", "rejected", "timed_out"] } },
    orderBy: [{ finishedAt: "desc" }, { id: "desc" }],
    take: limit,
    include: { result: true },
  });
}

export interface DayActivity {
  day: Date;
  updatesFound: number;
  updatesInstalled: number;
  updatesFailed: number;
  commandsSucceeded: number;
  commandsFailed: number;
}

// Activity per UTC day for the given midnights (oldest first), days without any included.
// Commands count by the day they finished; failed counts failed, rejected and timed out.
export async function dailyActivity(db: Prisma, days: Date[]): Promise<DayActivity[]> {
  if (days.length === 0) return [];
  const from = days[0]!;
  return db.$queryRaw<DayActivity[]>`
    WITH days AS (
      SELECT unnest(${days}::timestamptz[]) AS day
    ), events AS (
      SELECT date_trunc('day', time, 'UTC') AS day,
             count(*) FILTER (WHERE kind = 'found') AS found,
             count(*) FILTER (WHERE kind = 'installed') AS installed,
             count(*) FILTER (WHERE kind = 'failed') AS failed
        FROM update_events
       WHERE time >= ${from}
       GROUP BY 1
    ), finished AS (
      SELECT date_trunc('day', finished_at, 'UTC') AS day,
             count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
             count(*) FILTER (WHERE state IN ('failed', 'rejected', 'timed_out')) AS failed
        FROM commands
       WHERE finished_at >= ${from}
       GROUP BY 1
    )
    SELECT d.day,
           COALESCE(e.found, 0)::int AS "updatesFound",
           COALESCE(e.installed, 0)::int AS "updatesInstalled",
           COALESCE(e.failed, 0)::int AS "updatesFailed",
           COALESCE(f.succeeded, 0)::int AS "commandsSucceeded",
           COALESCE(f.failed, 0)::int AS "commandsFailed"
      FROM days d
      LEFT JOIN events e ON e.day = d.day
      LEFT JOIN finished f ON f.day = d.day
     ORDER BY d.day`;
}

// Agents that are not decommissioned, by OS name and version, and by agent version.
export async function agentLabels(db: Prisma) {
  const where: PrismaNs.AgentWhereInput = { decommissionedAt: null };
  const [os, versions] = await Promise.all([
    db.agent.groupBy({ by: ["osName", "osVersion"], where, _count: { _all: true } }),
    db.agent.groupBy({ by: ["agentVersion"], where, _count: { _all: true } }),
  ]);
  return {
    os: os.map((r) => ({ name: r.osName, version: r.osVersion, count: r._count._all })),
    versions: versions.map((r) => ({ version: r.agentVersion, count: r._count._all })),
  };
}

export async function agentExists(db: Prisma, agentId: string): Promise<boolean> {
  return (await db.agent.findUnique({ where: { id: agentId }, select: { id: true } })) !== null;
}

// One agent's readings at or after `since`: the newest `limit` of them, returned oldest first.
export async function listMetricSamples(db: Prisma, agentId: string, since: Date, limit: number) {
  const rows = await db.metricSample.findMany({
    where: { agentId, time: { gte: since } },
    orderBy: [{ time: "desc" }, { id: "desc" }],
    take: limit,
    select: { time: true, system: true, storage: true },
  });
  return rows.reverse();
}

// Retention: readings and update history older than the given times; and scans staged in parts
// that were never completed (expired).
export async function pruneReportData(db: Prisma, before: { metrics: Date; updateEvents: Date }) {
  const [metrics, updateEvents] = await Promise.all([
    db.metricSample.deleteMany({ where: { time: { lt: before.metrics } } }),
    db.updateEvent.deleteMany({ where: { time: { lt: before.updateEvents } } }),
  ]);
  const stagedScans = await pruneStagedScans(db);
  return { metrics: metrics.count, updateEvents: updateEvents.count, stagedScans };
}

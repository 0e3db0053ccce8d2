// The queries behind /metrics and /readyz: cheap, read-only, bounded by a timeout by their callers.
import { plural } from "@redflag/common/plural";
import type pg from "pg";
import type { Prisma } from "./types.ts";

export interface FleetCounts {
  online: number;
  offline: number;
  stale: number;
  neverReported: number;
  decommissioned: number;
  // Commands queued and not yet delivered.
  pending: number;
}

// Agents by health (the thresholds of services/convert.ts agentHealth) and the queue depth, in
// one statement on one connection, so a scrape never takes a share of the pool.
export async function countFleet(db: Prisma, cutoffs: { online: Date; offline: Date }): Promise<FleetCounts> {
  const [row] = await db.$queryRaw<Record<keyof FleetCounts, bigint>[]>`
    SELECT
      count(*) FILTER (WHERE decommissioned_at IS NULL AND last_seen_at >= ${cutoffs.online}) AS online,
      count(*) FILTER (WHERE decommissioned_at IS NULL AND last_seen_at < ${cutoffs.online} AND last_seen_at >= ${cutoffs.offline}) AS offline,
      count(*) FILTER (WHERE decommissioned_at IS NULL AND last_seen_at < ${cutoffs.offline}) AS stale,
      count(*) FILTER (WHERE decommissioned_at IS NULL AND last_seen_at IS NULL) AS "neverReported",
      count(*) FILTER (WHERE decommissioned_at IS NOT NULL) AS decommissioned,
      (SELECT count(*) FROM commands WHERE state = 'pending') AS pending
    FROM agents`;
  const n = (v: bigint | undefined) => Number(v ?? 0n);
  return {
    online: n(row?.online),
    offline: n(row?.offline),
    stale: n(row?.stale),
    neverReported: n(row?.neverReported),
    decommissioned: n(row?.decommissioned),
    pending: n(row?.pending),
  };
}

export type Readiness = { ready: true } | { ready: false; reason: string };

// Ready when the database answers within timeoutMs and every migration this build knows is
// recorded as applied (another replica may be mid-deploy, or the schema may be behind).
export async function checkReadiness(pool: pg.Pool, migrations: readonly string[], timeoutMs: number): Promise<Readiness> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const query = pool
    .query<{ migration_name: string }>(
      `SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`,
    )
    .then((result) => result.rows, (err: unknown) => err);
  try {
    const outcome = await Promise.race([query, timeout]);
    if (outcome === "timeout") return { ready: false, reason: `the database did not answer within ${timeoutMs} ms` };
    if (!Array.isArray(outcome)) return { ready: false, reason: "the database is unreachable" };
    const applied = new Set(outcome.map((row) => row.migration_name));
    const missing = migrations.filter((name) => !applied.has(name));
    if (missing.length > 0) return { ready: false, reason: `${plural(missing.length, "migration")} not applied: ${missing.join(", ")}` };
    return { ready: true };
  } finally {
    clearTimeout(timer);
  }
}

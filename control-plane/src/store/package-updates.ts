import { Prisma as Sql } from "../generated/prisma/client.ts";
import type { Prisma } from "./types.ts";

// Which pending updates a list or a bulk action covers: a validated UpdateSelection (see
// services/update-service.ts) plus an optional status. Every set field must match; agents that
// are decommissioned never count.
export interface UpdateFilter {
  keys: { agentId: string; source: string; name: string; architecture: string }[];
  agentIds: string[];
  severities: string[];
  securityOnly: boolean;
  packageName: string;
  source: string;
  group: string;
  tag: string;
  status: string;
}

// One package at one available version across the hosts that need it.
export interface PackageGroupRow {
  source: string;
  name: string;
  availableVersion: string;
  architectures: string[];
  // The most severe rating any host reported ("critical" … "unknown").
  severity: string;
  security: boolean;
  rebootRequired: boolean;
  agents: number;
  pending: number;
  approved: number;
  rejected: number;
  firstSeenAt: Date;
}

// Most severe first; the ratings RedFlag knows, anything else after them.
const SEVERITY_RANKS = ["critical", "important", "security", "moderate", "low", "unknown"];
// Constants only, so written into the statement as they are.
const rankOf = Sql.raw(`CASE u.severity ${SEVERITY_RANKS.map((s, i) => `WHEN '${s}' THEN ${i}`).join(" ")} ELSE ${SEVERITY_RANKS.length} END`);

function conditions(f: UpdateFilter): Sql.Sql {
  const and: Sql.Sql[] = [Sql.sql`a.decommissioned_at IS NULL`];
  if (f.keys.length > 0) {
    and.push(Sql.sql`(${Sql.join(
      f.keys.map((k) => Sql.sql`(u.agent_id = ${k.agentId}::uuid AND u.source = ${k.source} AND u.name = ${k.name} AND u.architecture = ${k.architecture})`),
      " OR ",
    )})`);
  }
  if (f.agentIds.length > 0) and.push(Sql.sql`u.agent_id IN (${Sql.join(f.agentIds.map((id) => Sql.sql`${id}::uuid`))})`);
  if (f.severities.length > 0) and.push(Sql.sql`u.severity IN (${Sql.join(f.severities)})`);
  if (f.securityOnly) and.push(Sql.sql`u.security`);
  if (f.packageName) and.push(Sql.sql`u.name = ${f.packageName}`);
  if (f.source) and.push(Sql.sql`u.source = ${f.source}`);
  if (f.group) and.push(Sql.sql`a."group" = ${f.group}`);
  if (f.tag) and.push(Sql.sql`${f.tag} = ANY (a.tags)`);
  if (f.status) and.push(Sql.sql`u.status = ${f.status}`);
  return Sql.join(and, " AND ");
}

// A page of the filtered updates grouped by source, name and available version, grouped and
// counted by the database (a fleet's thousands of rows never reach this process), with how many
// groups there are in all. Ordered most severe first, then by how many hosts need it, then by name.
export async function listPackageGroups(db: Prisma, filter: UpdateFilter, page: { offset: number; limit: number }): Promise<{ rows: PackageGroupRow[]; total: number }> {
  const rows = await db.$queryRaw<(Omit<PackageGroupRow, "agents" | "pending" | "approved" | "rejected" | "severity"> & {
    rank: number;
    agents: bigint;
    pending: bigint;
    approved: bigint;
    rejected: bigint;
    total: bigint;
  })[]>`
    SELECT u.source, u.name, u.available_version AS "availableVersion",
           array_agg(DISTINCT u.architecture ORDER BY u.architecture) AS architectures,
           min(${rankOf})::int AS rank,
           bool_or(u.security) AS security,
           bool_or(u.reboot_required) AS "rebootRequired",
           count(DISTINCT u.agent_id) AS agents,
           count(*) FILTER (WHERE u.status = 'pending') AS pending,
           count(*) FILTER (WHERE u.status = 'approved') AS approved,
           count(*) FILTER (WHERE u.status = 'rejected') AS rejected,
           min(u.first_seen_at) AS "firstSeenAt",
           count(*) OVER () AS total
    FROM package_updates u JOIN agents a ON a.id = u.agent_id
    WHERE ${conditions(filter)}
    GROUP BY u.source, u.name, u.available_version
    ORDER BY rank, agents DESC, u.name, u.source, u.available_version
    LIMIT ${page.limit} OFFSET ${page.offset}`;
  // A page past the end has no row to carry the total: count the groups on their own.
  const total = rows[0]
    ? Number(rows[0].total)
    : Number(
        (
          await db.$queryRaw<{ n: bigint }[]>`
            SELECT count(*) AS n FROM (SELECT 1 FROM package_updates u JOIN agents a ON a.id = u.agent_id
            WHERE ${conditions(filter)} GROUP BY u.source, u.name, u.available_version) g`
        )[0]?.n ?? 0,
      );
  return {
    total,
    rows: rows.map((r) => ({
      source: r.source,
      name: r.name,
      availableVersion: r.availableVersion,
      architectures: r.architectures,
      severity: SEVERITY_RANKS[r.rank] ?? "unknown",
      security: r.security,
      rebootRequired: r.rebootRequired,
      agents: Number(r.agents),
      pending: Number(r.pending),
      approved: Number(r.approved),
      rejected: Number(r.rejected),
      firstSeenAt: r.firstSeenAt,
    })),
  };
}

import { Prisma as Sql } from "../generated/prisma/client.ts";
import type { Prisma, Tx } from "./types.ts";

// Which pending updates a list or a bulk action covers: a validated UpdateSelection (see
// domain/updates.ts) plus an optional status. Every set field must match; agents that
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

// One update of one agent, as a selection key names it.
export interface UpdateKey {
  agentId: string;
  source: string;
  name: string;
  architecture: string;
}

// The filter as a Prisma query (the same conditions as conditions() above).
function filterWhere(f: UpdateFilter): Sql.PackageUpdateWhereInput {
  const and: Sql.PackageUpdateWhereInput[] = [];
  if (f.keys.length > 0) and.push({ OR: f.keys });
  if (f.agentIds.length > 0) and.push({ agentId: { in: f.agentIds } });
  if (f.severities.length > 0) and.push({ severity: { in: f.severities } });
  if (f.securityOnly) and.push({ security: true });
  if (f.packageName) and.push({ name: f.packageName });
  if (f.group) and.push({ agent: { group: f.group } });
  if (f.tag) and.push({ agent: { tags: { has: f.tag } } });
  if (f.source) and.push({ source: f.source });
  if (f.status) and.push({ status: f.status });
  return { AND: and, agent: { decommissionedAt: null } };
}

const keyOf = (u: UpdateKey): UpdateKey => ({ agentId: u.agentId, source: u.source, name: u.name, architecture: u.architecture });

// The filtered updates in one of these states (the filter's own status is ignored).
export function updatesIn(db: Prisma | Tx, filter: UpdateFilter, states: string[]) {
  return db.packageUpdate.findMany({
    where: { ...filterWhere({ ...filter, status: "" }), status: { in: states } },
    select: { agentId: true, source: true, name: true, architecture: true, availableVersion: true },
  });
}

// Records a decision on these updates, in batches of 500 keys per statement.
export async function decideUpdates(db: Prisma | Tx, keys: UpdateKey[], decision: { status: string; by: string; at: Date }): Promise<void> {
  for (let i = 0; i < keys.length; i += 500) {
    await db.packageUpdate.updateMany({
      where: { OR: keys.slice(i, i + 500).map(keyOf) },
      data: { status: decision.status, decidedBy: decision.by, decidedAt: decision.at },
    });
  }
}

// A page of the filtered updates with their hosts' names, ordered by host, and how many match
// in all; with the state of each install command the page refers to.
export async function listUpdates(db: Prisma, filter: UpdateFilter, page: { offset: number; limit: number }) {
  const where = filterWhere(filter);
  const [rows, total] = await Promise.all([
    db.packageUpdate.findMany({
      where,
      include: { agent: { select: { hostname: true } } },
      orderBy: [{ agent: { hostname: "asc" } }, { agentId: "asc" }, { source: "asc" }, { name: "asc" }, { architecture: "asc" }],
      skip: page.offset,
      take: page.limit + 1,
    }),
    db.packageUpdate.count({ where }),
  ]);
  const shown = rows.slice(0, page.limit);
  const commandIds = [...new Set(shown.map((r) => r.commandId).filter((id): id is string => id !== null))];
  const commandStates = new Map(
    (await db.command.findMany({ where: { id: { in: commandIds } }, select: { id: true, state: true } })).map((c) => [c.id, c.state]),
  );
  return { rows: shown, more: rows.length > page.limit, total, commandStates };
}

// The filtered updates that are approved, by agent, source and name.
export function approvedUpdates(db: Prisma, filter: UpdateFilter) {
  return db.packageUpdate.findMany({
    where: { ...filterWhere({ ...filter, status: "" }), status: "approved" },
    orderBy: [{ agentId: "asc" }, { source: "asc" }, { name: "asc" }],
  });
}

// Marks these updates as being installed by this command.
export async function linkInstallCommand(db: Prisma | Tx, keys: UpdateKey[], commandId: string): Promise<void> {
  await db.packageUpdate.updateMany({ where: { OR: keys.map(keyOf) }, data: { commandId } });
}

import { Prisma as Sql } from "../generated/prisma/client.ts";
import { isUniqueViolation } from "./db.ts";
import type { Prisma, Tx } from "./types.ts";

// Staged rollouts (domain/rollouts.ts): the rollout, its rings and its hosts. Every write the
// scheduler makes is conditional on the state it read, so two leaders, or a leader that
// restarted half-way, never apply one step twice.

export type RolloutState = "running" | "paused" | "halted" | "aborted" | "finished";
export type RingState = "waiting" | "installing" | "soaking" | "passed" | "halted" | "overridden";
export type HostState = "waiting" | "queued" | "succeeded" | "failed" | "nothing_to_do" | "skipped";
export type RingKind = "agents" | "percent" | "rest";

export interface RolloutKey {
  agentId: string;
  source: string;
  name: string;
  architecture: string;
}

export interface RolloutTargets {
  allAgents: boolean;
  groups: string[];
  tags: string[];
  agentIds: string[];
}

export interface RingInput {
  name: string;
  kind: RingKind;
  agentIds: string[];
  percent: number;
  thresholdPercent: number;
  soakSeconds: number;
}

export interface RolloutInput {
  name: string;
  targets: RolloutTargets;
  allApproved: boolean;
  updateKeys: RolloutKey[];
  rings: RingInput[];
}

export interface PlacedHost {
  agentId: string;
  hostname: string;
  ring: number;
}

const withRings = { rings: { orderBy: { index: "asc" as const } } };

export function getRollout(db: Prisma | Tx, id: string) {
  return db.rollout.findUnique({ where: { id }, include: withRings });
}
export type RolloutRow = NonNullable<Awaited<ReturnType<typeof getRollout>>>;
export type RingRow = RolloutRow["rings"][number];

// Rollouts that are not over (running, paused or halted): they are bounded in number.
export function countOpenRollouts(db: Prisma | Tx): Promise<number> {
  return db.rollout.count({ where: { state: { in: ["running", "paused", "halted"] } } });
}

// Serialises creations, so the count of open rollouts cannot be overshot by two at once.
export async function lockRolloutCreation(tx: Tx): Promise<void> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_rollouts'))`;
}

// The agents still part of the fleet that the targets name, by ID; at most `limit`.
export function targetAgents(db: Prisma | Tx, t: RolloutTargets, limit: number): Promise<{ id: string; hostname: string }[]> {
  const or: Sql.AgentWhereInput[] = [];
  if (t.groups.length > 0) or.push({ group: { in: t.groups } });
  if (t.tags.length > 0) or.push({ tags: { hasSome: t.tags } });
  if (t.agentIds.length > 0) or.push({ id: { in: t.agentIds } });
  return db.agent.findMany({
    where: { decommissionedAt: null, ...(t.allAgents ? {} : { OR: or }) },
    select: { id: true, hostname: true },
    orderBy: { id: "asc" },
    take: limit,
  });
}

// Which of these agent IDs exist (decommissioned or not).
export async function existingAgents(db: Prisma | Tx, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  return new Set((await db.agent.findMany({ where: { id: { in: [...ids] } }, select: { id: true } })).map((a) => a.id));
}

// Saves a rollout running its first ring, with its rings and placed hosts; "taken" when the
// name is (the caller's transaction is then aborted and must not be used further).
export async function insertRollout(tx: Tx, id: string, input: RolloutInput, hosts: PlacedHost[], createdBy: string, now: Date): Promise<RolloutRow | "taken"> {
  try {
    await tx.rollout.create({
      data: {
        id,
        name: input.name,
        ...input.targets,
        allApproved: input.allApproved,
        updateKeys: input.updateKeys as unknown as Sql.InputJsonValue,
        state: "running",
        currentRing: 0,
        createdBy,
        createdAt: now,
        updatedAt: now,
      },
    });
  } catch (err) {
    if (isUniqueViolation(err)) return "taken";
    throw err;
  }
  await tx.rolloutRing.createMany({
    data: input.rings.map((r, index) => ({
      rolloutId: id,
      index,
      ...r,
      state: index === 0 ? "installing" : "waiting",
      startedAt: index === 0 ? now : null,
    })),
  });
  for (let i = 0; i < hosts.length; i += 1000) {
    await tx.rolloutHost.createMany({ data: hosts.slice(i, i + 1000).map((h) => ({ rolloutId: id, ...h })) });
  }
  return (await getRollout(tx, id))!;
}

// A page of rollouts, newest first, after the rollout `after` (its ID).
export async function listRollouts(db: Prisma, state: RolloutState | undefined, pageSize: number, after: string | undefined) {
  const rows = await db.rollout.findMany({
    where: state ? { state } : {},
    include: withRings,
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export interface RingCounts {
  hosts: number;
  waiting: number;
  queued: number;
  succeeded: number;
  failed: number;
  nothingToDo: number;
  skipped: number;
  // Hosts that installed (succeeded or failed) and have not been seen since `onlineAfter`.
  offline: number;
}

const emptyCounts = (): RingCounts => ({ hosts: 0, waiting: 0, queued: 0, succeeded: 0, failed: 0, nothingToDo: 0, skipped: 0, offline: 0 });

// Per rollout and ring, how many hosts are in each state; offline from the agents' last poll.
export async function ringCounts(db: Prisma | Tx, rolloutIds: readonly string[], onlineAfter: Date): Promise<Map<string, Map<number, RingCounts>>> {
  const out = new Map<string, Map<number, RingCounts>>();
  if (rolloutIds.length === 0) return out;
  const rows = await db.$queryRaw<{ rollout_id: string; ring: number; state: string; n: bigint; offline: bigint }[]>`
    SELECT h.rollout_id::text, h.ring, h.state, count(*) AS n,
           count(*) FILTER (WHERE h.state IN ('succeeded', 'failed') AND (a.last_seen_at IS NULL OR a.last_seen_at < ${onlineAfter})) AS offline
      FROM rollout_hosts h LEFT JOIN agents a ON a.id = h.agent_id
     WHERE h.rollout_id = ANY(${[...rolloutIds]}::uuid[])
     GROUP BY h.rollout_id, h.ring, h.state`;
  for (const r of rows) {
    const rings = out.get(r.rollout_id) ?? new Map<number, RingCounts>();
    out.set(r.rollout_id, rings);
    const c = rings.get(r.ring) ?? emptyCounts();
    rings.set(r.ring, c);
    const n = Number(r.n);
    c.hosts += n;
    c.offline += Number(r.offline);
    if (r.state === "waiting") c.waiting += n;
    else if (r.state === "queued") c.queued += n;
    else if (r.state === "succeeded") c.succeeded += n;
    else if (r.state === "failed") c.failed += n;
    else if (r.state === "nothing_to_do") c.nothingToDo += n;
    else if (r.state === "skipped") c.skipped += n;
  }
  return out;
}

export const ringCountsOf = (all: Map<string, Map<number, RingCounts>>, rolloutId: string, ring: number): RingCounts => all.get(rolloutId)?.get(ring) ?? emptyCounts();

// A page of a rollout's hosts by ring, hostname and agent ID, each with whether its agent is
// offline (not seen since `onlineAfter`).
export async function hostPage(db: Prisma, rolloutId: string, ring: number | undefined, page: { offset: number; limit: number }, onlineAfter: Date) {
  const rows = await db.rolloutHost.findMany({
    where: { rolloutId, ...(ring !== undefined ? { ring } : {}) },
    orderBy: [{ ring: "asc" }, { hostname: "asc" }, { agentId: "asc" }],
    skip: page.offset,
    take: page.limit + 1,
  });
  const shown = rows.slice(0, page.limit);
  const seen = new Map(
    (await db.agent.findMany({ where: { id: { in: shown.map((h) => h.agentId) } }, select: { id: true, lastSeenAt: true } })).map((a) => [a.id, a.lastSeenAt]),
  );
  return {
    rows: shown.map((h) => {
      const last = seen.get(h.agentId);
      return { ...h, offline: !last || last < onlineAfter };
    }),
    more: rows.length > page.limit,
  };
}
export type HostRow = Awaited<ReturnType<typeof hostPage>>["rows"][number];

// Locks the rollout row until the transaction ends: an operator's change and a scheduler step
// on one rollout happen one after the other, and each sees what the other did.
export async function lockRollout(tx: Tx, id: string): Promise<RolloutRow | null> {
  const found = await tx.$queryRaw<{ id: string }[]>`SELECT id::text FROM rollouts WHERE id = ${id}::uuid FOR UPDATE`;
  if (found.length === 0) return null;
  return getRollout(tx, id);
}

// The rollout's state, read under a shared lock: a pause or abort waits until the caller's
// transaction (one host's install) has committed, and the install sees a pause that came first.
export async function rolloutStateShared(tx: Tx, id: string): Promise<{ state: string; currentRing: number } | undefined> {
  const [row] = await tx.$queryRaw<{ state: string; current_ring: number }[]>`SELECT state, current_ring FROM rollouts WHERE id = ${id}::uuid FOR SHARE`;
  return row ? { state: row.state, currentRing: row.current_ring } : undefined;
}

// Running rollouts, oldest first (the scheduler's work).
export function runningRollouts(db: Prisma, limit: number) {
  return db.rollout.findMany({ where: { state: "running" }, include: withRings, orderBy: [{ createdAt: "asc" }, { id: "asc" }], take: limit });
}

// Hosts of a ring still waiting for their install: those not tried yet first (no message), then
// those told to wait (a blackout), by hostname; so hosts kept waiting never crowd out the others.
export function waitingHosts(db: Prisma | Tx, rolloutId: string, ring: number, limit: number) {
  return db.rolloutHost.findMany({ where: { rolloutId, ring, state: "waiting" }, orderBy: [{ message: "asc" }, { hostname: "asc" }, { agentId: "asc" }], take: limit });
}

// Moves a host on when it is still in `from`; false when it is not (someone else moved it).
export async function moveHost(
  db: Prisma | Tx,
  rolloutId: string,
  agentId: string,
  from: HostState,
  data: { state?: HostState; commandId?: string; commandMerged?: boolean; message?: string; startedAt?: Date; finishedAt?: Date },
): Promise<boolean> {
  return (await db.rolloutHost.updateMany({ where: { rolloutId, agentId, state: from }, data })).count > 0;
}

// Queued hosts whose command ended (or no longer exists), with how it ended and whether a
// package of it failed; at most `limit`.
export async function endedQueuedHosts(db: Prisma, limit: number) {
  return db.$queryRaw<{ rollout_id: string; agent_id: string; command_id: string; state: string | null; message: string | null; failed_packages: string[] | null; finished_at: Date | null }[]>`
    SELECT h.rollout_id::text, h.agent_id::text, h.command_id::text, c.state::text AS state, r.message, c.finished_at,
           (SELECT array_agg(e.name ORDER BY e.name) FROM update_events e WHERE e.command_id = h.command_id AND e.agent_id = h.agent_id AND e.kind = 'failed') AS failed_packages
      FROM rollout_hosts h
      LEFT JOIN commands c ON c.id = h.command_id
      LEFT JOIN command_results r ON r.command_id = h.command_id
     WHERE h.state = 'queued'
       AND (c.id IS NULL OR c.state IN ('succeeded', 'failed', 'rejected', 'timed_out', 'cancelled'))
     LIMIT ${limit}`;
}

// Hosts of a ring in these states (their hostnames first), how many in all.
export async function hostsIn(db: Prisma | Tx, rolloutId: string, ring: number, states: HostState[], limit: number) {
  const where = { rolloutId, ring, state: { in: states } };
  const [rows, total] = await Promise.all([db.rolloutHost.findMany({ where, orderBy: [{ hostname: "asc" }], take: limit }), db.rolloutHost.count({ where })]);
  return { rows, total };
}

// Hosts of a ring that installed (succeeded or failed) and have not been seen since `onlineAfter`.
// A host was seen when it last polled or when it reported its install's result, whichever is
// later: a host that just reported is online, even before its poll time reaches the database
// (the last-seen buffer writes it within seconds; a new agent may have none yet).
export async function offlineInstalledHosts(db: Prisma | Tx, rolloutId: string, ring: number, onlineAfter: Date, limit: number) {
  return db.$queryRaw<{ hostname: string; last_seen_at: Date | null }[]>`
    SELECT hostname, seen AS last_seen_at FROM (
      SELECT h.hostname, GREATEST(a.last_seen_at, c.finished_at) AS seen
        FROM rollout_hosts h
        LEFT JOIN agents a ON a.id = h.agent_id
        LEFT JOIN commands c ON c.id = h.command_id
       WHERE h.rollout_id = ${rolloutId}::uuid AND h.ring = ${ring} AND h.state IN ('succeeded', 'failed')
    ) hosts
     WHERE seen IS NULL OR seen < ${onlineAfter}
     ORDER BY hostname
     LIMIT ${limit}`;
}

// Sets the rollout's state and position (the caller holds its lock).
export async function updateRollout(
  tx: Tx,
  id: string,
  data: { state?: RolloutState; currentRing?: number; haltReason?: string; endedAt?: Date | null },
  now: Date,
): Promise<void> {
  await tx.rollout.update({ where: { id }, data: { ...data, updatedAt: now } });
}

export async function updateRing(tx: Tx, rolloutId: string, index: number, data: { state: RingState; startedAt?: Date; soakUntil?: Date | null }): Promise<void> {
  await tx.rolloutRing.update({ where: { rolloutId_index: { rolloutId, index } }, data });
}

// Hosts still waiting (in one ring, or in every ring) are skipped, with why.
export async function skipWaitingHosts(tx: Tx, rolloutId: string, ring: number | undefined, message: string, now: Date): Promise<number> {
  return (
    await tx.rolloutHost.updateMany({
      where: { rolloutId, state: "waiting", ...(ring !== undefined ? { ring } : {}) },
      data: { state: "skipped", message, finishedAt: now },
    })
  ).count;
}

// The install commands this rollout queued itself (not merged into another) for hosts still queued.
export async function ownQueuedCommands(tx: Tx, rolloutId: string): Promise<{ agentId: string; commandId: string }[]> {
  const rows = await tx.rolloutHost.findMany({ where: { rolloutId, state: "queued", commandMerged: false, commandId: { not: null } }, select: { agentId: true, commandId: true } });
  return rows.map((r) => ({ agentId: r.agentId, commandId: r.commandId! }));
}

// Of these agents' approved updates, those an install already reported installed at the
// approved version since that version was offered (the view keeps them until the next scan), as
// "agent/source/name/architecture" keys.
async function installedAlready(db: Prisma | Tx, agentIds: readonly string[]): Promise<Set<string>> {
  if (agentIds.length === 0) return new Set();
  const rows = await db.$queryRaw<{ key: string }[]>`
    SELECT u.agent_id::text || '/' || u.source || '/' || u.name || '/' || u.architecture AS key
      FROM package_updates u
     WHERE u.agent_id = ANY(${[...agentIds]}::uuid[]) AND u.status = 'approved'
       AND EXISTS (SELECT 1 FROM update_events e
                    WHERE e.agent_id = u.agent_id AND e.time >= u.version_seen_at AND e.kind = 'installed'
                      AND e.source = u.source AND e.name = u.name AND e.architecture = u.architecture AND e.version = u.available_version)`;
  return new Set(rows.map((r) => r.key));
}
const installedKey = (u: { agentId: string; source: string; name: string; architecture: string }) => `${u.agentId}/${u.source}/${u.name}/${u.architecture}`;

// The approved updates of one agent (only those named, when keys are given), each with whether
// an install already reported it installed.
export async function approvedUpdatesOf(db: Prisma | Tx, agentId: string, keys: RolloutKey[] | undefined) {
  const rows = await db.packageUpdate.findMany({
    where: {
      agentId,
      status: "approved",
      agent: { decommissionedAt: null },
      ...(keys ? { OR: keys.map((k) => ({ source: k.source, name: k.name, architecture: k.architecture })) } : {}),
    },
    orderBy: [{ source: "asc" }, { name: "asc" }, { architecture: "asc" }],
  });
  const installed = rows.length > 0 ? await installedAlready(db, [agentId]) : new Set<string>();
  return rows.map((r) => ({ ...r, installed: installed.has(installedKey(r)) }));
}

// The approved updates of many agents, keys only (previews), each with whether an install
// already reported it installed.
export async function approvedKeysOf(db: Prisma, agentIds: readonly string[]) {
  const rows = await db.packageUpdate.findMany({
    where: { agentId: { in: [...agentIds] }, status: "approved" },
    select: { agentId: true, source: true, name: true, architecture: true },
  });
  const installed = rows.length > 0 ? await installedAlready(db, agentIds) : new Set<string>();
  return rows.map((r) => ({ ...r, installed: installed.has(installedKey(r)) }));
}

// An agent as a rollout's install needs it: whether it is still part of the fleet.
export function agentForInstall(db: Prisma | Tx, agentId: string) {
  return db.agent.findUnique({ where: { id: agentId }, select: { id: true, hostname: true, decommissionedAt: true } });
}

// Removes finished and aborted rollouts (with their rings and hosts) that ended before `before`;
// returns how many. Running, paused and halted ones stay whatever their age.
export async function pruneEndedRollouts(db: Prisma, before: Date): Promise<number> {
  return (await db.rollout.deleteMany({ where: { state: { in: ["finished", "aborted"] }, endedAt: { lt: before } } })).count;
}

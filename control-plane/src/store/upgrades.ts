import type { Prisma as PrismaNs } from "../generated/prisma/client.ts";
import { newId } from "../ids.ts";
import { enqueueNotification } from "./notifications.ts";
import type { Prisma, Tx } from "./types.ts";

// Agent upgrades: one row per update_agent command, and the state the control plane derives
// for it from the command and from what the agent reports (domain/upgrades.ts).

export type UpgradeState = "queued" | "installing" | "succeeded" | "failed" | "rolled_back";
export const OPEN_STATES: UpgradeState[] = ["queued", "installing"];

export interface NewUpgrade {
  agentId: string;
  commandId: string;
  fromVersion: string;
  toVersion: string;
  platform: string;
  rolloutId?: string | undefined;
  automatic?: boolean;
  createdBy: string;
}

const COLUMNS = {
  id: true,
  agentId: true,
  commandId: true,
  fromVersion: true,
  toVersion: true,
  platform: true,
  state: true,
  message: true,
  rolloutId: true,
  automatic: true,
  createdBy: true,
  createdAt: true,
  updatedAt: true,
  installedAt: true,
  finishedAt: true,
  agent: { select: { hostname: true } },
} as const;

export type UpgradeRow = NonNullable<Awaited<ReturnType<typeof findUpgrade>>>;

const findUpgrade = (db: Prisma | Tx, id: string) => db.agentUpgrade.findUnique({ where: { id }, select: COLUMNS });

export async function recordUpgrade(db: Prisma | Tx, input: NewUpgrade): Promise<UpgradeRow> {
  const id = newId();
  await db.agentUpgrade.create({
    data: {
      id,
      agentId: input.agentId,
      commandId: input.commandId,
      fromVersion: input.fromVersion,
      toVersion: input.toVersion,
      platform: input.platform,
      rolloutId: input.rolloutId ?? null,
      automatic: input.automatic ?? false,
      createdBy: input.createdBy,
      message: "waiting for the agent's next poll",
    },
  });
  return (await findUpgrade(db, id))!;
}

// The agents (of these) with an upgrade still queued or installing, and to what.
export async function openUpgrades(db: Prisma, agentIds?: string[]): Promise<Map<string, string>> {
  const rows = await db.agentUpgrade.findMany({
    where: { state: { in: OPEN_STATES }, ...(agentIds ? { agentId: { in: agentIds } } : {}) },
    select: { agentId: true, toVersion: true },
  });
  return new Map(rows.map((r) => [r.agentId, r.toVersion]));
}

// Open upgrades with what decides their state: the command and what the agent last reported.
export async function upgradesToReconcile(db: Prisma, limit: number) {
  return db.agentUpgrade.findMany({
    where: { state: { in: OPEN_STATES } },
    orderBy: { createdAt: "asc" },
    take: limit,
    select: {
      id: true,
      state: true,
      fromVersion: true,
      toVersion: true,
      installedAt: true,
      automatic: true,
      agent: { select: { hostname: true, agentVersion: true, lastSeenAt: true, status: true } },
      command: { select: { state: true, sentAt: true, result: { select: { message: true } } } },
    },
  });
}

// Moves an upgrade on, only from the state it was read in (another replica may have moved it).
export async function moveUpgrade(
  db: Prisma,
  id: string,
  from: string,
  change: { state: UpgradeState; message: string; installedAt?: Date; finishedAt?: Date },
  now: Date,
): Promise<boolean> {
  const move = async (tx: Tx) => (await tx.agentUpgrade.updateMany({ where: { id, state: from }, data: { ...change, updatedAt: now } })).count > 0;
  if (change.state !== "failed" && change.state !== "rolled_back") return move(db);
  // An upgrade that ends badly is notified with the change that records it.
  return db.$transaction(async (tx) => {
    if (!(await move(tx))) return false;
    const u = await tx.agentUpgrade.findUniqueOrThrow({ where: { id }, select: { agentId: true, toVersion: true } });
    await enqueueNotification(tx, { kind: "agent_upgrade_failed", severity: "warning", agentId: u.agentId, text: `the upgrade to ${u.toVersion} ${change.state === "failed" ? "failed" : "was rolled back"}${change.message ? `: ${change.message}` : ""}` });
    return true;
  });
}

export interface UpgradeFilter {
  rolloutId?: string | undefined;
  agentId?: string | undefined;
  state?: UpgradeState | undefined;
}

// Upgrades, newest first.
export async function listUpgrades(db: Prisma, filter: UpgradeFilter, pageSize: number, after: string | undefined) {
  const where: PrismaNs.AgentUpgradeWhereInput = {
    ...(filter.rolloutId ? { rolloutId: filter.rolloutId } : {}),
    ...(filter.agentId ? { agentId: filter.agentId } : {}),
    ...(filter.state ? { state: filter.state } : {}),
  };
  const rows = await db.agentUpgrade.findMany({
    where,
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    select: COLUMNS,
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export interface FleetAgent {
  id: string;
  hostname: string;
  osFamily: string;
  arch: string;
  agentVersion: string;
  lastSeenAt: Date | null;
}

// The agents a fleet upgrade may select (never decommissioned ones), at most `limit` + 1 so the
// caller can tell a selection that is too big.
export async function selectAgents(db: Prisma, selection: { group?: string; tag?: string }, limit: number): Promise<FleetAgent[]> {
  return db.agent.findMany({
    where: {
      decommissionedAt: null,
      ...(selection.group !== undefined ? { group: selection.group } : {}),
      ...(selection.tag !== undefined ? { tags: { has: selection.tag } } : {}),
    },
    select: { id: true, hostname: true, osFamily: true, arch: true, agentVersion: true, lastSeenAt: true },
    orderBy: { id: "asc" },
    take: limit + 1,
  });
}

// Automatic upgrades still open, and those to `version` that failed or were rolled back.
export async function automaticUpgradeCounts(db: Prisma, versions: string[]): Promise<{ open: number; failed: number }> {
  const [open, failed] = await Promise.all([
    db.agentUpgrade.count({ where: { automatic: true, state: { in: OPEN_STATES } } }),
    db.agentUpgrade.count({ where: { automatic: true, state: { in: ["failed", "rolled_back"] }, toVersion: { in: versions } } }),
  ]);
  return { open, failed };
}

// Agents that already had an upgrade to one of these versions (whatever became of it): the
// automatic upgrade tries each agent and version once.
export async function agentsTried(db: Prisma, versions: string[]): Promise<Set<string>> {
  const rows = await db.agentUpgrade.findMany({ where: { toVersion: { in: versions } }, select: { agentId: true, toVersion: true } });
  return new Set(rows.map((r) => `${r.agentId}\0${r.toVersion}`));
}

// The version an agent reports and its hostname, for the minimum-version rule.
export async function agentVersions(db: Prisma | Tx, agentIds: string[]) {
  return db.agent.findMany({ where: { id: { in: agentIds } }, select: { id: true, hostname: true, agentVersion: true } });
}

// Removes finished upgrades older than `before`; returns how many.
export async function pruneUpgrades(db: Prisma, before: Date): Promise<number> {
  return (await db.agentUpgrade.deleteMany({ where: { state: { notIn: OPEN_STATES }, createdAt: { lt: before } } })).count;
}

import { newId } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import type { Prisma, Tx } from "./types.ts";

export type WindowKind = "maintenance" | "blackout";

export interface WindowInput {
  name: string;
  kind: WindowKind;
  rrule: string;
  dtstart: string;
  durationSeconds: number;
  timeZone: string;
  allAgents: boolean;
  groups: string[];
  tags: string[];
  agentIds: string[];
  enabled: boolean;
  // Maintenance windows only: queue the approved updates' install while open (false if unset).
  autoInstall?: boolean;
}

export interface WindowRow extends WindowInput {
  id: string;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

// At most this many windows: every install and reboot queued checks the enabled ones.
export const MAX_WINDOWS = 500;

export type WindowWriteOutcome = { window: WindowRow } | { missingAgents: string[] } | { nameTaken: true } | { full: number } | { missing: true };

export function listWindows(db: Prisma | Tx): Promise<WindowRow[]> {
  return db.maintenanceWindow.findMany({ orderBy: { name: "asc" } });
}

export function enabledWindows(db: Prisma | Tx): Promise<WindowRow[]> {
  return db.maintenanceWindow.findMany({ where: { enabled: true }, orderBy: { name: "asc" } });
}

export function getWindow(db: Prisma | Tx, id: string): Promise<WindowRow | null> {
  return db.maintenanceWindow.findUnique({ where: { id } });
}

// The labels windows pick agents by.
export function agentLabels(db: Prisma | Tx, ids: readonly string[]): Promise<{ id: string; hostname: string; group: string; tags: string[] }[]> {
  return db.agent.findMany({ where: { id: { in: [...ids] } }, select: { id: true, hostname: true, group: true, tags: true } });
}

async function missingAgents(tx: Tx, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const found = new Set((await tx.agent.findMany({ where: { id: { in: ids } }, select: { id: true } })).map((a) => a.id));
  return ids.filter((id) => !found.has(id));
}

// A unique-name clash inside the caller's transaction aborts it; checked first, and the insert's
// own violation (a concurrent create) is mapped too.
async function write(tx: Tx, fn: () => Promise<WindowRow>): Promise<WindowWriteOutcome> {
  try {
    return { window: await fn() };
  } catch (err) {
    if (isUniqueViolation(err)) return { nameTaken: true };
    throw err;
  }
}

// Adds a window unless an agent it names is unknown, its name is taken, or there are already
// MAX_WINDOWS. Runs inside the caller's transaction; a transaction-scoped advisory lock keeps
// concurrent creates from overshooting the count.
export async function createWindow(tx: Tx, input: WindowInput & { createdBy: string }): Promise<WindowWriteOutcome> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_windows'))`;
  const missing = await missingAgents(tx, input.agentIds);
  if (missing.length > 0) return { missingAgents: missing };
  if (await tx.maintenanceWindow.findUnique({ where: { name: input.name }, select: { id: true } })) return { nameTaken: true };
  const count = await tx.maintenanceWindow.count();
  if (count >= MAX_WINDOWS) return { full: count };
  return write(tx, () => tx.maintenanceWindow.create({ data: { id: newId(), ...input } }));
}

// Replaces a window's definition; `missing` when it does not exist.
export async function updateWindow(tx: Tx, id: string, input: WindowInput, now: Date): Promise<WindowWriteOutcome> {
  if (!(await getWindow(tx, id))) return { missing: true };
  const missing = await missingAgents(tx, input.agentIds);
  if (missing.length > 0) return { missingAgents: missing };
  const clash = await tx.maintenanceWindow.findUnique({ where: { name: input.name }, select: { id: true } });
  if (clash && clash.id !== id) return { nameTaken: true };
  return write(tx, () => tx.maintenanceWindow.update({ where: { id }, data: { ...input, updatedAt: now } }));
}

export async function deleteWindow(tx: Tx, id: string): Promise<void> {
  await tx.maintenanceWindow.deleteMany({ where: { id } });
}

// The labels a window or a reboot policy picks agents by.
export interface Targets {
  allAgents: boolean;
  groups: string[];
  tags: string[];
  agentIds: string[];
}

// Agents these targets pick (not decommissioned), after `afterId` in ID order, that have an
// approved update no install has been tried for since `since`: none linked, the linked one gone,
// or the linked one finished and queued before `since`. At most `limit`.
export async function agentsWithUntriedUpdates(db: Prisma | Tx, targets: Targets, since: Date, afterId: string, limit: number): Promise<string[]> {
  const rows = await db.$queryRaw<{ agent_id: string }[]>`
    SELECT DISTINCT u.agent_id::text AS agent_id
      FROM package_updates u
      JOIN agents a ON a.id = u.agent_id
      LEFT JOIN commands c ON c.id = u.command_id
     WHERE u.status = 'approved' AND a.decommissioned_at IS NULL
       AND (u.command_id IS NULL OR c.id IS NULL OR (c.state NOT IN ('pending', 'sent') AND c.created_at < ${since}))
       AND (${targets.allAgents} OR a."group" = ANY(${targets.groups}::text[]) OR a.tags && ${targets.tags}::text[] OR a.id = ANY(${targets.agentIds}::uuid[]))
       AND u.agent_id > ${afterId}::uuid
     ORDER BY 1
     LIMIT ${limit}`;
  return rows.map((r) => r.agent_id);
}

// The install commands these updates are linked to: state and when each was queued.
export async function linkedInstalls(db: Prisma | Tx, ids: readonly string[]): Promise<Map<string, { state: string; createdAt: Date }>> {
  if (ids.length === 0) return new Map();
  const rows = await db.command.findMany({ where: { id: { in: [...ids] } }, select: { id: true, state: true, createdAt: true } });
  return new Map(rows.map((r) => [r.id, { state: r.state, createdAt: r.createdAt }]));
}

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

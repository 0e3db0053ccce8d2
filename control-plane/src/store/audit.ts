import type { Prisma, Tx } from "./types.ts";

export interface AuditInput {
  actorKind: string;
  actorId: string;
  actorName: string;
  action: string;
  target: string;
  remoteAddr: string;
  before?: unknown;
  after?: unknown;
  outcome?: string;
}

const json = (value: unknown) => (value === undefined ? undefined : (JSON.parse(JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v))) as object));

export async function recordAudit(db: Prisma | Tx, entry: AuditInput): Promise<void> {
  await db.auditEntry.create({
    data: {
      actorKind: entry.actorKind,
      actorId: entry.actorId,
      actorName: entry.actorName,
      action: entry.action,
      target: entry.target,
      remoteAddr: entry.remoteAddr,
      ...(entry.before !== undefined ? { before: json(entry.before) } : {}),
      ...(entry.after !== undefined ? { after: json(entry.after) } : {}),
      outcome: entry.outcome ?? "ok",
    },
  });
}

export interface AuditFilter {
  actorName?: string | undefined;
  action?: string | undefined;
  target?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
}

export async function listAudit(db: Prisma, filter: AuditFilter, pageSize: number, before: bigint | undefined) {
  const rows = await db.auditEntry.findMany({
    where: {
      ...(filter.actorName ? { actorName: filter.actorName } : {}),
      ...(filter.action ? { action: { contains: filter.action } } : {}),
      ...(filter.target ? { target: { startsWith: filter.target } } : {}),
      ...(filter.since || filter.until ? { createdAt: { ...(filter.since ? { gte: filter.since } : {}), ...(filter.until ? { lt: filter.until } : {}) } } : {}),
      ...(before !== undefined ? { id: { lt: before } } : {}),
    },
    orderBy: { id: "desc" },
    take: pageSize + 1,
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

import type { Prisma } from "./types.ts";

// Deletes audit entries written before `before`; returns how many.
export async function pruneAudit(db: Prisma, before: Date): Promise<number> {
  return (await db.auditEntry.deleteMany({ where: { createdAt: { lt: before } } })).count;
}

// Deletes security events recorded before `before`; returns how many.
export async function pruneSecurityEvents(db: Prisma, before: Date): Promise<number> {
  return (await db.securityEvent.deleteMany({ where: { createdAt: { lt: before } } })).count;
}

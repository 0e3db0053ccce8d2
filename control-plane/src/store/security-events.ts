import type { Prisma, Tx } from "./types.ts";

export const SECURITY_EVENT_TYPES = [
  "machine_id_mismatch",
  "refresh_token_reuse",
  "renew_bad_signature",
  "result_for_foreign_command",
  "registration_token_invalid",
  "login_failed",
  "machine_id_rebound",
  "admin_key_revoked",
  "agent_reregistered",
  "registration_refused",
  "backup_taken",
  "backup_restored",
  "agent_recovered_after_restore",
] as const;

export type SecurityEventType = (typeof SECURITY_EVENT_TYPES)[number];
export type SecuritySeverity = "info" | "warning" | "critical";

export interface SecurityEventInput {
  type: SecurityEventType;
  severity: SecuritySeverity;
  message: string;
  agentId?: string | undefined;
  machineId?: string | undefined;
  remoteAddr?: string | undefined;
  detail?: Record<string, string | number | boolean>;
}

// Events anyone can cause without a credential (a wrong password, a made-up registration
// token) are not notified: they would let a stranger flood the channels.
const NOT_NOTIFIED: ReadonlySet<SecurityEventType> = new Set(["login_failed", "registration_token_invalid"]);

// Also queues the notification (security_event) with the event, in the same transaction.
export async function recordSecurityEvent(db: Prisma | Tx, event: SecurityEventInput): Promise<void> {
  if (!NOT_NOTIFIED.has(event.type)) {
    // One statement writes both, so they are kept together also outside a transaction.
    await db.$executeRaw`
      WITH recorded AS (
        INSERT INTO security_events (type, severity, message, agent_id, machine_id, remote_addr, detail)
        VALUES (${event.type}, ${event.severity}, ${event.message}, ${event.agentId ?? null}::uuid, ${event.machineId ?? null}, ${event.remoteAddr ?? null}, ${JSON.stringify(event.detail ?? {})}::jsonb)
        RETURNING agent_id)
      INSERT INTO notification_events (kind, severity, agent_id, text)
      SELECT 'security_event', ${event.severity}, agent_id, ${`${event.type}: ${event.message}`.slice(0, 500)} FROM recorded`;
    return;
  }
  await db.securityEvent.create({
    data: {
      type: event.type,
      severity: event.severity,
      message: event.message,
      agentId: event.agentId ?? null,
      machineId: event.machineId ?? null,
      remoteAddr: event.remoteAddr ?? null,
      detail: event.detail ?? {},
    },
  });
}

// Newest first, keyset over id; the page token is the last row's id.
export async function listSecurityEvents(
  db: Prisma,
  filter: { type?: string | undefined; severity?: string | undefined },
  pageSize: number,
  before: bigint | undefined,
) {
  const rows = await db.securityEvent.findMany({
    where: { ...(filter.type ? { type: filter.type } : {}), ...(filter.severity ? { severity: filter.severity } : {}), ...(before !== undefined ? { id: { lt: before } } : {}) },
    orderBy: { id: "desc" },
    take: pageSize + 1,
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

// How many events of each type were recorded since then.
export async function countSecurityEvents(db: Prisma, since: Date): Promise<Map<string, number>> {
  const rows = await db.securityEvent.groupBy({ by: ["type"], where: { createdAt: { gte: since } }, _count: { _all: true } });
  return new Map(rows.map((r) => [r.type, r._count._all]));
}

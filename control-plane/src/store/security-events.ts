import type { Prisma, Tx } from "./types.ts";

export type SecurityEventType =
  | "machine_id_mismatch"
  | "refresh_token_reuse"
  | "renew_bad_signature"
  | "result_for_foreign_command"
  | "registration_token_invalid"
  | "login_failed"
  | "machine_id_rebound"
  | "admin_key_revoked"
  | "agent_reregistered"
  | "registration_refused";

export interface SecurityEventInput {
  type: SecurityEventType;
  severity: "info" | "warning" | "critical";
  message: string;
  agentId?: string | undefined;
  machineId?: string | undefined;
  remoteAddr?: string | undefined;
  detail?: Record<string, string | number | boolean>;
}

export async function recordSecurityEvent(db: Prisma | Tx, event: SecurityEventInput): Promise<void> {
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

import { Code, ConnectError } from "@connectrpc/connect";
import { inTransaction } from "../store/db.ts";
import {
  createRegistrationToken,
  deleteRegistrationToken,
  registrationTokenById,
  revokeRegistrationToken,
  type RegistrationTokenRow,
} from "../store/registration-tokens.ts";
import type { Prisma } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";

// Registration tokens as operators manage them (agents spend their seats in store/agents.ts).

export type RegistrationTokenState = "active" | "revoked" | "expired" | "exhausted";

export function registrationTokenState(row: RegistrationTokenRow, now: Date): RegistrationTokenState {
  if (row.revokedAt) return "revoked";
  if (row.expiresAt && row.expiresAt <= now) return "expired";
  if (row.usedSeats >= row.seats) return "exhausted";
  return "active";
}

const missing = (id: string) => new ConnectError(`registration token ${id} does not exist`, Code.NotFound);

export async function issueRegistrationToken(
  db: Prisma,
  input: { seats: number; ttlSeconds: number | undefined; note: string; createdBy: string; now: Date },
  record: AuditHook<RegistrationTokenRow>,
): Promise<{ token: RegistrationTokenRow; secret: string }> {
  return inTransaction(db, async (tx) => {
    const created = await createRegistrationToken(tx, input);
    await record(tx, created.token);
    return created;
  });
}

// Only a token that can no longer enrol anything may be deleted.
export async function removeRegistrationToken(db: Prisma, id: string, now: Date, record: AuditHook<RegistrationTokenRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await registrationTokenById(tx, id);
    if (!row) throw missing(id);
    if (registrationTokenState(row, now) === "active") throw new ConnectError("the token is still active; revoke it first", Code.FailedPrecondition);
    await deleteRegistrationToken(tx, id);
    await record(tx, row);
  });
}

export async function withdrawRegistrationToken(db: Prisma, id: string, now: Date, record: AuditHook<RegistrationTokenRow>): Promise<RegistrationTokenRow> {
  return inTransaction(db, async (tx) => {
    const row = await revokeRegistrationToken(tx, id, now);
    if (!row) throw missing(id);
    await record(tx, row);
    return row;
  });
}

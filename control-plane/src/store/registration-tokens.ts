import { Code, ConnectError } from "@connectrpc/connect";
import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
import { bytes, type Prisma } from "./types.ts";

export interface RegistrationTokenRow {
  id: string;
  prefix: string;
  note: string;
  seats: number;
  usedSeats: number;
  expiresAt: Date | null;
  revokedAt: Date | null;
  createdAt: Date;
  createdBy: string;
}

export async function createRegistrationToken(
  db: Prisma,
  input: { seats: number; ttlSeconds: number | undefined; note: string; createdBy: string; now: Date },
): Promise<{ token: RegistrationTokenRow; secret: string }> {
  const secret = newSecret(SECRET_PREFIX.registration);
  const token = await db.registrationToken.create({
    data: {
      id: newId(),
      tokenHash: bytes(sha256(secret)),
      prefix: secret.slice(0, SECRET_PREFIX.registration.length + 6),
      note: input.note,
      seats: input.seats,
      expiresAt: input.ttlSeconds === undefined ? null : new Date(input.now.getTime() + input.ttlSeconds * 1000),
      createdBy: input.createdBy,
    },
    omit: { tokenHash: true },
  });
  return { token, secret };
}

// Keyset pagination over (created_at desc, id desc); the page token is the last row's id.
export async function listRegistrationTokens(db: Prisma, pageSize: number, after: string | undefined) {
  const rows = await db.registrationToken.findMany({
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
    omit: { tokenHash: true },
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export async function revokeRegistrationToken(db: Prisma, id: string, now: Date): Promise<RegistrationTokenRow> {
  const existing = await db.registrationToken.findUnique({ where: { id }, omit: { tokenHash: true } });
  if (!existing) throw new ConnectError(`registration token ${id} does not exist`, Code.NotFound);
  if (existing.revokedAt) return existing;
  return db.registrationToken.update({ where: { id }, data: { revokedAt: now }, omit: { tokenHash: true } });
}

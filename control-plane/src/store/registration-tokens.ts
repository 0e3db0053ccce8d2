import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
import { bytes, type Prisma, type Tx } from "./types.ts";

type Db = Prisma | Tx;

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
  db: Db,
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
export async function listRegistrationTokens(db: Db, pageSize: number, after: string | undefined) {
  const rows = await db.registrationToken.findMany({
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
    omit: { tokenHash: true },
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export async function registrationTokenById(db: Db, id: string): Promise<RegistrationTokenRow | undefined> {
  return (await db.registrationToken.findUnique({ where: { id }, omit: { tokenHash: true } })) ?? undefined;
}

// Undefined when there is no such token; a revoked one stays as it was.
export async function revokeRegistrationToken(db: Db, id: string, now: Date): Promise<RegistrationTokenRow | undefined> {
  const existing = await registrationTokenById(db, id);
  if (!existing || existing.revokedAt) return existing;
  return db.registrationToken.update({ where: { id }, data: { revokedAt: now }, omit: { tokenHash: true } });
}

export async function deleteRegistrationToken(db: Db, id: string): Promise<void> {
  await db.registrationToken.delete({ where: { id } });
}

import { Code, ConnectError } from "@connectrpc/connect";
import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
import { bytes, type Prisma } from "./types.ts";

export type UserRow = NonNullable<Awaited<ReturnType<Prisma["user"]["findUnique"]>>>;

export async function createSession(db: Prisma, input: { userId: string; remoteAddr: string; userAgent: string; ttlMs: number; now: Date }) {
  const secret = newSecret(SECRET_PREFIX.session);
  const expiresAt = new Date(input.now.getTime() + input.ttlMs);
  await db.session.create({
    data: {
      id: newId(),
      tokenHash: bytes(sha256(secret)),
      userId: input.userId,
      remoteAddr: input.remoteAddr.slice(0, 100),
      userAgent: input.userAgent.slice(0, 200),
      expiresAt,
      lastSeenAt: input.now,
    },
  });
  return { secret, expiresAt };
}

export async function revokeSessions(db: Prisma, userId: string, now: Date, exceptId?: string): Promise<number> {
  const res = await db.session.updateMany({
    where: { userId, revokedAt: null, ...(exceptId ? { id: { not: exceptId } } : {}) },
    data: { revokedAt: now },
  });
  return res.count;
}

export async function userById(db: Prisma, id: string): Promise<UserRow> {
  const user = await db.user.findUnique({ where: { id } });
  if (!user) throw new ConnectError(`user ${id} does not exist`, Code.NotFound);
  return user;
}

// How many enabled admins there are (the last one can be neither demoted nor disabled).
export const activeAdmins = (db: Prisma) => db.user.count({ where: { role: "admin", disabledAt: null } });
// People of any role, enabled or not; none: the setup wizard makes the first admin.
export const peopleCount = (db: Prisma) => db.user.count();

export async function createApiToken(
  db: Prisma,
  input: { userId: string; name: string; scope: string; expiresAt: Date },
) {
  const secret = newSecret(SECRET_PREFIX.apiToken);
  const row = await db.apiKey.create({
    data: {
      id: newId(),
      name: input.name,
      kind: "personal",
      userId: input.userId,
      scope: input.scope,
      expiresAt: input.expiresAt,
      tokenHash: bytes(sha256(secret)),
      prefix: secret.slice(0, SECRET_PREFIX.apiToken.length + 6),
    },
    include: { user: true },
  });
  return { row, secret };
}

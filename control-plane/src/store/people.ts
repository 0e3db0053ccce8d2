import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import { bytes, type Prisma, type Tx } from "./types.ts";

// People, their sessions and their personal API tokens. Functions that take `Prisma | Tx` may
// run inside a transaction (store/db.ts inTransaction); none of them decides what a caller may do.

export type UserRow = NonNullable<Awaited<ReturnType<Prisma["user"]["findUnique"]>>>;
type Db = Prisma | Tx;

// A username some other person already has.
export class UsernameTakenError extends Error {
  readonly username: string;
  constructor(username: string) {
    super(`the username "${username}" is taken`);
    this.username = username;
  }
}

// ---- people

export async function userById(db: Db, id: string): Promise<UserRow | undefined> {
  return (await db.user.findUnique({ where: { id } })) ?? undefined;
}

export async function userByName(db: Db, username: string): Promise<UserRow | undefined> {
  return (await db.user.findUnique({ where: { username } })) ?? undefined;
}

export async function userByOidcSubject(db: Db, subject: string): Promise<UserRow | undefined> {
  return (await db.user.findFirst({ where: { oidcSubject: subject } })) ?? undefined;
}

// Keyset pagination over username; the page token is the last row's id.
export async function listUsers(db: Db, pageSize: number, after: string | undefined) {
  const rows = await db.user.findMany({ orderBy: [{ username: "asc" }], take: pageSize + 1, ...(after ? { cursor: { id: after }, skip: 1 } : {}) });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export interface NewUser {
  username: string;
  displayName: string;
  role: string;
  passwordHash?: string;
  passwordChangedAt?: Date;
  lastLoginAt?: Date;
  authSource?: "password" | "oidc";
  oidcSubject?: string;
}

// Throws UsernameTakenError when the name is in use.
export async function insertUser(db: Db, input: NewUser): Promise<UserRow> {
  try {
    return await db.user.create({ data: { id: newId(), ...input } });
  } catch (err) {
    if (isUniqueViolation(err)) throw new UsernameTakenError(input.username);
    throw err;
  }
}

export type UserChange = Partial<
  Pick<UserRow, "role" | "displayName" | "disabledAt" | "passwordHash" | "passwordChangedAt" | "lastLoginAt" | "totpEnabled" | "totpLastStep"> & {
    totpSecretEnc: Uint8Array | null;
  }
>;

export async function updateUser(db: Db, id: string, change: UserChange): Promise<UserRow> {
  const { totpSecretEnc, ...rest } = change;
  return db.user.update({
    where: { id },
    data: { ...rest, ...(totpSecretEnc !== undefined ? { totpSecretEnc: totpSecretEnc && bytes(totpSecretEnc) } : {}) },
  });
}

// How many enabled admins there are (the last one can be neither demoted nor disabled).
export const activeAdmins = (db: Db) => db.user.count({ where: { role: "admin", disabledAt: null } });
// People of any role, enabled or not; none: the setup wizard makes the first admin.
export const peopleCount = (db: Db) => db.user.count();
// Enabled people who sign in with a password but have no second factor.
export const peopleWithoutTotp = (db: Db) => db.user.count({ where: { totpEnabled: false, disabledAt: null, authSource: "password" } });

const SETUP_DONE = "setup.completed";

// Marks setup as done, once: false when it already was or someone exists. The settings row is
// the guard: of two Setup calls at once, the second one's insert fails on the row's key (a
// unique violation that rolls its transaction back).
export async function claimSetup(tx: Tx, by: string, now: Date): Promise<boolean> {
  const done = await tx.setting.findUnique({ where: { key: SETUP_DONE } });
  if (done || (await tx.user.count()) > 0) return false;
  await tx.setting.create({ data: { key: SETUP_DONE, value: { at: now.toISOString(), by }, updatedBy: by } });
  return true;
}

// ---- sessions

export async function createSession(db: Db, input: { userId: string; remoteAddr: string; userAgent: string; ttlMs: number; now: Date }) {
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

export async function sessionByHash(db: Db, tokenHash: Uint8Array) {
  return (await db.session.findUnique({ where: { tokenHash: bytes(tokenHash) }, include: { user: true } })) ?? undefined;
}

export async function touchSession(db: Db, id: string, at: Date): Promise<void> {
  await db.session.update({ where: { id }, data: { lastSeenAt: at } });
}

export async function revokeSession(db: Db, id: string, now: Date): Promise<void> {
  await db.session.update({ where: { id }, data: { revokedAt: now } });
}

export async function revokeSessions(db: Db, userId: string, now: Date, exceptId?: string): Promise<number> {
  const res = await db.session.updateMany({
    where: { userId, revokedAt: null, ...(exceptId ? { id: { not: exceptId } } : {}) },
    data: { revokedAt: now },
  });
  return res.count;
}

// ---- API tokens (personal ones; the bootstrap admin key lives in bootstrap.ts)

export async function createApiToken(db: Db, input: { userId: string; name: string; scope: string; expiresAt: Date }) {
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

export type ApiTokenRow = Awaited<ReturnType<typeof createApiToken>>["row"];

export async function apiTokenById(db: Db, id: string): Promise<ApiTokenRow | undefined> {
  return (await db.apiKey.findUnique({ where: { id }, include: { user: true } })) ?? undefined;
}

// Any kind (personal token or the bootstrap admin key), with its owner.
export async function apiKeyByHash(db: Db, tokenHash: Uint8Array): Promise<ApiTokenRow | undefined> {
  return (await db.apiKey.findUnique({ where: { tokenHash: bytes(tokenHash) }, include: { user: true } })) ?? undefined;
}

// Personal tokens, newest first: one person's, or everyone's when userId is unset.
export async function listApiTokens(db: Db, userId: string | undefined, limit: number): Promise<ApiTokenRow[]> {
  return db.apiKey.findMany({
    where: { kind: "personal", ...(userId !== undefined ? { userId } : {}) },
    include: { user: true },
    orderBy: { createdAt: "desc" },
    take: limit,
  });
}

export async function revokeApiToken(db: Db, id: string, now: Date): Promise<ApiTokenRow> {
  return db.apiKey.update({ where: { id }, data: { revokedAt: now }, include: { user: true } });
}

export async function touchApiKey(db: Db, id: string, at: Date): Promise<void> {
  await db.apiKey.update({ where: { id }, data: { lastUsedAt: at } });
}

// Bootstrap admin keys not revoked.
export const activeAdminKeys = (db: Db) => db.apiKey.count({ where: { kind: "bootstrap", revokedAt: null } });

import { randomBytes } from "node:crypto";
import { generateKeyPair, keyPairFromSecret, seal, unseal, type KeyPair } from "../signing/keys.ts";
import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
import { recordSecurityEvent } from "./security-events.ts";
import { enqueueNotification } from "./notifications.ts";
import { bytes, type Prisma, type Tx } from "./types.ts";

// Start-up bootstrap runs under one transaction-scoped advisory lock so replicas starting
// together create each key exactly once.
const BOOTSTRAP_LOCK = 0x52464253; // "RFBS"

async function locked<T>(db: Prisma, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return db.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${BOOTSTRAP_LOCK})`;
    return fn(tx);
  });
}

const signingPurpose = (keyId: string) => `redflag.signing-key.${keyId}`;

// Whether this master key opens a sealed signing key (redflag-server doctor).
export function opensSigningKey(masterKey: Buffer, keyId: string, sealed: Uint8Array): boolean {
  try {
    unseal(masterKey, signingPurpose(keyId), sealed);
    return true;
  } catch {
    return false;
  }
}

// Returns every signing key that agents should trust (active, or retired in the future: in
// its grace period), the active one first; creates one on first start. issueTime is when this
// set of keys came to be: the newest key's creation or the latest grace period that ended,
// whichever is later. It is read from the stored keys, so every replica and every restart
// gives the same set the same time, and each change of the set a later one (agents refuse a
// set that is not newer than the one they hold).
export async function ensureSigningKeys(
  db: Prisma,
  masterKey: Buffer,
  now = new Date(),
): Promise<{ active: KeyPair; trusted: KeyPair[]; issueTime: Date }> {
  const { rows, lastRetired } = await locked(db, async (tx) => {
    const existing = await tx.signingKey.findMany({ where: { OR: [{ retiredAt: null }, { retiredAt: { gt: now } }] }, orderBy: { createdAt: "desc" } });
    const retired = await tx.signingKey.aggregate({ _max: { retiredAt: true }, where: { retiredAt: { lte: now } } });
    const lastRetired = retired._max.retiredAt;
    if (existing.some((k) => k.active)) return { rows: existing, lastRetired };
    const pair = generateKeyPair();
    const created = await tx.signingKey.create({
      data: {
        id: pair.keyId,
        publicKey: bytes(pair.publicKey),
        privateKeyEnc: bytes(seal(masterKey, signingPurpose(pair.keyId), pair.secretKey)),
        active: true,
        // Never at or before the end of a grace period already past: the new set is newer.
        createdAt: lastRetired && lastRetired >= now ? new Date(lastRetired.getTime() + 1) : now,
      },
    });
    return { rows: [created, ...existing], lastRetired };
  });
  const issueTime = new Date(Math.max(lastRetired?.getTime() ?? 0, ...rows.map((r) => r.createdAt.getTime())));
  const pairs = rows.map((row) => {
    const pair = keyPairFromSecret(unseal(masterKey, signingPurpose(row.id), row.privateKeyEnc));
    if (pair.keyId !== row.id) throw new Error(`signing key ${row.id} does not match its stored public key`);
    return { pair, active: row.active };
  });
  const active = pairs.find((p) => p.active)!.pair;
  return { active, trusted: [active, ...pairs.filter((p) => !p.active).map((p) => p.pair)], issueTime };
}

// Makes a new key active; the old active key stays trusted until now + graceSeconds.
// Makes a new active signing key; the old one stays trusted for graceSeconds. `record` writes
// the caller's audit entry in the same transaction.
export async function rotateSigningKey(
  db: Prisma,
  masterKey: Buffer,
  graceSeconds: number,
  record: (tx: Tx, done: { activeKeyId: string; previousKeyId: string | undefined }) => Promise<void> = async () => {},
  now = new Date(),
) {
  const pair = generateKeyPair();
  const previous = await locked(db, async (tx) => {
    const old = await tx.signingKey.findFirst({ where: { active: true } });
    await tx.signingKey.updateMany({ where: { active: true }, data: { active: false, retiredAt: new Date(now.getTime() + graceSeconds * 1000) } });
    await tx.signingKey.create({
      data: {
        id: pair.keyId,
        publicKey: bytes(pair.publicKey),
        privateKeyEnc: bytes(seal(masterKey, signingPurpose(pair.keyId), pair.secretKey)),
        active: true,
        createdAt: now,
      },
    });
    await record(tx, { activeKeyId: pair.keyId, previousKeyId: old?.id });
    await enqueueNotification(tx, { kind: "security_event", severity: "info", text: `signing_key_rotated: the command-signing key ${old?.id ?? "(none)"} was replaced by ${pair.keyId}` });
    return old;
  });
  return { active: pair, previousKeyId: previous?.id };
}

// A named random secret (for example the access-token HMAC key), sealed at rest.
export async function ensureSecret(db: Prisma, masterKey: Buffer, name: string): Promise<Uint8Array> {
  const purpose = `redflag.secret.${name}`;
  const row = await locked(db, async (tx) => {
    const existing = await tx.serverSecret.findUnique({ where: { name } });
    if (existing) return existing;
    return tx.serverSecret.create({ data: { name, value: bytes(seal(masterKey, purpose, randomBytes(32))) } });
  });
  return unseal(masterKey, purpose, row.value);
}

export type BootstrapAdminKey = { state: "created"; secret: string } | { state: "active" } | { state: "revoked"; revokedAt: Date };

// Creates the bootstrap admin key on first start; the secret is returned only then. Once the
// key has been revoked it stays revoked: no new one is ever minted.
export async function ensureBootstrapAdminKey(db: Prisma): Promise<BootstrapAdminKey> {
  return locked(db, async (tx) => {
    const existing = await tx.apiKey.findMany({ where: { kind: "bootstrap" }, select: { revokedAt: true } });
    if (existing.some((k) => !k.revokedAt)) return { state: "active" };
    const revoked = existing.map((k) => k.revokedAt!).sort((a, b) => b.getTime() - a.getTime());
    if (revoked[0]) return { state: "revoked", revokedAt: revoked[0] };
    const secret = newSecret(SECRET_PREFIX.admin);
    await tx.apiKey.create({
      data: {
        id: newId(),
        name: "admin.key",
        kind: "bootstrap",
        tokenHash: bytes(sha256(secret)),
        prefix: secret.slice(0, SECRET_PREFIX.admin.length + 6),
      },
    });
    return { state: "created", secret };
  });
}

// Why the bootstrap admin key could not be revoked: it already is, or no enabled admin person
// exists who could still sign in afterwards. The caller says so in its own words.
export class AdminKeyRevokeRefused extends Error {
  readonly reason: "already_revoked" | "no_admin";
  constructor(reason: "already_revoked" | "no_admin") {
    super(`the admin key cannot be revoked: ${reason}`);
    this.reason = reason;
  }
}

// Revokes the bootstrap admin key, recording a security event and the caller's audit entry in
// the same transaction. Throws AdminKeyRevokeRefused when it is already revoked, or when no
// enabled admin person exists who could still sign in.
export async function revokeBootstrapAdminKey(
  db: Prisma,
  by: { name: string; kind: string; remoteAddr: string },
  record: (tx: Tx, done: { revokedAt: Date; keyIds: string[] }) => Promise<void> = async () => {},
  now = new Date(),
): Promise<{ revokedAt: Date; keyIds: string[] }> {
  return locked(db, async (tx) => {
    const keys = await tx.apiKey.findMany({ where: { kind: "bootstrap", revokedAt: null }, select: { id: true } });
    if (keys.length === 0) throw new AdminKeyRevokeRefused("already_revoked");
    const admins = await tx.user.count({ where: { role: "admin", disabledAt: null } });
    if (admins === 0) throw new AdminKeyRevokeRefused("no_admin");
    const keyIds = keys.map((k) => k.id);
    await tx.apiKey.updateMany({ where: { id: { in: keyIds } }, data: { revokedAt: now } });
    await recordSecurityEvent(tx, {
      type: "admin_key_revoked",
      severity: "info",
      message: `the bootstrap admin key was revoked by ${by.name}`,
      remoteAddr: by.remoteAddr || undefined,
      detail: { by: by.name, actorKind: by.kind },
    });
    await record(tx, { revokedAt: now, keyIds });
    return { revokedAt: now, keyIds };
  });
}

export async function findApiKey(db: Prisma, tokenHash: Buffer) {
  return db.apiKey.findUnique({
    where: { tokenHash: bytes(tokenHash) },
    select: { id: true, name: true, kind: true, revokedAt: true },
  });
}

export async function touchApiKeys(db: Prisma, ids: string[], at: Date): Promise<void> {
  if (ids.length > 0) await db.apiKey.updateMany({ where: { id: { in: ids } }, data: { lastUsedAt: at } });
}

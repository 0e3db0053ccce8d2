import { randomBytes } from "node:crypto";
import { generateKeyPair, keyPairFromSecret, seal, unseal, type KeyPair } from "../signing/keys.ts";
import { newId, newSecret, SECRET_PREFIX, sha256 } from "../ids.ts";
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

// Returns every signing key that agents should trust (active, or retired in the future: in
// its grace period), the active one first; creates one on first start.
export async function ensureSigningKeys(db: Prisma, masterKey: Buffer, now = new Date()): Promise<{ active: KeyPair; trusted: KeyPair[] }> {
  const rows = await locked(db, async (tx) => {
    const existing = await tx.signingKey.findMany({ where: { OR: [{ retiredAt: null }, { retiredAt: { gt: now } }] }, orderBy: { createdAt: "desc" } });
    if (existing.some((k) => k.active)) return existing;
    const pair = generateKeyPair();
    const created = await tx.signingKey.create({
      data: {
        id: pair.keyId,
        publicKey: bytes(pair.publicKey),
        privateKeyEnc: bytes(seal(masterKey, signingPurpose(pair.keyId), pair.secretKey)),
        active: true,
      },
    });
    return [created, ...existing];
  });
  const pairs = rows.map((row) => {
    const pair = keyPairFromSecret(unseal(masterKey, signingPurpose(row.id), row.privateKeyEnc));
    if (pair.keyId !== row.id) throw new Error(`signing key ${row.id} does not match its stored public key`);
    return { pair, active: row.active };
  });
  const active = pairs.find((p) => p.active)!.pair;
  return { active, trusted: [active, ...pairs.filter((p) => !p.active).map((p) => p.pair)] };
}

// Makes a new key active; the old active key stays trusted until now + graceSeconds.
export async function rotateSigningKey(db: Prisma, masterKey: Buffer, graceSeconds: number, now = new Date()) {
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

// Creates the bootstrap admin key when no usable one exists; returns the secret only when created.
export async function ensureBootstrapAdminKey(db: Prisma): Promise<string | undefined> {
  return locked(db, async (tx) => {
    const existing = await tx.apiKey.count({ where: { kind: "bootstrap", revokedAt: null } });
    if (existing > 0) return undefined;
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
    return secret;
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

import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordAudit } from "../src/store/audit.ts";
import { AdminKeyRevokeRefused, ensureBootstrapAdminKey, ensureSigningKeys, revokeBootstrapAdminKey, rotateSigningKey } from "../src/store/bootstrap.ts";
import { openDatabase, type Database } from "../src/store/db.ts";
import type { Prisma, Tx } from "../src/store/types.ts";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "./support/database.ts";

// Medium tests: signing-key rotation and the admin key's revocation on a real database, PGlite
// and PostgreSQL, without an HTTP server. Each change and its audit entry commit together.

// An audit write the database refuses (text with a NUL byte).
const failingAudit = (tx: Tx) => recordAudit(tx, { actorKind: "session", actorId: "", actorName: "bad\u0000name", action: "test/Change", target: "x", remoteAddr: "" });
const by = { name: "tester", kind: "session", remoteAddr: "192.0.2.7" };

describe.each(availableBackends)("signing keys and the admin key on %s", (backend: Backend) => {
  let fresh: FreshDatabase;
  let database: Database;
  let db: Prisma;
  const masterKey = randomBytes(32);

  beforeAll(async () => {
    fresh = await freshDatabase({ backend });
    database = await openDatabase({ databaseUrl: fresh.databaseUrl, dataDir: fresh.dataDir, logger: pino({ level: "silent" }), poolMax: 4 });
    db = database.prisma;
    await ensureSigningKeys(db, masterKey);
    await ensureBootstrapAdminKey(db);
  });
  afterAll(async () => {
    await database?.close();
    await fresh?.cleanup();
  });

  it("rotates the key and records the audit entry together, or neither", async () => {
    const before = await db.signingKey.findMany({ orderBy: { createdAt: "asc" } });
    await expect(rotateSigningKey(db, masterKey, 3600, failingAudit)).rejects.toThrow();
    expect(await db.signingKey.findMany({ orderBy: { createdAt: "asc" } })).toEqual(before);

    const { active, previousKeyId } = await rotateSigningKey(db, masterKey, 3600, (tx, done) =>
      recordAudit(tx, { actorKind: "session", actorId: "", actorName: "tester", action: "test/Rotate", target: `key:${done.activeKeyId}`, remoteAddr: "" }),
    );
    expect(previousKeyId).toBe(before.find((k) => k.active)!.id);
    expect((await db.signingKey.findUnique({ where: { id: active.keyId } }))?.active).toBe(true);
    expect(await db.auditEntry.count({ where: { target: `key:${active.keyId}` } })).toBe(1);
  });

  it("refuses to revoke the admin key while no admin person exists, and keeps it when the audit write fails", async () => {
    await expect(revokeBootstrapAdminKey(db, by)).rejects.toEqual(new AdminKeyRevokeRefused("no_admin"));
    await db.user.create({ data: { id: crypto.randomUUID(), username: "root-admin", displayName: "Admin", role: "admin", passwordHash: "x" } });
    await expect(revokeBootstrapAdminKey(db, by, failingAudit)).rejects.not.toBeInstanceOf(AdminKeyRevokeRefused);
    expect(await db.apiKey.count({ where: { kind: "bootstrap", revokedAt: null } })).toBe(1);
    expect(await db.securityEvent.count({ where: { type: "admin_key_revoked" } })).toBe(0);

    const { keyIds } = await revokeBootstrapAdminKey(db, by);
    expect(keyIds).toHaveLength(1);
    expect(await db.securityEvent.count({ where: { type: "admin_key_revoked" } })).toBe(1);
    await expect(revokeBootstrapAdminKey(db, by)).rejects.toEqual(new AdminKeyRevokeRefused("already_revoked"));
  });
});

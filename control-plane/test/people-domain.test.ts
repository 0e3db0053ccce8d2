import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../src/auth/context.ts";
import { verifyPassword } from "../src/auth/passwords.ts";
import type { AuditHook } from "../src/domain/audit.ts";
import { issueApiToken, revokePersonalToken } from "../src/domain/api-tokens.ts";
import { changePassword, createPerson, openSession, person, resetPassword, setUpFirstAdmin, updatePerson } from "../src/domain/people.ts";
import { issueRegistrationToken, removeRegistrationToken, withdrawRegistrationToken } from "../src/domain/registration-tokens.ts";
import { createPasswordSignIn } from "../src/domain/sign-in.ts";
import { newId } from "../src/ids.ts";
import { recordAudit } from "../src/store/audit.ts";
import { openDatabase, type Database } from "../src/store/db.ts";
import { insertUser, UsernameTakenError } from "../src/store/people.ts";
import type { Prisma } from "../src/store/types.ts";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "./support/database.ts";

// Medium tests: the people domain (src/domain/) on a real database, PGlite and PostgreSQL,
// without an HTTP server. The end-to-end behaviour of the RPCs is in people.test.ts,
// sign-in.test.ts and tokens.test.ts.

const PASSWORD = "a long enough passphrase 42";
const client = { remoteAddr: "192.0.2.7", userAgent: "medium-test" };

// An audit hook that writes a real entry, as services/audit.ts does, with this target.
const audited =
  <T,>(target: (done: T) => string): AuditHook<T> =>
  (tx, done) =>
    recordAudit(tx, { actorKind: "session", actorId: "", actorName: "tester", action: "test/Change", target: target(done), remoteAddr: "" });
// An audit write the database refuses (text with a NUL byte): the second write of a change fails.
const failingAudit: AuditHook<unknown> = (tx) => recordAudit(tx, { actorKind: "session", actorId: "", actorName: "bad\u0000name", action: "test/Change", target: "x", remoteAddr: "" });

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a failure").toBeDefined();
  return err;
}
async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await rejection(promise);
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code]).toBe(Code[code]);
  if (message) expect((err as ConnectError).rawMessage).toMatch(message);
}

describe.each(availableBackends)("the people domain on %s", (backend: Backend) => {
  let fresh: FreshDatabase;
  let database: Database;
  let db: Prisma;

  beforeAll(async () => {
    fresh = await freshDatabase({ backend });
    database = await openDatabase({ databaseUrl: fresh.databaseUrl, dataDir: fresh.dataDir, logger: pino({ level: "silent" }), poolMax: 4 });
    db = database.prisma;
  });
  afterAll(async () => {
    await database?.close();
    await fresh?.cleanup();
  });

  const auditCount = (target: string) => db.auditEntry.count({ where: { target } });
  const somebody = (role = "operator") => createPerson(db, { username: `p-${newId().slice(0, 8)}`, displayName: "Somebody", role: role as "operator", password: PASSWORD }, async () => {});

  it("sets up the first admin once, also when two setups race", async () => {
    const setup = (name: string) =>
      setUpFirstAdmin(db, { username: name, displayName: name, password: PASSWORD, client, now: new Date() }, audited((u) => `user:${u.id}`));
    const results = await Promise.all([setup("first"), setup("second")]);
    const made = results.filter((r) => r !== undefined);
    expect(made).toHaveLength(1);
    expect(made[0]!.user.role).toBe("admin");
    expect(made[0]!.session.secret).toMatch(/^rfses_/);
    expect(await db.user.count()).toBe(1);
    expect(await auditCount(`user:${made[0]!.user.id}`)).toBe(1);
    expect(await setup("third")).toBeUndefined();
  });

  it("creates a person and the audit entry together, or neither", async () => {
    const user = await createPerson(db, { username: "alice", displayName: "Alice", role: "viewer", password: PASSWORD }, audited((u) => `user:${u.id}`));
    expect(await auditCount(`user:${user.id}`)).toBe(1);

    // The person was written, then the audit entry failed: the person is gone again.
    const err = await rejection(createPerson(db, { username: "bob", displayName: "Bob", role: "viewer", password: PASSWORD }, failingAudit));
    expect(err).not.toBeInstanceOf(ConnectError);
    expect(await db.user.findUnique({ where: { username: "bob" } })).toBeNull();
  });

  it("keeps the old password and the sessions when the audit entry of a reset fails", async () => {
    const user = await somebody();
    const now = new Date();
    await openSession(db, user, client, now);
    await openSession(db, user, client, now);

    await rejection(resetPassword(db, user, { password: "an entirely new passphrase 7", clearTotp: false, now }, failingAudit));
    const after = await person(db, user.id);
    expect(after.passwordHash).toBe(user.passwordHash);
    expect(await db.session.count({ where: { userId: user.id, revokedAt: null } })).toBe(2);

    await resetPassword(db, user, { password: "an entirely new passphrase 7", clearTotp: false, now }, audited((u) => `user:${u.id}`));
    expect(await verifyPassword("an entirely new passphrase 7", (await person(db, user.id)).passwordHash!)).toBe(true);
    expect(await db.session.count({ where: { userId: user.id, revokedAt: null } })).toBe(0);
  });

  it("ends the other sessions with a password change, keeping the caller's", async () => {
    const user = await somebody();
    const now = new Date();
    await openSession(db, user, client, now);
    await openSession(db, user, client, now);
    const mine = await db.session.findFirstOrThrow({ where: { userId: user.id } });
    await expectCode(changePassword(db, user, { current: "not the password at all", next: "whatever passphrase 99", keepSessionId: mine.id, now }, async () => {}), Code.PermissionDenied, /current password is wrong/);
    let ended = -1;
    await changePassword(db, user, { current: PASSWORD, next: "another long passphrase 5", keepSessionId: mine.id, now }, async (_tx, done) => {
      ended = done.otherSessionsEnded;
    });
    expect(ended).toBe(1);
    expect((await db.session.findMany({ where: { userId: user.id, revokedAt: null } })).map((s) => s.id)).toEqual([mine.id]);
  });

  it("tells a taken username apart: a plain error from the store, AlreadyExists from the domain", async () => {
    const user = await somebody();
    await expect(insertUser(db, { username: user.username, displayName: "x", role: "viewer" })).rejects.toBeInstanceOf(UsernameTakenError);
    await expectCode(createPerson(db, { username: user.username, displayName: "x", role: "viewer", password: PASSWORD }, async () => {}), Code.AlreadyExists, /is taken/);
  });

  it("never demotes the last enabled admin", async () => {
    const admin = await db.user.findFirstOrThrow({ where: { role: "admin" } });
    await expectCode(updatePerson(db, admin, { role: "viewer", displayName: admin.displayName }, async () => {}), Code.FailedPrecondition, /last admin/);
    expect((await person(db, admin.id)).role).toBe("admin");
  });

  it("records a failed sign-in as a security event and an audit entry", async () => {
    const user = await somebody();
    const signIn = createPasswordSignIn({ db, masterKey: Buffer.alloc(32, 1), settings: { loginFailuresPerAddress: 100, loginFailuresPerUser: 100 } });
    const record = audited<{ name: string }>((r) => `username-test:${r.name}`);
    await expectCode(signIn({ username: user.username, password: "wrong wrong wrong", totpCode: "", client }, record), Code.Unauthenticated, /wrong username or password/);
    expect(await db.securityEvent.count({ where: { type: "login_failed", message: { contains: user.username } } })).toBe(1);
    expect(await auditCount(`username-test:${user.username}`)).toBe(1);

    const { user: signedIn, session } = await signIn({ username: user.username, password: PASSWORD, totpCode: "", client }, record);
    expect(signedIn.lastLoginAt).not.toBeNull();
    expect(await db.session.count({ where: { userId: user.id, revokedAt: null } })).toBe(1);
    expect(session.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it("lets only the owner or an admin revoke a personal API token, and audits it", async () => {
    const owner = await somebody();
    const other = await somebody();
    const { row } = await issueApiToken(db, { owner, name: "ci", scope: "viewer", expiresAt: new Date(Date.now() + 86_400_000) }, audited((t) => `api_token:${t.id}`));
    expect(await auditCount(`api_token:${row.id}`)).toBe(1);
    const caller = (u: { id: string; username: string }, role: Principal["role"] = "operator"): Principal => ({ kind: "session", role, name: u.username, userId: u.id, credentialId: newId() });
    await expectCode(revokePersonalToken(db, caller(other), row.id, new Date(), async () => {}), Code.PermissionDenied);
    await expectCode(revokePersonalToken(db, caller(owner), newId(), new Date(), async () => {}), Code.NotFound);
    const revoked = await revokePersonalToken(db, caller(owner), row.id, new Date(), audited(({ after }) => `api_token:${after.id}`));
    expect(revoked.revokedAt).not.toBeNull();
    expect(await auditCount(`api_token:${row.id}`)).toBe(2);
  });

  it("deletes a registration token only once it can enrol nothing, with its audit entry", async () => {
    const now = new Date();
    const { token } = await issueRegistrationToken(db, { seats: 1, ttlSeconds: undefined, note: "", createdBy: "tester", now }, audited((t) => `registration_token:${t.id}`));
    const target = `registration_token:${token.id}`;
    await expectCode(removeRegistrationToken(db, token.id, now, async () => {}), Code.FailedPrecondition, /still active/);
    await expectCode(withdrawRegistrationToken(db, newId(), now, async () => {}), Code.NotFound, /does not exist/);
    await withdrawRegistrationToken(db, token.id, now, audited((t) => `registration_token:${t.id}`));
    // A failing audit entry leaves the token in place.
    await rejection(removeRegistrationToken(db, token.id, now, failingAudit));
    expect(await db.registrationToken.count({ where: { id: token.id } })).toBe(1);
    await removeRegistrationToken(db, token.id, now, audited((t) => `registration_token:${t.id}`));
    expect(await db.registrationToken.count({ where: { id: token.id } })).toBe(0);
    expect(await auditCount(target)).toBe(3);
  });
});

import { Code, ConnectError } from "@connectrpc/connect";
import { hashPassword, passwordProblem, verifyPassword } from "../auth/passwords.ts";
import { SESSION_TTL_MS } from "../auth/principals.ts";
import type { RoleName } from "@redflag/common/roles";
import { newTotpSecret, totpUri, verifyTotp } from "../auth/totp.ts";
import { newId } from "../ids.ts";
import { seal, unseal } from "../signing/keys.ts";
import { inTransaction, isUniqueViolation } from "../store/db.ts";
import {
  activeAdmins,
  claimSetup,
  createSession,
  insertUser,
  peopleCount,
  revokeSession,
  revokeSessions,
  updateUser,
  userById,
  userByName,
  userByOidcSubject,
  UsernameTakenError,
  type UserRow,
} from "../store/people.ts";
import type { Prisma, Tx } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";

// The rules about people: who may be created, what a username and a password must be, the
// first admin, passwords, TOTP, sessions and single sign-on. Every change that writes more than
// one row (a person and the audit entry, a new password and the other sessions ended …) runs in
// one transaction.

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);
const denied = (message: string) => new ConnectError(message, Code.PermissionDenied);
const refused = (message: string) => new ConnectError(message, Code.FailedPrecondition);

const USERNAME = /^[a-z0-9][a-z0-9._-]{1,31}$/;
const TOTP_PURPOSE = "totp-secret";

export function username(value: string): string {
  const name = value.trim().toLowerCase();
  if (!USERNAME.test(name)) throw invalid("username must be 2–32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit");
  return name;
}

export function newPassword(password: string, name: string): string {
  const problem = passwordProblem(password, name);
  if (problem) throw invalid(problem);
  return password;
}

export async function person(db: Prisma | Tx, id: string): Promise<UserRow> {
  const user = await userById(db, id);
  if (!user) throw new ConnectError(`user ${id} does not exist`, Code.NotFound);
  return user;
}

export const passwordIs = async (user: UserRow, password: string): Promise<boolean> => !!user.passwordHash && (await verifyPassword(password, user.passwordHash));

// ---- sessions

// Where a session is started from (kept with it for the person's session list).
export interface SessionClient {
  remoteAddr: string;
  userAgent: string;
}
export interface NewSession {
  secret: string;
  expiresAt: Date;
}

export const openSession = (db: Prisma | Tx, user: UserRow, client: SessionClient, now: Date): Promise<NewSession> =>
  createSession(db, { userId: user.id, remoteAddr: client.remoteAddr, userAgent: client.userAgent, ttlMs: SESSION_TTL_MS, now });

export async function endSession(db: Prisma, sessionId: string, now: Date, record: AuditHook<void>): Promise<void> {
  await inTransaction(db, async (tx) => {
    await revokeSession(tx, sessionId, now);
    await record(tx);
  });
}

// ---- the first admin

export const setupRequired = async (db: Prisma): Promise<boolean> => (await peopleCount(db)) === 0;

// Creates the first admin and signs them in; undefined when setup was already done (also by a
// Setup call running at the same time).
export async function setUpFirstAdmin(
  db: Prisma,
  input: { username: string; displayName: string; password: string; client: SessionClient; now: Date },
  record: AuditHook<UserRow>,
): Promise<{ user: UserRow; session: NewSession } | undefined> {
  const { now } = input;
  const passwordHash = await hashPassword(input.password);
  try {
    return await inTransaction(db, async (tx) => {
      if (!(await claimSetup(tx, input.username, now))) return undefined;
      const user = await insertUser(tx, { username: input.username, displayName: input.displayName, role: "admin", passwordHash, passwordChangedAt: now, lastLoginAt: now });
      await record(tx, user);
      return { user, session: await openSession(tx, user, input.client, now) };
    });
  } catch (err) {
    if (err instanceof UsernameTakenError || isUniqueViolation(err)) return undefined;
    throw err;
  }
}

// ---- passwords

export async function changePassword(
  db: Prisma,
  user: UserRow,
  input: { current: string; next: string; keepSessionId: string | undefined; now: Date },
  record: AuditHook<{ otherSessionsEnded: number }>,
): Promise<void> {
  if (!(await passwordIs(user, input.current))) throw denied("the current password is wrong");
  const passwordHash = await hashPassword(newPassword(input.next, user.username));
  await inTransaction(db, async (tx) => {
    await updateUser(tx, user.id, { passwordHash, passwordChangedAt: input.now });
    const otherSessionsEnded = await revokeSessions(tx, user.id, input.now, input.keepSessionId);
    await record(tx, { otherSessionsEnded });
  });
}

// ---- TOTP

export const totpSecret = (masterKey: Buffer, user: UserRow): string | undefined =>
  user.totpSecretEnc ? Buffer.from(unseal(masterKey, TOTP_PURPOSE, user.totpSecretEnc)).toString("utf8") : undefined;

// Accepts a TOTP code once, remembering its time step so it is never accepted again.
export async function spendTotpCode(db: Prisma | Tx, user: UserRow, secret: string, code: string): Promise<boolean> {
  const step = verifyTotp(secret, code.trim(), user.totpLastStep);
  if (step === undefined) return false;
  await updateUser(db, user.id, { totpLastStep: step });
  return true;
}

export async function beginTotpEnrollment(db: Prisma, masterKey: Buffer, user: UserRow, password: string): Promise<{ secret: string; uri: string }> {
  if (!(await passwordIs(user, password))) throw denied("the password is wrong");
  if (user.totpEnabled) throw refused("TOTP is already on; disable it first to enrol a new authenticator");
  const secret = newTotpSecret();
  await updateUser(db, user.id, { totpSecretEnc: seal(masterKey, TOTP_PURPOSE, Buffer.from(secret)), totpLastStep: null });
  return { secret, uri: totpUri(secret, user.username) };
}

export async function confirmTotpEnrollment(db: Prisma, masterKey: Buffer, user: UserRow, code: string, record: AuditHook<void>): Promise<void> {
  const secret = totpSecret(masterKey, user);
  if (user.totpEnabled) throw refused("TOTP is already on");
  if (!secret) throw refused("start with BeginTotpEnrollment");
  await inTransaction(db, async (tx) => {
    if (!(await spendTotpCode(tx, user, secret, code))) throw invalid("the code does not match; check the authenticator's clock and try the next code");
    await updateUser(tx, user.id, { totpEnabled: true });
    await record(tx);
  });
}

export async function disableTotp(db: Prisma, masterKey: Buffer, user: UserRow, input: { password: string; code: string }, record: AuditHook<void>): Promise<void> {
  if (!user.totpEnabled) throw refused("TOTP is not on");
  if (!(await passwordIs(user, input.password))) throw denied("the password is wrong");
  const secret = totpSecret(masterKey, user);
  await inTransaction(db, async (tx) => {
    if (!secret || !(await spendTotpCode(tx, user, secret, input.code))) throw denied("the TOTP code is wrong or was already used");
    await updateUser(tx, user.id, { totpEnabled: false, totpSecretEnc: null, totpLastStep: null });
    await record(tx);
  });
}

// ---- managing people (admins)

// The last enabled admin can be neither demoted nor disabled: nobody could manage people.
async function keepAnAdmin(tx: Tx, user: UserRow, what: string) {
  if (user.role === "admin" && !user.disabledAt && (await activeAdmins(tx)) <= 1) {
    throw refused(`cannot ${what} the last admin; make someone else admin first`);
  }
}

export async function createPerson(
  db: Prisma,
  input: { username: string; displayName: string; role: RoleName; password: string },
  record: AuditHook<UserRow>,
): Promise<UserRow> {
  const passwordHash = await hashPassword(input.password);
  try {
    return await inTransaction(db, async (tx) => {
      const user = await insertUser(tx, { username: input.username, displayName: input.displayName, role: input.role, passwordHash, passwordChangedAt: new Date() });
      await record(tx, user);
      return user;
    });
  } catch (err) {
    if (err instanceof UsernameTakenError) throw new ConnectError(err.message, Code.AlreadyExists);
    throw err;
  }
}

export async function updatePerson(db: Prisma, before: UserRow, change: { role: string; displayName: string }, record: AuditHook<UserRow>): Promise<UserRow> {
  return inTransaction(db, async (tx) => {
    if (change.role !== "admin") await keepAnAdmin(tx, before, "demote");
    const user = await updateUser(tx, before.id, change);
    await record(tx, user);
    return user;
  });
}

// Sessions end now; API tokens stop working while the owner is disabled.
export async function disablePerson(db: Prisma, before: UserRow, callerId: string | undefined, now: Date, record: AuditHook<UserRow>): Promise<UserRow> {
  if (before.id === callerId) throw refused("you cannot disable yourself");
  return inTransaction(db, async (tx) => {
    await keepAnAdmin(tx, before, "disable");
    const user = await updateUser(tx, before.id, { disabledAt: before.disabledAt ?? now });
    await revokeSessions(tx, user.id, now);
    await record(tx, user);
    return user;
  });
}

export async function enablePerson(db: Prisma, before: UserRow, record: AuditHook<UserRow>): Promise<UserRow> {
  return inTransaction(db, async (tx) => {
    const user = await updateUser(tx, before.id, { disabledAt: null });
    await record(tx, user);
    return user;
  });
}

// Sets a new password (optionally turning TOTP off) and ends the person's sessions.
export async function resetPassword(db: Prisma, before: UserRow, input: { password: string; clearTotp: boolean; now: Date }, record: AuditHook<UserRow>): Promise<UserRow> {
  const passwordHash = await hashPassword(newPassword(input.password, before.username));
  return inTransaction(db, async (tx) => {
    const user = await updateUser(tx, before.id, {
      passwordHash,
      passwordChangedAt: input.now,
      ...(input.clearTotp ? { totpEnabled: false, totpSecretEnc: null, totpLastStep: null } : {}),
    });
    await revokeSessions(tx, user.id, input.now);
    await record(tx, user);
    return user;
  });
}

// ---- single sign-on

// Finds the person a provider's subject stands for, or creates them (a taken username gets a
// short suffix), gives them the role the provider's claims grant, and starts a session.
// "disabled" when that person is disabled here; known tells an existing person from a new one.
export async function signInWithOidc(
  db: Prisma,
  input: { subject: string; username: string; displayName: string | undefined; role: RoleName; client: SessionClient; now: Date },
  record: AuditHook<UserRow>,
): Promise<{ user: UserRow; session: NewSession; known: boolean } | "disabled"> {
  const { now } = input;
  return inTransaction(db, async (tx) => {
    const existing = await userByOidcSubject(tx, input.subject);
    if (existing?.disabledAt) return "disabled" as const;
    let user: UserRow;
    if (existing) {
      // The provider's groups decide the role at every sign-in.
      user = await updateUser(tx, existing.id, { role: input.role, lastLoginAt: now });
    } else {
      let name = input.username;
      if (await userByName(tx, name)) name = `${name.slice(0, 23)}-${newId().slice(0, 4)}`;
      user = await insertUser(tx, { username: name, displayName: input.displayName ?? name, role: input.role, authSource: "oidc", oidcSubject: input.subject, lastLoginAt: now });
    }
    const session = await openSession(tx, user, input.client, now);
    await record(tx, user);
    return { user, session, known: existing !== undefined };
  });
}

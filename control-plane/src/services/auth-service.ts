import { toJson } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { plural } from "@redflag/common/plural";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { PrincipalSchema, UserSchema } from "@redflag/gen/identity_pb";
import { kPrincipal, kRemoteAddr, kUserAgent, type Principal } from "../auth/context.ts";
import { decoyHash, hashPassword, passwordProblem, verifyPassword } from "../auth/passwords.ts";
import { SESSION_TTL_MS, sessionCookie, type PrincipalResolver } from "../auth/principals.ts";
import { createLoginThrottle } from "../auth/rate-limit.ts";
import { roleToProto } from "../auth/roles.ts";
import { newTotpSecret, totpUri, verifyTotp } from "../auth/totp.ts";
import type { Config } from "../config.ts";
import type { Settings } from "../settings.ts";
import { agentServerUrl, serverUrlWarning } from "../domain/enrolment.ts";
import { newId } from "../ids.ts";
import { seal, unseal as open } from "../signing/keys.ts";
import { activeKeyFingerprint, type CommandSigner } from "../signing/signer.ts";
import { createSession, revokeSessions, userById, type UserRow } from "../store/people.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import { audit } from "./audit.ts";
import { userToProto } from "./convert.ts";
import { invalid, text } from "./validate.ts";

export interface AuthServiceDeps {
  config: Config;
  db: Prisma;
  principals: PrincipalResolver;
  masterKey: Buffer;
  // Read at each call: a rotation changes the active key.
  signer: Pick<CommandSigner, "activeKeyId" | "trustedKeys">;
  settings: Settings;
}

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

const unauthorised = () => new ConnectError("wrong username or password", Code.Unauthenticated);
// Once a code was sent, one answer for a wrong password, a wrong code or both: a right password
// is never told apart (a password oracle) while the second factor is missing or wrong.
const unauthorisedWithCode = () => new ConnectError("wrong username, password or TOTP code", Code.Unauthenticated);
const needsCode = () => new ConnectError("this account needs a TOTP code: send totp_code", Code.Unauthenticated);
// The longest a guessing address or username-at-address is made to wait between attempts.
const MAX_LOGIN_DELAY_MS = 15 * 60_000;
// Failures are forgotten after this long without another.
const FORGET_LOGIN_FAILURES_MS = 60 * 60_000;

export function createAuthService(deps: AuthServiceDeps): ServiceImpl<typeof AuthService> {
  const { db, config } = deps;
  // Sign-ins are slowed down, never locked (auth/rate-limit.ts): per client address, and per
  // username at that address, so guessing from one place cannot lock the person out elsewhere.
  const throttle = (free: () => number) => createLoginThrottle({ free, maxDelayMs: MAX_LOGIN_DELAY_MS, forgetMs: FORGET_LOGIN_FAILURES_MS });
  const byAddress = throttle(() => deps.settings.loginFailuresPerAddress);
  const byUserAtAddress = throttle(() => deps.settings.loginFailuresPerUser);
  const secure = config.tls !== undefined;

  const startSession = async (ctx: HandlerContext, user: UserRow, now: Date) => {
    const session = await createSession(db, {
      userId: user.id,
      remoteAddr: ctx.values.get(kRemoteAddr),
      userAgent: ctx.values.get(kUserAgent),
      ttlMs: SESSION_TTL_MS,
      now,
    });
    ctx.responseHeader.append("set-cookie", sessionCookie(session.secret, Math.floor(SESSION_TTL_MS / 1000), secure));
    return { sessionToken: session.secret, sessionExpireTime: timestampFromDate(session.expiresAt) };
  };

  const me = async (ctx: HandlerContext): Promise<{ principal: Principal; user: UserRow }> => {
    const principal = ctx.values.get(kPrincipal)!;
    return { principal, user: await userById(db, principal.userId!) };
  };

  const totpSecretOf = (user: UserRow) => (user.totpSecretEnc ? Buffer.from(open(deps.masterKey, TOTP_PURPOSE, user.totpSecretEnc)).toString("utf8") : undefined);

  // Accepts a TOTP code once, remembering its time step so it is never accepted again.
  const checkTotp = async (user: UserRow, secret: string, code: string): Promise<boolean> => {
    const step = verifyTotp(secret, code.trim(), user.totpLastStep);
    if (step === undefined) return false;
    await db.user.update({ where: { id: user.id }, data: { totpLastStep: step } });
    return true;
  };

  return {
    async getSetupState(_req, ctx) {
      const serverUrl = agentServerUrl(ctx, config.publicUrl);
      return {
        serverUrl,
        serverUrlWarning: serverUrlWarning(serverUrl),
        setupRequired: (await db.user.count()) === 0,
        signingKeyId: deps.signer.activeKeyId,
        signingKeyFingerprint: activeKeyFingerprint(deps.signer),
        ssoEnabled: config.oidc !== undefined,
        ssoLoginPath: config.oidc ? "/auth/oidc/login" : "",
      };
    },

    async setup(req, ctx) {
      const already = () => new ConnectError("setup is already done; sign in instead", Code.FailedPrecondition);
      if ((await db.user.count()) > 0) throw already();
      const name = username(req.username);
      const password = newPassword(req.password, name);
      const displayName = text("display_name", req.displayName.trim(), { max: 100 }) || name;
      const passwordHash = await hashPassword(password);
      const now = new Date();
      // The settings row is the guard: two Setup calls at once cannot both create an admin.
      const user = await db.$transaction(async (tx) => {
        const done = await tx.setting.findUnique({ where: { key: "setup.completed" } });
        if (done || (await tx.user.count()) > 0) return undefined;
        await tx.setting.create({ data: { key: "setup.completed", value: { at: now.toISOString(), by: name }, updatedBy: name } });
        return tx.user.create({ data: { id: newId(), username: name, displayName, role: "admin", passwordHash, passwordChangedAt: now, lastLoginAt: now } });
      }).catch((err: unknown) => {
        if ((err as { code?: string }).code === "P2002") return undefined;
        throw err;
      });
      if (!user) throw already();
      await audit(db, ctx, { target: `user:${user.id}`, after: toJson(UserSchema, userToProto(user)), anonymousName: name });
      return { user: userToProto(user), ...(await startSession(ctx, user, now)) };
    },

    async login(req, ctx) {
      const address = ctx.values.get(kRemoteAddr) || "unknown";
      const name = req.username.trim().toLowerCase().slice(0, 64);
      if (!name || !req.password) throw invalid("username and password are required");
      const userAtAddress = `${name}\n${address}`;
      const waitMs = Math.max(byAddress.wait(address), byUserAtAddress.wait(userAtAddress));
      if (waitMs > 0) {
        const seconds = Math.ceil(waitMs / 1000);
        throw new ConnectError(`too many failed sign-ins from this address; try again in ${plural(seconds, "second")}`, Code.ResourceExhausted, { "retry-after": String(seconds) });
      }

      const user = await db.user.findUnique({ where: { username: name } });
      const code = req.totpCode.trim();
      // The code is asked for before anything is checked, so the answer says only that this
      // account has a second factor, never whether the password was right. Nothing was guessed,
      // so nothing is counted.
      if (user?.totpEnabled && !code) throw needsCode();
      // Unknown users cost as much as known ones, so timing tells nothing.
      const passwordOk = user?.passwordHash ? await verifyPassword(req.password, user.passwordHash) : (await verifyPassword(req.password, await decoyHash()), false);
      const fail = async (reason: string, error: ConnectError) => {
        byAddress.fail(address);
        byUserAtAddress.fail(userAtAddress);
        await recordSecurityEvent(db, { type: "login_failed", severity: "warning", message: `sign-in failed for "${name}": ${reason}`, remoteAddr: address, detail: { username: name, reason } });
        await audit(db, ctx, { target: user ? `user:${user.id}` : `username:${name}`, outcome: reason, anonymousName: name });
        return error;
      };
      const wrong = code ? unauthorisedWithCode : unauthorised;
      if (!user || !passwordOk) throw await fail(user?.totpEnabled ? "wrong password or TOTP code" : "wrong username or password", wrong());
      if (user.totpEnabled) {
        // Checked only with the right password, so a code is never spent by someone guessing.
        const secret = totpSecretOf(user);
        if (!secret || !(await checkTotp(user, secret, code))) throw await fail("wrong password or TOTP code", wrong());
      }
      if (user.disabledAt) throw await fail("account disabled", new ConnectError("this account is disabled; ask an admin", Code.PermissionDenied));
      byUserAtAddress.reset(userAtAddress);
      const now = new Date();
      const updated = await db.user.update({ where: { id: user.id }, data: { lastLoginAt: now } });
      await audit(db, ctx, { target: `user:${user.id}`, anonymousName: name });
      return { user: userToProto(updated), ...(await startSession(ctx, updated, now)) };
    },

    async logout(_, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      if (principal.kind === "session") {
        await db.session.update({ where: { id: principal.credentialId }, data: { revokedAt: new Date() } });
        deps.principals.forget();
        ctx.responseHeader.append("set-cookie", sessionCookie("", 0, secure));
        await audit(db, ctx, { target: `session:${principal.credentialId}` });
      }
      return {};
    },

    async whoAmI(_, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      const user = principal.userId ? await userById(db, principal.userId) : undefined;
      return {
        principal: create(PrincipalSchema, {
          kind: principal.kind,
          role: roleToProto(principal.role),
          user: user ? userToProto(user) : undefined,
          credentialId: principal.credentialId,
          credentialName: principal.kind === "session" ? "" : principal.name,
        }),
      };
    },

    async changePassword(req, ctx) {
      const { principal, user } = await me(ctx);
      if (!user.passwordHash || !(await verifyPassword(req.currentPassword, user.passwordHash))) {
        throw new ConnectError("the current password is wrong", Code.PermissionDenied);
      }
      const password = newPassword(req.newPassword, user.username);
      const now = new Date();
      await db.user.update({ where: { id: user.id }, data: { passwordHash: await hashPassword(password), passwordChangedAt: now } });
      const ended = await revokeSessions(db, user.id, now, principal.credentialId);
      deps.principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, after: { passwordChanged: true, otherSessionsEnded: ended } });
      return {};
    },

    async beginTotpEnrollment(req, ctx) {
      const { user } = await me(ctx);
      if (!user.passwordHash || !(await verifyPassword(req.password, user.passwordHash))) throw new ConnectError("the password is wrong", Code.PermissionDenied);
      if (user.totpEnabled) throw new ConnectError("TOTP is already on; disable it first to enrol a new authenticator", Code.FailedPrecondition);
      const secret = newTotpSecret();
      await db.user.update({ where: { id: user.id }, data: { totpSecretEnc: new Uint8Array(seal(deps.masterKey, TOTP_PURPOSE, Buffer.from(secret))), totpLastStep: null } });
      return { secret, uri: totpUri(secret, user.username) };
    },

    async confirmTotpEnrollment(req, ctx) {
      const { user } = await me(ctx);
      const secret = totpSecretOf(user);
      if (user.totpEnabled) throw new ConnectError("TOTP is already on", Code.FailedPrecondition);
      if (!secret) throw new ConnectError("start with BeginTotpEnrollment", Code.FailedPrecondition);
      if (!(await checkTotp(user, secret, req.code))) throw invalid("the code does not match; check the authenticator's clock and try the next code");
      await db.user.update({ where: { id: user.id }, data: { totpEnabled: true } });
      deps.principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, before: { totpEnabled: false }, after: { totpEnabled: true } });
      return {};
    },

    async disableTotp(req, ctx) {
      const { user } = await me(ctx);
      if (!user.totpEnabled) throw new ConnectError("TOTP is not on", Code.FailedPrecondition);
      if (!user.passwordHash || !(await verifyPassword(req.password, user.passwordHash))) throw new ConnectError("the password is wrong", Code.PermissionDenied);
      const secret = totpSecretOf(user);
      if (!secret || !(await checkTotp(user, secret, req.code))) throw new ConnectError("the TOTP code is wrong or was already used", Code.PermissionDenied);
      await db.user.update({ where: { id: user.id }, data: { totpEnabled: false, totpSecretEnc: null, totpLastStep: null } });
      await audit(db, ctx, { target: `user:${user.id}`, before: { totpEnabled: true }, after: { totpEnabled: false } });
      return {};
    },
  };
}

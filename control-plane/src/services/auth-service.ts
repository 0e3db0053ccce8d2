import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { PrincipalSchema, UserSchema } from "@redflag/gen/identity_pb";
import { kPrincipal, kRemoteAddr, kUserAgent, type Principal } from "../auth/context.ts";
import { SESSION_TTL_MS, sessionCookie, type PrincipalResolver } from "../auth/principals.ts";
import { roleToProto } from "@redflag/common/roles";
import type { Config } from "../config.ts";
import type { Settings } from "../settings.ts";
import { agentServerUrl, serverUrlWarning } from "../domain/enrolment.ts";
import {
  beginTotpEnrollment,
  changePassword,
  confirmTotpEnrollment,
  disableTotp,
  endSession,
  newPassword,
  person,
  setUpFirstAdmin,
  setupRequired,
  username,
  type NewSession,
  type SessionClient,
} from "../domain/people.ts";
import { createPasswordSignIn } from "../domain/sign-in.ts";
import { activeKeyFingerprint, type CommandSigner } from "../signing/signer.ts";
import type { UserRow } from "../store/people.ts";
import type { Prisma } from "../store/types.ts";
import { audit } from "./audit.ts";
import { userToProto } from "./convert.ts";
import { text } from "./validate.ts";

export interface AuthServiceDeps {
  config: Config;
  db: Prisma;
  principals: PrincipalResolver;
  masterKey: Buffer;
  // Read at each call: a rotation changes the active key.
  signer: Pick<CommandSigner, "activeKeyId" | "trustedKeys">;
  settings: Settings;
}

const client = (ctx: HandlerContext): SessionClient => ({ remoteAddr: ctx.values.get(kRemoteAddr), userAgent: ctx.values.get(kUserAgent) });

export function createAuthService(deps: AuthServiceDeps): ServiceImpl<typeof AuthService> {
  const { db, config, masterKey } = deps;
  const signIn = createPasswordSignIn({ db, masterKey, settings: deps.settings });
  const secure = config.tls !== undefined;

  // Hands a new session to the browser (cookie) and to API clients (the response).
  const sessionStarted = (ctx: HandlerContext, session: NewSession) => {
    ctx.responseHeader.append("set-cookie", sessionCookie(session.secret, Math.floor(SESSION_TTL_MS / 1000), secure));
    return { sessionToken: session.secret, sessionExpireTime: timestampFromDate(session.expiresAt) };
  };

  const me = async (ctx: HandlerContext): Promise<{ principal: Principal; user: UserRow }> => {
    const principal = ctx.values.get(kPrincipal)!;
    return { principal, user: await person(db, principal.userId!) };
  };

  return {
    async getSetupState(_req, ctx) {
      const serverUrl = agentServerUrl(ctx, config.publicUrl);
      return {
        serverUrl,
        serverUrlWarning: serverUrlWarning(serverUrl),
        setupRequired: await setupRequired(db),
        signingKeyId: deps.signer.activeKeyId,
        signingKeyFingerprint: activeKeyFingerprint(deps.signer),
        ssoEnabled: config.oidc !== undefined,
        ssoLoginPath: config.oidc ? "/auth/oidc/login" : "",
      };
    },

    async setup(req, ctx) {
      const already = () => new ConnectError("setup is already done; sign in instead", Code.FailedPrecondition);
      if (!(await setupRequired(db))) throw already();
      const name = username(req.username);
      const password = newPassword(req.password, name);
      const displayName = text("display_name", req.displayName.trim(), { max: 100 }) || name;
      const done = await setUpFirstAdmin(db, { username: name, displayName, password, client: client(ctx), now: new Date() }, (tx, user) =>
        audit(tx, ctx, { target: `user:${user.id}`, after: toJson(UserSchema, userToProto(user)), anonymousName: name }),
      );
      if (!done) throw already();
      return { user: userToProto(done.user), ...sessionStarted(ctx, done.session) };
    },

    async login(req, ctx) {
      const { user, session } = await signIn({ username: req.username, password: req.password, totpCode: req.totpCode, client: client(ctx) }, (tx, { name, user, outcome }) =>
        audit(tx, ctx, { target: user ? `user:${user.id}` : `username:${name}`, ...(outcome ? { outcome } : {}), anonymousName: name }),
      );
      return { user: userToProto(user), ...sessionStarted(ctx, session) };
    },

    async logout(_, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      if (principal.kind === "session") {
        await endSession(db, principal.credentialId, new Date(), (tx) => audit(tx, ctx, { target: `session:${principal.credentialId}` }));
        deps.principals.forget();
        ctx.responseHeader.append("set-cookie", sessionCookie("", 0, secure));
      }
      return {};
    },

    async whoAmI(_, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      const user = principal.userId ? await person(db, principal.userId) : undefined;
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
      await changePassword(db, user, { current: req.currentPassword, next: req.newPassword, keepSessionId: principal.credentialId, now: new Date() }, (tx, { otherSessionsEnded }) =>
        audit(tx, ctx, { target: `user:${user.id}`, after: { passwordChanged: true, otherSessionsEnded } }),
      );
      deps.principals.forget();
      return {};
    },

    async beginTotpEnrollment(req, ctx) {
      const { user } = await me(ctx);
      return beginTotpEnrollment(db, masterKey, user, req.password);
    },

    async confirmTotpEnrollment(req, ctx) {
      const { user } = await me(ctx);
      await confirmTotpEnrollment(db, masterKey, user, req.code, (tx) => audit(tx, ctx, { target: `user:${user.id}`, before: { totpEnabled: false }, after: { totpEnabled: true } }));
      deps.principals.forget();
      return {};
    },

    async disableTotp(req, ctx) {
      const { user } = await me(ctx);
      await disableTotp(db, masterKey, user, { password: req.password, code: req.code }, (tx) => audit(tx, ctx, { target: `user:${user.id}`, before: { totpEnabled: true }, after: { totpEnabled: false } }));
      return {};
    },
  };
}

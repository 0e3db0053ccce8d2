import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { policyFor } from "../src/auth/policy.ts";
import { totpCode } from "../src/auth/totp.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

const SERVICES: DescService[] = [AgentService, AuthService, UserService, ApiTokenService, AuditService, TokenService, FleetService, CommandService, UpdateService, SecurityService, SettingsService, ReportService, ReleaseService, PolicyService];
const ADMIN_PASSWORD = "correct horse battery staple";
const PASSWORD = "a long enough passphrase 42";

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(async () => {
  await cp?.close();
});

const transport = (headers: Record<string, string> = {}) =>
  createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor(headers)] });
const as = (secret?: string) => transport(secret ? { authorization: `Bearer ${secret}` } : {});
const auth = (secret?: string) => createClient(AuthService, as(secret));
const users = (secret: string) => createClient(UserService, as(secret));
const apiTokens = (secret: string) => createClient(ApiTokenService, as(secret));

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}
async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await failure(promise);
  expect(Code[err.code], err.rawMessage).toBe(Code[code]);
  if (message) expect(err.rawMessage).toMatch(message);
  return err;
}

describe("people", () => {
  let admin: string;
  let operator: string;
  let viewer: string;
  let viewerId: string;

  it("sets up the first admin once, with a strong password, and shows the signing key", async () => {
    const state = await auth().getSetupState({});
    expect(state).toMatchObject({ setupRequired: true, signingKeyId: cp.app.signingKeyId });
    expect(state.signingKeyFingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);

    await expectCode(auth().setup({ username: "alice", password: "short" }), Code.InvalidArgument, /at least 12 characters/);
    await expectCode(auth().setup({ username: "Not Valid!", password: ADMIN_PASSWORD }), Code.InvalidArgument, /username must be/);
    expect(await cp.app.db.prisma.user.count()).toBe(0);

    let cookie = "";
    const res = await auth().setup({ username: "Alice", password: ADMIN_PASSWORD, displayName: "Alice A." }, { onHeader: (h) => (cookie = h.get("set-cookie") ?? "") });
    expect(res.user).toMatchObject({ username: "alice", displayName: "Alice A.", role: Role.ADMIN });
    expect(res.sessionToken).toMatch(/^rfses_/);
    expect(cookie).toMatch(/^redflag_session=rfses_[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=604800$/);
    admin = res.sessionToken;

    await expectCode(auth().setup({ username: "mallory", password: ADMIN_PASSWORD }), Code.FailedPrecondition, /setup is already done/);
    expect((await auth().getSetupState({})).setupRequired).toBe(false);
  });

  it("signs in with a password, by bearer or by cookie, and refuses wrong ones without saying which part was wrong", async () => {
    await expectCode(auth().login({ username: "alice", password: "wrong password here" }), Code.Unauthenticated, /^wrong username or password$/);
    await expectCode(auth().login({ username: "nobody", password: ADMIN_PASSWORD }), Code.Unauthenticated, /^wrong username or password$/);
    const events = await cp.app.db.prisma.securityEvent.findMany({ where: { type: "login_failed" } });
    expect(events.map((e) => e.message)).toEqual(['sign-in failed for "alice": wrong username or password', 'sign-in failed for "nobody": wrong username or password']);

    const res = await auth().login({ username: "ALICE", password: ADMIN_PASSWORD });
    const me = await auth(res.sessionToken).whoAmI({});
    expect(me.principal).toMatchObject({ kind: "session", role: Role.ADMIN, user: { username: "alice" } });
    const byCookie = createClient(AuthService, transport({ cookie: `theme=dark; redflag_session=${res.sessionToken}` }));
    expect((await byCookie.whoAmI({})).principal?.user?.username).toBe("alice");
    await expectCode(auth().whoAmI({}), Code.Unauthenticated, /missing credentials/);
    await expectCode(auth("rfses_forged").whoAmI({}), Code.Unauthenticated, /the session has ended/);
  });

  it("lets an admin create people with roles, and refuses duplicates and bad input", async () => {
    const op = await users(admin).createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
    const vw = await users(admin).createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER, displayName: "Victor" });
    viewerId = vw.user!.id;
    await expectCode(users(admin).createUser({ username: "oscar", password: PASSWORD, role: Role.VIEWER }), Code.AlreadyExists, /the username "oscar" is taken/);
    await expectCode(users(admin).createUser({ username: "zed", password: PASSWORD, role: Role.UNSPECIFIED }), Code.InvalidArgument, /role must be viewer, operator or admin/);
    await expectCode(users(admin).createUser({ username: "zed", password: "zedzedzedzedzed", role: Role.VIEWER }), Code.InvalidArgument, /must not contain the username/);
    operator = (await auth().login({ username: "oscar", password: PASSWORD })).sessionToken;
    viewer = (await auth().login({ username: "victor", password: PASSWORD })).sessionToken;
    expect(op.user?.role).toBe(Role.OPERATOR);
    const listed = await users(admin).listUsers({});
    expect(listed.users.map((u) => u.username)).toEqual(["alice", "oscar", "victor"]);
    await expectCode(users(admin).listUsers({ pageSize: 10_000 }), Code.InvalidArgument, /page_size/);
  });

  it("holds roles: viewers read, operators act, admins manage", async () => {
    await expect(createClient(FleetService, as(viewer)).listAgents({})).resolves.toBeDefined();
    await expectCode(
      createClient(CommandService, as(viewer)).createCommand({ agentId: "00000000-0000-4000-8000-000000000000", action: { case: "collectSpecs", value: {} } }),
      Code.PermissionDenied,
      /^CreateCommand needs the operator role; victor acts as viewer$/,
    );
    await expectCode(
      createClient(CommandService, as(operator)).createCommand({ agentId: "00000000-0000-4000-8000-000000000000", action: { case: "collectSpecs", value: {} } }),
      Code.NotFound,
    );
    await expectCode(users(operator).listUsers({}), Code.PermissionDenied, /needs the admin role/);
    // The live feed is for signed-in people only.
    const anonymousFeed = createClient(CommandService, as()).watchEvents({});
    await expectCode((async () => { for await (const _ of anonymousFeed) break; })(), Code.Unauthenticated, /missing credentials/);
    await expectCode(createClient(TokenService, as(operator)).createRegistrationToken({ seats: 1 }), Code.PermissionDenied);
  });

  it("gives API tokens their owner's identity, never more than its scope, and stops them at once when revoked", async () => {
    const created = await apiTokens(operator).createApiToken({ name: "read-only script", scope: Role.VIEWER });
    expect(created.secret).toMatch(/^rfapi_/);
    expect(created.token).toMatchObject({ username: "oscar", scope: Role.VIEWER, name: "read-only script" });
    expect(created.token?.expireTime).toBeDefined();
    const token = created.secret;
    expect((await auth(token).whoAmI({})).principal).toMatchObject({ kind: "api_token", role: Role.VIEWER, user: { username: "oscar" } });
    await expectCode(
      createClient(CommandService, as(token)).createCommand({ agentId: "00000000-0000-4000-8000-000000000000", action: { case: "collectSpecs", value: {} } }),
      Code.PermissionDenied,
      /needs the operator role; oscar acts as viewer/,
    );
    await expectCode(apiTokens(operator).createApiToken({ name: "too much", scope: Role.ADMIN }), Code.PermissionDenied, /cannot do more than its owner/);
    await expectCode(apiTokens(token).createApiToken({ name: "chain" }), Code.PermissionDenied, /cannot create other tokens/);
    await expectCode(createClient(ApiTokenService, as(cp.adminKey)).createApiToken({ name: "x" }), Code.FailedPrecondition, /belong to people/);
    await expectCode(auth(token).changePassword({ currentPassword: PASSWORD, newPassword: "another long passphrase" }), Code.PermissionDenied, /only a signed-in person/);

    expect((await apiTokens(operator).listApiTokens({})).tokens.map((t) => t.name)).toEqual(["read-only script"]);
    await expectCode(apiTokens(viewer).revokeApiToken({ id: created.token!.id }), Code.PermissionDenied, /only the owner or an admin/);
    await expectCode(apiTokens(operator).listApiTokens({ allUsers: true }), Code.PermissionDenied);
    const revoked = await apiTokens(admin).revokeApiToken({ id: created.token!.id });
    expect(revoked.token?.revokeTime).toBeDefined();
    await expectCode(auth(token).whoAmI({}), Code.Unauthenticated, /not valid/);
  });

  it("enrols TOTP, then asks for a code at sign-in and never accepts one twice", async () => {
    const begin = await auth(viewer).beginTotpEnrollment({ password: PASSWORD });
    expect(begin.uri).toMatch(/^otpauth:\/\/totp\/RedFlag:victor\?/);
    await expectCode(auth(viewer).confirmTotpEnrollment({ code: "000000" }), Code.InvalidArgument, /does not match/);
    // The current step to confirm, the next one to sign in: one step of drift is accepted
    // either way, and a step is never accepted twice.
    await auth(viewer).confirmTotpEnrollment({ code: totpCode(begin.secret) });
    await expectCode(auth().login({ username: "victor", password: PASSWORD }), Code.Unauthenticated, /needs a TOTP code/);
    const code = totpCode(begin.secret, Date.now() + 30_000);
    const signedIn = await auth().login({ username: "victor", password: PASSWORD, totpCode: code });
    expect(signedIn.user?.totpEnabled).toBe(true);
    await expectCode(auth().login({ username: "victor", password: PASSWORD, totpCode: code }), Code.Unauthenticated, /^wrong username, password or TOTP code$/);
    viewer = signedIn.sessionToken;
  });

  it("ends other sessions on a password change, and all of them when an admin disables someone", async () => {
    const second = (await auth().login({ username: "oscar", password: PASSWORD })).sessionToken;
    await expectCode(auth(operator).changePassword({ currentPassword: "wrong wrong wrong", newPassword: "a brand new passphrase" }), Code.PermissionDenied);
    await auth(operator).changePassword({ currentPassword: PASSWORD, newPassword: "a brand new passphrase 1" });
    await expectCode(auth(second).whoAmI({}), Code.Unauthenticated, /session has ended/);
    await expect(auth(operator).whoAmI({})).resolves.toBeDefined();

    await expectCode(users(admin).disableUser({ id: (await auth(admin).whoAmI({})).principal!.user!.id }), Code.FailedPrecondition, /cannot disable yourself/);
    await users(admin).disableUser({ id: viewerId });
    await expectCode(auth(viewer).whoAmI({}), Code.Unauthenticated);
    // With TOTP on, only the right password and code would hear that the account is disabled.
    await expectCode(auth().login({ username: "victor", password: PASSWORD, totpCode: "000000" }), Code.Unauthenticated, /^wrong username, password or TOTP code$/);
    const reset = await users(admin).resetPassword({ id: viewerId, newPassword: "a reset passphrase for him", clearTotp: true });
    expect(reset.user?.totpEnabled).toBe(false);
    await expectCode(auth().login({ username: "victor", password: "a reset passphrase for him" }), Code.PermissionDenied, /this account is disabled/);
    await users(admin).enableUser({ id: viewerId });
    viewer = (await auth().login({ username: "victor", password: "a reset passphrase for him" })).sessionToken;

    const alice = (await auth(admin).whoAmI({})).principal!.user!.id;
    await expectCode(users(admin).updateUser({ id: alice, role: Role.VIEWER }), Code.FailedPrecondition, /last admin/);
  });

  it("slows down guessing: after ten failures from one address the next attempt from there waits", async () => {
    await users(admin).createUser({ username: "target", password: PASSWORD, role: Role.VIEWER });
    for (let i = 0; i < 10; i++) await expectCode(auth().login({ username: "target", password: `guess number ${i}xx` }), Code.Unauthenticated);
    // Each further failure doubles the wait (1 s, 2 s, 4 s …): a few more guesses are refused
    // however slow this machine is, and so is the right password from here meanwhile.
    let answer: ConnectError | undefined;
    for (let i = 10; i < 14 && answer?.code !== Code.ResourceExhausted; i++) answer = await failure(auth().login({ username: "target", password: `guess number ${i}xx` }));
    expect(answer!.rawMessage).toMatch(/^too many failed sign-ins from this address; try again in \d+ seconds?$/);
    expect(Number(answer!.metadata.get("retry-after"))).toBeGreaterThan(0);
    await expectCode(auth().login({ username: "target", password: PASSWORD }), Code.ResourceExhausted);
  });

  it("records who changed what, from where, before and after, for admins to read", async () => {
    const audit = createClient(AuditService, as(admin));
    const created = await audit.listAuditEntries({ action: "UserService/CreateUser" });
    expect(created.entries.map((e) => [e.actorName, e.actorKind, e.outcome])).toContainEqual(["alice", "session", "ok"]);
    const oscar = created.entries.find((e) => e.afterJson.includes('"oscar"'))!;
    expect(oscar.remoteAddr).toMatch(/127\.0\.0\.1/);
    expect(oscar.afterJson).not.toMatch(/scrypt|passwordHash|rfses_/);
    const failedLogins = await audit.listAuditEntries({ action: "AuthService/Login", target: "username:nobody" });
    expect(failedLogins.entries[0]).toMatchObject({ actorKind: "anonymous", actorName: "nobody", outcome: "wrong username or password" });
    const disabled = (await audit.listAuditEntries({ action: "DisableUser" })).entries[0]!;
    expect(JSON.parse(disabled.beforeJson).disabled ?? false).toBe(false);
    expect(JSON.parse(disabled.afterJson).disabled).toBe(true);
    const page = await audit.listAuditEntries({ pageSize: 2 });
    expect(page.entries).toHaveLength(2);
    const next = await audit.listAuditEntries({ pageSize: 2, pageToken: page.nextPageToken });
    expect(BigInt(next.entries[0]!.id)).toBeLessThan(BigInt(page.entries[1]!.id));
    await expectCode(audit.listAuditEntries({ pageToken: "bm9wZQ" }), Code.InvalidArgument, /page_token/);
    await expectCode(createClient(AuditService, as(operator)).listAuditEntries({}), Code.PermissionDenied);
  });

  it("ends a session on logout", async () => {
    const session = (await auth().login({ username: "oscar", password: "a brand new passphrase 1" })).sessionToken;
    await auth(session).logout({});
    await expectCode(auth(session).whoAmI({}), Code.Unauthenticated, /session has ended/);
  });

  // Every RPC of every service, called by every kind of caller: the auth layer lets through
  // exactly what the policy table says. A call it lets through may still fail in its handler
  // (empty input, unknown IDs): that is not a denial.
  it("holds the policy table for every RPC and every caller", async () => {
    const apiViewer = (await apiTokens(admin).createApiToken({ name: "matrix", scope: Role.VIEWER })).secret;
    const callers: { name: string; secret?: string; role?: "viewer" | "operator" | "admin"; session?: boolean }[] = [
      { name: "anonymous" },
      { name: "viewer session", secret: viewer, role: "viewer", session: true },
      { name: "operator session", secret: operator, role: "operator", session: true },
      { name: "admin session", secret: admin, role: "admin", session: true },
      { name: "admin's viewer-scoped API token", secret: apiViewer, role: "viewer" },
      { name: "admin key", secret: cp.adminKey, role: "admin" },
    ];
    const rank = { viewer: 0, operator: 1, admin: 2 } as const;
    const checked: string[] = [];
    for (const service of SERVICES) {
      for (const method of service.methods) {
        if (method.methodKind !== "unary") continue;
        // Each call would change shared state for the tests above if it succeeded: skip the ones
        // that cannot fail on empty input (logout ends the session used by later callers).
        if (method.name === "Logout") continue;
        const access = policyFor(service.typeName, method.name)!;
        for (const caller of callers) {
          // RevokeAdminKey succeeds on empty input and would end the admin key used by later
          // callers: only those it must refuse call it here (security.test.ts covers admins).
          if (method.name === "RevokeAdminKey" && caller.role === "admin") continue;
          const client = createClient(service, as(caller.secret)) as unknown as Record<string, (req: object) => Promise<unknown>>;
          const err = await client[method.localName]!({}).then(() => undefined, (e: unknown) => ConnectError.from(e));
          const denied =
            err !== undefined &&
            (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) &&
            /^(missing credentials|\w+ needs the \w+ role|only a signed-in person|this method is not available|the session has ended|the API token is not valid|access token is not valid)/.test(err.rawMessage);
          const allowed =
            access === "public" ||
            (access === "self" && caller.session === true) ||
            (access !== "agent" && access !== "self" && caller.role !== undefined && rank[caller.role] >= rank[access as keyof typeof rank]);
          expect(denied, `${service.typeName}/${method.name} as ${caller.name}: ${err?.code} ${err?.rawMessage}`).toBe(!allowed);
          checked.push(`${method.name}/${caller.name}`);
        }
      }
    }
    expect(checked.length).toBeGreaterThan(150);
  });
});


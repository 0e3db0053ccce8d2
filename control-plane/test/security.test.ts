import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { CommandSchema } from "@redflag/gen/command_pb";
import { TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { loadConfig } from "../src/config.ts";
import { reloadSigningKeys } from "../src/domain/signing-keys.ts";
import { ensureBootstrapAdminKey } from "../src/store/bootstrap.ts";
import { KEY_SET_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { loadMasterKey } from "../src/signing/master-key.ts";
import { keySetRevision } from "@redflag/common/signing/key-ids";
import { newRegistrationToken, nonce, registerTestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
const signerOf = (t: TestControlPlane) => t.app.signer;
let security: ReturnType<typeof createClient<typeof SecurityService>>;
beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_PUBLIC_URL: "https://redflag.example.com/" });
  security = createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
});
afterAll(async () => {
  await cp?.close();
});

describe("SecurityService", () => {
  it("summarises keys, lifetimes and recent events", async () => {
    const anon = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    await anon.setup({ username: "sam", password: "a passphrase for the first admin" });
    await expect(anon.login({ username: "sam", password: "not the right passphrase" })).rejects.toMatchObject({ code: Code.Unauthenticated });

    const o = await security.getSecurityOverview({});
    expect(o.signingKeys).toEqual([expect.objectContaining({ keyId: cp.app.signingKeyId, algorithm: "Ed25519", state: "active" })]);
    expect(o.signingKeys[0]!.fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    expect(Number(o.commandExpiry?.seconds)).toBe(600);
    expect(o).toMatchObject({ adminKeyActive: true, usersWithoutTotp: 1, admins: 1 });
    expect(o.eventCounts.find((c) => c.type === "login_failed")).toMatchObject({ last24h: 1, last30d: 1 });

    const events = await security.listSecurityEvents({ type: "login_failed" });
    expect(events.events[0]).toMatchObject({ type: "login_failed", severity: "warning", message: 'sign-in failed for "sam": wrong username or password' });
    expect(JSON.parse(events.events[0]!.detailJson)).toEqual({ username: "sam", reason: "wrong username or password" });
    await expect(security.listSecurityEvents({ type: "nope" })).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  it("reports the command expiry commands are signed with: the command_expiry setting, not the environment's default", async () => {
    const settings = createClient(SettingsService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    await settings.updateSettings({ values: { command_expiry: "15m" } });
    try {
      expect(Number((await security.getSecurityOverview({})).commandExpiry?.seconds)).toBe(900);
      const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
      await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } });
      const signed = (await agent.client.pollCommands({ nonce: nonce() })).commands[0]!;
      const command = fromBinary(CommandSchema, signed.command);
      expect(timestampDate(command.expireTime!).getTime() - timestampDate(command.issueTime!).getTime()).toBe(900_000);
    } finally {
      await settings.updateSettings({ values: { command_expiry: "" } });
    }
    expect(Number((await security.getSecurityOverview({})).commandExpiry?.seconds)).toBe(600);
  });

  it("puts the public URL in install commands, and refuses one that is not a URL", async () => {
    const res = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    expect(res.installCommands[0]!.command).toContain("curl -fsSL 'https://redflag.example.com/install/linux.sh' | sudo sh -s -- --token");
    expect(res.serverUrlWarning).toBe("");
    expect(() => loadConfig({ REDFLAG_PUBLIC_URL: "redflag.example.com" })).toThrow(/REDFLAG_PUBLIC_URL=redflag\.example\.com must be an http\(s\) URL/);
  });
});

describe("signing-key rotation", () => {
  it("makes a new key active, publishes the key set signed by the old and new keys, and retires the old one after the grace", async () => {
    const token = await newRegistrationToken(cp);
    const agent = await registerTestAgent(cp, token);
    const oldId = cp.app.signingKeyId;
    const oldPublic = agent.registration.trustedKeys[0]!.publicKey;
    await expect(security.rotateSigningKey({ grace: { seconds: 60n } })).rejects.toMatchObject({ code: Code.InvalidArgument, rawMessage: "grace must be from 1 hour to 90 days" });

    const rotated = await security.rotateSigningKey({ grace: { seconds: 86_400n } });
    expect(rotated.previousKey).toMatchObject({ keyId: oldId, state: "trusted" });
    expect(rotated.activeKey?.state).toBe("active");
    const newId = rotated.activeKey!.keyId;
    // What enrolment pins follows at once: the setup state and a new token's commands.
    const anonymous = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    const setup = await anonymous.getSetupState({});
    const minted = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    expect(setup.signingKeyId).toBe(newId);
    expect(setup.signingKeyFingerprint).toBe(minted.signingKeyFingerprint);
    expect(setup.signingKeyFingerprint).toBe(rotated.activeKey!.fingerprint);
    const overview = await security.getSecurityOverview({});
    expect(overview.signingKeys.map((k) => [k.keyId, k.state])).toEqual([[newId, "active"], [oldId, "trusted"]]);

    // The agent still pins only the old key: it gets the new set, signed by that old key too.
    const polled = await agent.client.pollCommands({ nonce: nonce(), status: { trustedKeysRevision: keySetRevision([oldId]) } });
    const set = fromBinary(TrustedKeySetSchema, polled.keySet!.keySet);
    expect(set.keys.map((k) => k.keyId).sort()).toEqual([newId, oldId].sort());
    const byOld = polled.keySet!.signatures.find((s) => s.keyId === oldId)!;
    expect(verifySignature(oldPublic, KEY_SET_TYPE, polled.keySet!.keySet, byOld.signature)).toBe(true);
    // Up to date: nothing to send.
    const quiet = await agent.client.pollCommands({ nonce: nonce(), status: { trustedKeysRevision: keySetRevision([newId, oldId]) } });
    expect(quiet.keySet).toBeUndefined();
    // Commands are signed with the new key now.
    await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } });
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands[0]!.keyId).toBe(newId);

    // The grace ends: only the new key remains, and the set says so.
    await cp.app.db.prisma.signingKey.update({ where: { id: oldId }, data: { retiredAt: new Date() } });
    await reloadSigningKeys(cp.app.db.prisma, await loadMasterKey(undefined, cp.dataDir), signerOf(cp));
    const after = await agent.client.pollCommands({ nonce: nonce(), status: { trustedKeysRevision: keySetRevision([newId, oldId]) } });
    expect(fromBinary(TrustedKeySetSchema, after.keySet!.keySet).keys.map((k) => k.keyId)).toEqual([newId]);
    expect(after.keySet!.signatures.map((s) => s.keyId)).toEqual([newId]);
    expect((await security.getSecurityOverview({})).signingKeys.find((k) => k.keyId === oldId)?.state).toBe("retired");
  });
});

describe("revoking the admin key", () => {
  let rp: TestControlPlane;
  beforeAll(async () => {
    rp = await startTestControlPlane();
  });
  afterAll(async () => {
    await rp?.close();
  });
  const as = (secret: string) => createConnectTransport({ baseUrl: rp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
  const securityAs = (secret: string) => createClient(SecurityService, as(secret));

  it("refuses while no admin person exists, so a fresh install cannot lock itself out", async () => {
    await expect(securityAs(rp.adminKey).revokeAdminKey({})).rejects.toMatchObject({ code: Code.FailedPrecondition, rawMessage: expect.stringMatching(/^no enabled admin person exists/) });
    expect((await securityAs(rp.adminKey).getSecurityOverview({})).adminKeyActive).toBe(true);
  });

  it("stops the key at once for an admin, records it, refuses a second time and operators", async () => {
    const anon = createClient(AuthService, createConnectTransport({ baseUrl: rp.url, httpVersion: "1.1" }));
    const admin = (await anon.setup({ username: "ada", password: "a passphrase for the first admin" })).sessionToken;
    await createClient(UserService, as(admin)).createUser({ username: "otto", password: "an operator passphrase", role: Role.OPERATOR });
    const operator = (await anon.login({ username: "otto", password: "an operator passphrase" })).sessionToken;
    await expect(securityAs(operator).revokeAdminKey({})).rejects.toMatchObject({ code: Code.PermissionDenied, rawMessage: "RevokeAdminKey needs the admin role; otto acts as operator" });

    // Warm the principal cache: the revocation must clear it.
    await securityAs(rp.adminKey).getSecurityOverview({});
    const res = await securityAs(admin).revokeAdminKey({});
    expect(timestampDate(res.revokeTime!).getTime()).toBeGreaterThan(Date.now() - 60_000);
    await expect(securityAs(rp.adminKey).getSecurityOverview({})).rejects.toMatchObject({ code: Code.Unauthenticated, rawMessage: "the API token is not valid (unknown or revoked)" });
    const o = await securityAs(admin).getSecurityOverview({});
    expect(o.adminKeyActive).toBe(false);
    expect(o.eventCounts.find((c) => c.type === "admin_key_revoked")).toMatchObject({ last24h: 1 });

    const audit = await createClient(AuditService, as(admin)).listAuditEntries({ action: "SecurityService/RevokeAdminKey" });
    expect(audit.entries).toHaveLength(1);
    expect(audit.entries[0]).toMatchObject({ actorName: "ada", actorKind: "session", target: "admin-key", outcome: "ok" });
    expect(JSON.parse(audit.entries[0]!.afterJson)).toMatchObject({ active: false });
    const events = await securityAs(admin).listSecurityEvents({ type: "admin_key_revoked" });
    expect(events.events).toHaveLength(1);
    expect(events.events[0]).toMatchObject({ severity: "info", message: "the bootstrap admin key was revoked by ada" });
    expect(JSON.parse(events.events[0]!.detailJson)).toEqual({ by: "ada", actorKind: "session" });

    await expect(securityAs(admin).revokeAdminKey({})).rejects.toMatchObject({ code: Code.FailedPrecondition, rawMessage: "the admin key is already revoked" });
  });

  it("stays revoked after a restart, and no new admin.key is written", async () => {
    const file = path.join(rp.dataDir, "admin.key");
    const before = await readFile(file, "utf8");
    rp = await rp.restart();
    expect(await readFile(file, "utf8")).toBe(before);
    expect(rp.adminKey).toBe(before.trim());
    await expect(securityAs(rp.adminKey).getSecurityOverview({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    expect(await rp.app.db.prisma.apiKey.count({ where: { kind: "bootstrap" } })).toBe(1);
    expect(await ensureBootstrapAdminKey(rp.app.db.prisma)).toMatchObject({ state: "revoked" });
    const admin = (await createClient(AuthService, createConnectTransport({ baseUrl: rp.url, httpVersion: "1.1" })).login({ username: "ada", password: "a passphrase for the first admin" })).sessionToken;
    expect((await securityAs(admin).getSecurityOverview({})).adminKeyActive).toBe(false);
  });
});

import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compareVersions } from "../src/settings.ts";
import { prune } from "../src/scheduler.ts";
import { generateKeyPair } from "../src/signing/keys.ts";
import { configIn, newRegistrationToken, nonce, randomMachineId, registerRequest, registerTestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
let settings: ReturnType<typeof createClient<typeof SettingsService>>;
beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_POLL_INTERVAL: "60s" });
  settings = createClient(SettingsService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
});
afterAll(async () => {
  await cp?.close();
});

describe("SettingsService", () => {
  it("lists every setting with its default from the environment", async () => {
    const list = (await settings.listSettings({})).settings;
    expect(list.find((s) => s.key === "poll_interval")).toMatchObject({ value: "1m", defaultValue: "1m", isDefault: true, type: "duration", min: "10s", max: "1h" });
    expect(list.map((s) => s.key)).toContain("retention_audit");
  });

  it("checks every value before changing any, and keeps a history", async () => {
    await expect(settings.updateSettings({ values: { poll_interval: "2m", poll_jitter_percent: "150" } })).rejects.toMatchObject({
      code: Code.InvalidArgument,
      rawMessage: "poll_jitter_percent must be from 0 to 100",
    });
    await expect(settings.updateSettings({ values: { polling: "1m" } })).rejects.toMatchObject({ code: Code.InvalidArgument, rawMessage: expect.stringMatching(/"polling" is not a setting/) });
    await expect(settings.updateSettings({ values: { poll_interval: "1s" } })).rejects.toMatchObject({ rawMessage: "poll_interval must be at least 10s" });
    expect((await settings.listSettings({})).settings.find((s) => s.key === "poll_interval")?.isDefault).toBe(true);

    const res = await settings.updateSettings({ values: { poll_interval: "120", poll_jitter_percent: "20" } });
    expect(res.settings.find((s) => s.key === "poll_interval")).toMatchObject({ value: "2m", isDefault: false, updatedBy: "admin.key" });
    const history = await settings.listSettingChanges({ key: "poll_interval" });
    expect(history.changes[0]).toMatchObject({ key: "poll_interval", before: "", after: "2m", changedBy: "admin.key" });
  });

  it("applies settings to agents: their poll interval and the command expiry", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const polled = await agent.client.pollCommands({ nonce: nonce() });
    expect(configIn(agent, polled.signedConfig)).toMatchObject({ pollIntervalSeconds: 120, pollJitterPercent: 20 });
    expect(polled.nextPollSeconds).toBe(120);
  });

  it("lets an agent older than the minimum version register, marked as needing an upgrade before anything else", async () => {
    await settings.updateSettings({ values: { minimum_agent_version: "9.0.0" } });
    const token = await newRegistrationToken(cp);
    const res = await cp.agentClient().register(registerRequest(token, randomMachineId(), generateKeyPair()));
    expect((await cp.admin.fleet.getAgent({ agentId: res.agentId })).agent?.upgradeRequired).toBe(true);
    await expect(cp.admin.commands.createCommand({ agentId: res.agentId, action: { case: "collectSpecs", value: {} } })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      rawMessage: expect.stringMatching(/below the minimum supported 9\.0\.0: upgrade it first/),
    });
    await settings.updateSettings({ values: { minimum_agent_version: "" } });
    expect((await cp.admin.fleet.getAgent({ agentId: res.agentId })).agent?.upgradeRequired).toBe(false);
    expect(compareVersions("0.1.0", "0.1.0")).toBe(0);
    expect(compareVersions("0.10.0", "0.9.9")).toBe(1);
    expect(compareVersions("1.0.0-rc.1", "1.0.0")).toBe(-1);
  });

  it("exports what differs from the defaults and imports it back, refusing bad JSON", async () => {
    const exported = JSON.parse((await settings.exportSettings({})).json);
    expect(exported).toEqual({ poll_interval: "2m", poll_jitter_percent: "20" });
    await settings.updateSettings({ values: { poll_interval: "", poll_jitter_percent: "" } });
    expect(JSON.parse((await settings.exportSettings({})).json)).toEqual({});
    const imported = await settings.importSettings({ json: JSON.stringify(exported) });
    expect(imported.changed).toBe(2);
    await expect(settings.importSettings({ json: "[1,2]" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(settings.importSettings({ json: '{"poll_interval": true}' })).rejects.toMatchObject({ rawMessage: "poll_interval must be a string or number" });
  });

  it("sets how many failed sign-ins are free before further attempts are slowed down", async () => {
    const { AuthService } = await import("@redflag/gen/auth_service_pb");
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    await settings.updateSettings({ values: { login_failures_per_user: "3" } });
    for (let i = 0; i < 3; i++) await expect(auth.login({ username: "ghost", password: `guess ${i} of many` })).rejects.toMatchObject({ code: Code.Unauthenticated });
    // Then each failure doubles the wait (1 s, 2 s, 4 s): a few more guesses meet it, however slow this machine is.
    const codes: (Code | undefined)[] = [];
    for (let i = 3; i < 6; i++) codes.push(await auth.login({ username: "ghost", password: `guess ${i} of many` }).then(() => undefined, (err: unknown) => (err as { code: Code }).code));
    expect(codes).toContain(Code.ResourceExhausted);
    await expect(settings.updateSettings({ values: { login_failures_per_user: "1" } })).rejects.toMatchObject({ rawMessage: "login_failures_per_user must be from 3 to 100" });
  });

  it("prunes old records by the retention settings", async () => {
    await cp.app.db.prisma.auditEntry.create({ data: { actorKind: "session", actorName: "old", action: "x", createdAt: new Date(Date.now() - 500 * 86_400_000) } });
    const tenYears = 3650 * 86_400;
    const retention = { retentionAuditSeconds: 400 * 86_400, retentionCommandsSeconds: tenYears, retentionMetricsSeconds: tenYears, retentionSecurityEventsSeconds: tenYears };
    const pruned = await prune(cp.app.db.prisma, new Date(), retention);
    expect(pruned.audit).toBe(1);
    expect(await cp.app.db.prisma.auditEntry.count({ where: { actorName: "old" } })).toBe(0);
  });
});

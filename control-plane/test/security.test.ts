import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
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

  it("puts the public URL in install commands, and refuses one that is not a URL", async () => {
    const res = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    expect(res.installCommands[0]!.command).toContain("--server https://redflag.example.com --token-file");
    expect(() => loadConfig({ REDFLAG_PUBLIC_URL: "redflag.example.com" })).toThrow(/REDFLAG_PUBLIC_URL=redflag\.example\.com must be an http\(s\) URL/);
  });
});

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { roleFor } from "../src/auth/role-map.ts";
import { parseRoleMap } from "../src/config.ts";
import { loadConfig } from "../src/config.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { startTestOidcProvider, type TestOidcProvider } from "./support/oidc-provider.ts";

let provider: TestOidcProvider;
let cp: TestControlPlane;
beforeAll(async () => {
  provider = await startTestOidcProvider();
  cp = await startTestControlPlane({
    REDFLAG_OIDC_ISSUER: provider.issuer,
    REDFLAG_OIDC_CLIENT_ID: provider.clientId,
    REDFLAG_OIDC_CLIENT_SECRET: provider.clientSecret,
    REDFLAG_OIDC_ALLOW_HTTP: "1",
    REDFLAG_OIDC_ROLE_MAP: "admin=it-admins,operator=it-ops,viewer=staff",
  });
});
afterAll(async () => {
  await cp?.close();
  await provider?.close();
});

// The browser's part: follow the redirects by hand, as a browser would.
async function signIn(): Promise<{ status: number; cookie?: string; body: string; callback?: string }> {
  const start = await fetch(`${cp.url}/auth/oidc/login`, { redirect: "manual" });
  expect(start.status).toBe(302);
  const authorize = start.headers.get("location")!;
  expect(authorize.startsWith(`${provider.issuer}/authorize?`)).toBe(true);
  expect(new URL(authorize).searchParams.get("code_challenge_method")).toBe("S256");
  const atProvider = await fetch(authorize, { redirect: "manual" });
  const callback = atProvider.headers.get("location")!;
  const back = await fetch(callback, { redirect: "manual" });
  const cookie = back.headers.get("set-cookie")?.split(";")[0];
  return { status: back.status, cookie, body: await back.text(), callback };
}

const whoAmI = (cookie: string) =>
  createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ cookie })] })).whoAmI({});

describe("single sign-on through OpenID Connect", () => {
  it("says it is there", async () => {
    const state = await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).getSetupState({});
    expect(state).toMatchObject({ ssoEnabled: true, ssoLoginPath: "/auth/oidc/login" });
  });

  it("creates the person on first sign-in with the role their groups map to, and keeps it in step", async () => {
    provider.nextUser = { sub: "u-42", preferred_username: "Grace.Hopper", name: "Grace Hopper", email: "grace@example.com", groups: ["staff", "it-ops"] };
    const first = await signIn();
    expect(first.status).toBe(302);
    expect(first.cookie).toMatch(/^redflag_session=rfses_/);
    const me = await whoAmI(first.cookie!);
    expect(me.principal).toMatchObject({ kind: "session", role: Role.OPERATOR, user: { username: "grace.hopper", displayName: "Grace Hopper", authSource: "oidc" } });

    // Promoted at the provider: the next sign-in brings the new role, for the same account.
    provider.nextUser = { ...provider.nextUser, groups: ["it-admins"] };
    const second = await signIn();
    const again = await whoAmI(second.cookie!);
    expect(again.principal).toMatchObject({ role: Role.ADMIN, user: { id: me.principal!.user!.id } });
    expect(await cp.app.db.prisma.user.count({ where: { authSource: "oidc" } })).toBe(1);
  });

  it("refuses people without a role, replays, and a provider answer that does not check out", async () => {
    provider.nextUser = { sub: "u-7", preferred_username: "mallory", groups: ["contractors"] };
    const none = await signIn();
    expect(none.status).toBe(403);
    expect(none.body).toMatch(/no RedFlag role \(claim "groups"\)/);

    provider.nextUser = { sub: "u-8", preferred_username: "ok", groups: ["staff"] };
    const ok = await signIn();
    const replay = await fetch(ok.callback!, { redirect: "manual" });
    expect(replay.status).toBe(400);
    expect(await replay.text()).toMatch(/expired or was already used/);

    provider.misbehave.wrongNonce = true;
    try {
      const forged = await signIn();
      expect(forged.status).toBe(401);
      expect(forged.cookie).toBeUndefined();
    } finally {
      provider.misbehave.wrongNonce = false;
    }
  });

  it("maps claims to the highest role and checks its configuration", () => {
    const map = parseRoleMap("viewer=*,admin=root");
    if (typeof map === "string") throw new Error(map);
    expect(roleFor({ groups: ["x"] }, { roleClaim: "groups", roleMap: map })).toBe("viewer");
    expect(roleFor({ groups: "root other" }, { roleClaim: "groups", roleMap: map })).toBe("admin");
    expect(parseRoleMap("boss=x")).toMatch(/role viewer, operator or admin/);
    expect(() => loadConfig({ REDFLAG_OIDC_ISSUER: "http://idp.example.com", REDFLAG_OIDC_CLIENT_ID: "a", REDFLAG_OIDC_CLIENT_SECRET: "b" })).toThrow(/must be https:\/\//);
    expect(() => loadConfig({ REDFLAG_OIDC_ISSUER: "https://idp.example.com" })).toThrow(/needs REDFLAG_OIDC_CLIENT_ID and REDFLAG_OIDC_CLIENT_SECRET/);
  });
});

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { totpCode } from "../src/auth/totp.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

const PASSWORD = "the owner's own passphrase";

// A control plane behind a reverse proxy on this host (127.0.0.1) and a load balancer in
// 10.0.0.0/8: both are trusted to say whom they forward for.
let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_TRUSTED_PROXIES: "127.0.0.1, 10.0.0.0/8" });
});
afterAll(async () => {
  await cp?.close();
});

// A client whose requests the proxy forwards for `forwardedFor` (as X-Forwarded-For says).
const client = (target: TestControlPlane, forwardedFor?: string, secret?: string) =>
  createConnectTransport({
    baseUrl: target.url,
    httpVersion: "1.1",
    interceptors: [headerInterceptor({ ...(forwardedFor ? { "x-forwarded-for": forwardedFor } : {}), ...(secret ? { authorization: `Bearer ${secret}` } : {}) })],
  });
const auth = (target: TestControlPlane, forwardedFor?: string, secret?: string) => createClient(AuthService, client(target, forwardedFor, secret));
const createUser = (target: TestControlPlane, username: string) =>
  createClient(UserService, client(target, undefined, target.adminKey)).createUser({ username, password: PASSWORD, role: Role.VIEWER });

async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the sign-in to be refused").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

const securityEvents = (target: TestControlPlane, username: string) =>
  target.app.db.prisma.securityEvent.findMany({ where: { type: "login_failed", message: { contains: `"${username}"` } }, orderBy: { id: "asc" } });

describe("sign-in throttling", () => {
  it("keeps the right password working for its owner at home while an attacker hammers the username from elsewhere", async () => {
    await createUser(cp, "ana");
    const attacker = auth(cp, "203.0.113.7");
    const answers: string[] = [];
    for (let i = 0; i < 14; i++) answers.push(Code[(await refusal(attacker.login({ username: "ana", password: `guess ${i} of many` }))).code]!);
    // Ten guesses are free; then the attacker's address must wait, longer each time (1 s, 2 s,
    // 4 s: by the last one, however slow this machine is).
    expect(answers.slice(0, 10)).toEqual(Array(10).fill("Unauthenticated"));
    expect(answers.at(-1)).toBe("ResourceExhausted");
    const slowed = await refusal(attacker.login({ username: "ana", password: PASSWORD }));
    expect(slowed.rawMessage).toMatch(/^too many failed sign-ins from this address; try again in \d+ seconds?$/);
    expect(Number(slowed.metadata.get("retry-after"))).toBeGreaterThan(0);

    // Ana, from her own address, is not locked out.
    await expect(auth(cp, "198.51.100.4").login({ username: "ana", password: PASSWORD })).resolves.toMatchObject({ user: { username: "ana" } });
  });

  it("slows down an address that sprays many usernames, without touching other addresses", async () => {
    const sprayer = auth(cp, "203.0.113.8");
    for (let i = 0; i < 20; i++) {
      expect(Code[(await refusal(sprayer.login({ username: `user${i}`, password: "Winter2026!!" }))).code]).toBe("Unauthenticated");
    }
    const next: string[] = [];
    for (let i = 0; i < 3; i++) next.push(Code[(await refusal(sprayer.login({ username: "someone-else", password: "Winter2026!!" }))).code]!);
    expect(next.at(-1)).toBe("ResourceExhausted");
    expect(Code[(await refusal(auth(cp, "203.0.113.99").login({ username: "someone-else", password: "Winter2026!!" }))).code]).toBe("Unauthenticated");
  });
});

describe("client addresses behind a trusted proxy", () => {
  it("records the right-most address a trusted proxy forwarded for, in security events and the audit", async () => {
    await refusal(auth(cp, "192.0.2.1, 203.0.113.50, 10.1.2.3").login({ username: "nobody-here", password: "not the password" }));
    const [event] = await securityEvents(cp, "nobody-here");
    // 10.1.2.3 is a trusted load balancer; 192.0.2.1 was written by the client itself.
    expect(event!.remoteAddr).toBe("203.0.113.50");
    const audit = createClient(AuditService, client(cp, undefined, cp.adminKey));
    const { entries } = await audit.listAuditEntries({ target: "username:nobody-here" });
    expect(entries.map((e) => e.remoteAddr)).toEqual(["203.0.113.50"]);
  });

  it("opens /metrics to a loopback caller, not to one a loopback proxy forwards", async () => {
    expect((await fetch(`${cp.url}/metrics`)).status).toBe(200);
    expect((await fetch(`${cp.url}/metrics`, { headers: { "x-forwarded-for": "203.0.113.7" } })).status).toBe(403);
  });

  it("never believes X-Forwarded-For from a peer that is not a trusted proxy", async () => {
    const direct = await startTestControlPlane({ REDFLAG_TRUSTED_PROXIES: "10.0.0.0/8" });
    try {
      await createUser(direct, "bo");
      // A new address in every request: all of them are counted under the real peer.
      const answers: string[] = [];
      for (let i = 0; i < 13; i++) {
        answers.push(Code[(await refusal(auth(direct, `198.51.100.${i + 1}`).login({ username: "bo", password: `guess ${i} of many` }))).code]!);
      }
      expect(answers.at(-1)).toBe("ResourceExhausted");
      expect(new Set((await securityEvents(direct, "bo")).map((e) => e.remoteAddr))).toEqual(new Set(["127.0.0.1"]));
    } finally {
      await direct.close();
    }
  });
});

describe("TOTP at sign-in", () => {
  let secret: string;
  beforeAll(async () => {
    await createUser(cp, "tess");
    const { sessionToken } = await auth(cp, "198.51.100.20").login({ username: "tess", password: PASSWORD });
    const begin = await auth(cp, undefined, sessionToken).beginTotpEnrollment({ password: PASSWORD });
    await auth(cp, undefined, sessionToken).confirmTotpEnrollment({ code: totpCode(begin.secret) });
    secret = begin.secret;
  });

  it("asks for the code before checking the password, so the answer never tells a right password from a wrong one", async () => {
    const from = auth(cp, "198.51.100.21");
    const right = await refusal(from.login({ username: "tess", password: PASSWORD }));
    const wrong = await refusal(from.login({ username: "tess", password: "not her password" }));
    expect([right.code, right.rawMessage]).toEqual([Code.Unauthenticated, "this account needs a TOTP code: send totp_code"]);
    expect([wrong.code, wrong.rawMessage]).toEqual([right.code, right.rawMessage]);
    // Nothing was guessed: neither is a failed sign-in.
    expect(await securityEvents(cp, "tess")).toEqual([]);
  });

  it("answers a wrong password and a wrong code alike, counts both, and spends no code on a wrong password", async () => {
    const from = auth(cp, "198.51.100.22");
    const code = totpCode(secret, Date.now() + 30_000);
    const badPassword = await refusal(from.login({ username: "tess", password: "not her password", totpCode: code }));
    const badCode = await refusal(from.login({ username: "tess", password: PASSWORD, totpCode: code === "000000" ? "111111" : "000000" }));
    expect([badPassword.code, badPassword.rawMessage]).toEqual([Code.Unauthenticated, "wrong username, password or TOTP code"]);
    expect([badCode.code, badCode.rawMessage]).toEqual([badPassword.code, badPassword.rawMessage]);
    expect(await securityEvents(cp, "tess")).toHaveLength(2);
    // The code tried with the wrong password still works once with the right one.
    await expect(from.login({ username: "tess", password: PASSWORD, totpCode: code })).resolves.toMatchObject({ user: { username: "tess" } });
  });
});

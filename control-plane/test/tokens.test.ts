import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { RegistrationTokenState } from "@redflag/gen/token_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fingerprintOf } from "@redflag/common/signing/key-ids";
import { installCommands, isLoopbackUrl, serverUrlWarning } from "../src/domain/enrolment.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(async () => {
  await cp?.close();
});

describe("TokenService", () => {
  it("hands out ready-to-paste enrolment for each platform, with the secret and this server's URL", async () => {
    const res = await cp.admin.tokens.createRegistrationToken({ seats: 3, note: "lab" });
    expect(res.installCommands.map((c) => c.platform)).toEqual(["linux", "macos", "windows"]);
    for (const c of res.installCommands) {
      expect(c.command).toContain(res.secret);
      expect(c.command).toContain(`${cp.url}/install/`);
    }
    // Every command runs the control plane's own install script and pins the active signing key
    // by its fingerprint (loopback http needs no --insecure-http).
    expect(res.signingKeyFingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    const key = await cp.app.db.prisma.signingKey.findUniqueOrThrow({ where: { id: cp.app.signer.activeKeyId } });
    expect(res.signingKeyFingerprint).toBe(fingerprintOf(key.publicKey));
    expect(res.installCommands.map((c) => c.command)).toEqual([
      `curl -fsSL '${cp.url}/install/linux.sh' | sudo sh -s -- --token '${res.secret}' --fingerprint ${res.signingKeyFingerprint}`,
      `curl -fsSL '${cp.url}/install/macos.sh' | sudo sh -s -- --token '${res.secret}' --fingerprint ${res.signingKeyFingerprint}`,
      `& ([scriptblock]::Create((Invoke-RestMethod '${cp.url}/install/windows.ps1'))) -Token '${res.secret}' -Fingerprint ${res.signingKeyFingerprint}`,
    ]);
    // The test control plane listens on loopback: the answer says other machines cannot use it.
    expect(res.serverUrl).toBe(cp.url);
    expect(res.serverUrlWarning).toMatch(/^127\.0\.0\.1:\d+ is this machine's loopback address: the commands work on this machine only, other machines cannot reach it\. Set REDFLAG_PUBLIC_URL to an address they can reach \(for example REDFLAG_PUBLIC_URL=http:\/\/[\d.]+:\d+\) and restart the control plane\.$/);
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    const setup = await auth.getSetupState({});
    expect(setup).toMatchObject({ serverUrl: cp.url, serverUrlWarning: res.serverUrlWarning });
    for (const c of res.installCommands) expect(c.command).toContain(`${c.platform === "windows" ? "-Fingerprint" : "--fingerprint"} ${res.signingKeyFingerprint}`);
    expect(res.installCommands.map((c) => c.command).join("\n")).not.toContain("--insecure-http");
  });

  it("says --insecure-http, and why, only for plain http to another machine", () => {
    const fp = "ab:".repeat(31) + "ab";
    for (const url of ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "http://127.1.2.3", "https://redflag.lan"]) {
      expect(isLoopbackUrl(url) || url.startsWith("https:"), url).toBe(true);
      for (const c of installCommands(url, "rfreg_x", fp)) expect(c.command).not.toContain("insecure");
    }
    for (const url of ["http://192.168.1.5:8080", "http://redflag.lan:8080", "http://127.0.0.1.nip.io", "http://[fd00::2]:8080"]) {
      expect(isLoopbackUrl(url), url).toBe(false);
      for (const c of installCommands(url, "rfreg_x", fp)) {
        expect(c.command).toMatch(/^# plain http: anyone on the network path can read the token; serve https/);
        expect(c.command).toMatch(c.platform === "windows" ? `-Fingerprint ${fp} -InsecureHttp` : `--fingerprint ${fp} --insecure-http`);
      }
      expect(serverUrlWarning(url)).toBe("");
    }
    expect(serverUrlWarning("https://localhost:8443", "10.0.0.7")).toContain("REDFLAG_PUBLIC_URL=https://10.0.0.7:8443");
  });

  it("deletes only tokens that can no longer enrol anything", async () => {
    const { token } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    await expect(cp.admin.tokens.deleteRegistrationToken({ id: token!.id })).rejects.toMatchObject({ code: Code.FailedPrecondition, rawMessage: "the token is still active; revoke it first" });
    const revoked = await cp.admin.tokens.revokeRegistrationToken({ id: token!.id });
    expect(revoked.token?.state).toBe(RegistrationTokenState.REVOKED);
    await cp.admin.tokens.deleteRegistrationToken({ id: token!.id });
    expect((await cp.admin.tokens.listRegistrationTokens({})).tokens.map((t) => t.id)).not.toContain(token!.id);
    await expect(cp.admin.tokens.deleteRegistrationToken({ id: token!.id })).rejects.toMatchObject({ code: Code.NotFound });
  });
});

import { Code } from "@connectrpc/connect";
import { RegistrationTokenState } from "@redflag/gen/token_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fingerprint } from "../src/signing/keys.ts";
import { installCommands, isLoopbackUrl } from "../src/services/token-service.ts";
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
      expect(c.command).toContain(`--server ${cp.url}`);
    }
    // On Unix the secret goes through a private file, never the process list; every command pins
    // the active signing key by its fingerprint (loopback http needs no --insecure-http).
    expect(res.signingKeyFingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    const key = await cp.app.db.prisma.signingKey.findUniqueOrThrow({ where: { id: cp.app.signer.activeKeyId } });
    expect(res.signingKeyFingerprint).toBe(fingerprint(key.publicKey));
    expect(res.installCommands[0]!.command).toBe(
      `umask 077; printf '%s' '${res.secret}' > /root/redflag-token\n` +
        `sudo redflag-agent register --server ${cp.url} --token-file /root/redflag-token --fingerprint ${res.signingKeyFingerprint} && rm /root/redflag-token\n` +
        "sudo systemctl enable --now redflag-agent",
    );
    for (const c of res.installCommands) expect(c.command).toContain(`--fingerprint ${res.signingKeyFingerprint}`);
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
        expect(c.command).toContain(`--fingerprint ${fp} --insecure-http`);
      }
    }
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

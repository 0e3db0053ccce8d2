import { Code } from "@connectrpc/connect";
import { RegistrationTokenState } from "@redflag/gen/token_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
    // On Unix the secret goes through a private file, never the process list.
    expect(res.installCommands[0]!.command).toMatch(/umask 077; printf '%s' 'rfreg_[^']+' > \/root\/redflag-token\nsudo redflag-agent register --server \S+ --token-file \/root\/redflag-token && rm \/root\/redflag-token\nsudo systemctl enable --now redflag-agent/);
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

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// `redflag security revoke-admin-key` as an admin scripts it: refused without --yes when there
// is no terminal to confirm on, refused while nobody could sign in afterwards, then done with
// the admin key itself once an admin person exists.
describe("revoking the admin key through the redflag CLI", () => {
  let cp: TestControlPlane;
  let config: string;
  let keyFile: string;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    config = await mkdtemp(path.join(tmpdir(), "rf-cli-config-"));
    keyFile = path.join(cp.dataDir, "admin.key");
  });
  afterAll(async () => {
    await cp?.close();
    await rm(config, { recursive: true, force: true });
  });

  const cli = (args: string[], opts: { input?: string } = {}) =>
    run(["control-plane/src/cli/main.ts", "--server", cp.url, ...args], { env: { REDFLAG_CONFIG_DIR: config, REDFLAG_API_KEY: "" }, input: opts.input });

  it("asks for --yes without a terminal, refuses without an admin person, then revokes for good", async () => {
    const unconfirmed = await cli(["--api-key-file", keyFile, "security", "revoke-admin-key"]);
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toMatch(/^error: no terminal to confirm on: pass --yes to revoke the admin key\n/);
    expect((await cli(["--api-key-file", keyFile, "whoami"])).stdout).toBe("admin.key: admin through admin key\n");

    const lockout = await cli(["--api-key-file", keyFile, "security", "revoke-admin-key", "--yes"]);
    expect(lockout.code).toBe(1);
    expect(lockout.stderr).toMatch(/^redflag: FailedPrecondition: no enabled admin person exists: revoking the admin key now would lock everyone out/);

    expect((await cli(["setup", "--username", "root-admin", "--password-stdin"], { input: "a strong admin passphrase\n" })).code).toBe(0);
    const revoked = await cli(["--api-key-file", keyFile, "security", "revoke-admin-key", "--yes"]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(/^admin key revoked at \d{4}-\d\d-\d\dT[\d:.]+Z; admin\.key no longer works, sign in or use a personal API token\n$/);
    const dead = await cli(["--api-key-file", keyFile, "whoami"]);
    expect(dead.stderr).toBe("redflag: Unauthenticated: the API token is not valid (unknown or revoked)\n");

    // The stored session of root-admin: the key is gone for good.
    expect((await cli(["security", "overview"])).stdout).toMatch(/admin\.key revoked; 1 admin/);
    const again = await cli(["security", "revoke-admin-key", "--yes"]);
    expect(again.stderr).toBe("redflag: FailedPrecondition: the admin key is already revoked\n");
    const audit = await cli(["audit", "--action", "RevokeAdminKey"]);
    expect(audit.stdout).toMatch(/admin\.key \(admin key\)\s+SecurityService\/RevokeAdminKey\s+admin-key\s+\S*127\.0\.0\.1\s+ok/);
  });
});

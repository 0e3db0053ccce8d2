import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { totpCode } from "../control-plane/src/auth/totp.ts";
import { run } from "./support/processes.ts";

// The `redflag` CLI as a person uses it: set up, sign in once, work with the stored session,
// hand a script a scoped token, read the audit log, sign out.
describe("people through the redflag CLI", () => {
  let cp: TestControlPlane;
  let config: string;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    config = await mkdtemp(path.join(tmpdir(), "rf-cli-config-"));
  });
  afterAll(async () => {
    await cp?.close();
    await rm(config, { recursive: true, force: true });
  });

  const cli = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
    run(["control-plane/src/cli/main.ts", "--server", cp.url, ...args], {
      // No admin.key fallback: only what the test gives.
      env: { REDFLAG_CONFIG_DIR: config, REDFLAG_API_KEY: "", ...opts.env },
      input: opts.input,
    });

  it("sets up, signs in, manages people and tokens, and shows the audit trail", async () => {
    const setup = await cli(["setup", "--username", "root-admin", "--password-stdin"], { input: "a strong admin passphrase\n" });
    expect(setup.code, setup.stderr).toBe(0);
    expect(setup.stdout).toMatch(/^signed in to http:\/\/127\.0\.0\.1:\d+ as root-admin \(admin\); session saved in .*session\.json\n$/);
    const file = path.join(config, "session.json");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const token = JSON.parse(await readFile(file, "utf8")).token as string;
    expect(token).toMatch(/^rfses_/);

    const again = await cli(["setup", "--username", "other", "--password-stdin"], { input: "another strong passphrase\n" });
    expect(again.code).toBe(1);
    expect(again.stderr).toBe("redflag: FailedPrecondition: setup is already done; sign in instead\n");

    expect((await cli(["whoami"])).stdout).toBe("root-admin (root-admin): admin through session\n");
    const created = await cli(["users", "create", "--username", "olga", "--role", "operator", "--password-stdin"], { input: "her very own passphrase\n" });
    expect(created.code, created.stderr).toBe(0);
    const weak = await cli(["users", "create", "--username", "weak", "--role", "viewer", "--password-stdin"], { input: "short\n" });
    expect(weak.stderr).toBe("redflag: InvalidArgument: the password must be at least 12 characters\n");
    const list = await cli(["users", "list"]);
    expect(list.stdout).toMatch(/^USERNAME\s+NAME\s+ROLE\s+TOTP\s+STATE\s+LAST SIGN-IN\s+ID\nolga\s+olga\s+operator\s+active\s+never\s+\S+\nroot-admin\s+root-admin\s+admin\s+active\s+/);

    const login = await cli(["login", "--username", "olga", "--password-stdin"], { input: "her very own passphrase\n" });
    expect(login.stdout).toMatch(/as olga \(operator\)/);
    // A second factor, set up from the CLI.
    const enrol = await cli(["totp", "enroll", "--password-stdin"], { input: "her very own passphrase\n" });
    const totpSecret = /^secret: (\S+)$/m.exec(enrol.stdout)![1]!;
    // Confirm with the current code, sign in with the next step's (a code is never accepted
    // twice, and the server accepts one step of drift either way, so no boundary can break it).
    expect((await cli(["totp", "confirm", totpCode(totpSecret)])).stdout).toBe("TOTP is on: sign-ins now ask for a code\n");
    const noCode = await cli(["login", "--username", "olga", "--password-stdin"], { input: "her very own passphrase\n" });
    expect(noCode.stderr).toBe("redflag: Unauthenticated: this account needs a TOTP code: send totp_code\n");
    const withCode = await cli(["login", "--username", "olga", "--password-stdin", "--totp", totpCode(totpSecret, Date.now() + 30_000)], { input: "her very own passphrase\n" });
    expect(withCode.code, withCode.stderr).toBe(0);
    const tokenOut = await cli(["api-tokens", "create", "--name", "nightly report", "--scope", "viewer", "--expires", "7d"]);
    expect(tokenOut.code, tokenOut.stderr).toBe(0);
    const secret = tokenOut.stdout.trim();
    expect(secret).toMatch(/^rfapi_/);
    expect(tokenOut.stderr).toMatch(/\(viewer\) expires .*; the secret above is shown only once/);
    expect((await cli(["--api-key", secret, "whoami"])).stdout).toBe("olga (olga): viewer through api token\n");
    const denied = await cli(["--api-key", secret, "commands", "queue", "--agent", "00000000-0000-4000-8000-000000000000", "--type", "collect_specs"]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toBe("redflag: PermissionDenied: CreateCommand needs the operator role; olga acts as viewer\n");
    expect((await cli(["api-tokens", "list", "--json"])).stdout).toContain('"name": "nightly report"');

    const rootLogin = await cli(["login", "--username", "root-admin", "--password-stdin"], { input: "a strong admin passphrase\n" });
    expect(rootLogin.code).toBe(0);
    const audit = await cli(["audit", "--action", "CreateUser"]);
    expect(audit.stdout).toMatch(/root-admin \(session\)\s+UserService\/CreateUser\s+user:\S+\s+\S*127\.0\.0\.1\s+ok/);
    const tokens = await cli(["audit", "--actor", "olga", "--json"]);
    expect(JSON.parse(tokens.stdout).entries.map((e: { action: string }) => e.action)).toContain("redflag.v1.ApiTokenService/CreateApiToken");

    expect((await cli(["settings", "set", "poll_interval=2m", "retention_audit=2y"])).stderr).toMatch(/retention_audit: "2y" is not a duration/);
    expect((await cli(["settings", "set", "poll_interval=2m"])).stdout).toBe("updated poll_interval\n");
    expect((await cli(["settings", "list"])).stdout).toMatch(/poll_interval\s+2m\s+1m\s+10s\.\.1h\s+root-admin/);
    expect(JSON.parse((await cli(["settings", "export"])).stdout)).toEqual({ poll_interval: "2m" });
    expect((await cli(["security", "overview"])).stdout).toMatch(/^KEY ID\s+STATE\s+ALGORITHM\s+FINGERPRINT\s+RETIRES\n[0-9a-f]{16}\s+active\s+Ed25519\s+/);
    expect((await cli(["security", "rotate-key", "--grace", "2d"])).stdout).toMatch(/^new signing key [0-9a-f]{16} \(.*\); [0-9a-f]{16} is trusted until \d{4}-/);
    expect((await cli(["security", "events", "--type", "login_failed"])).stdout).toContain("(none)");

    const out = await cli(["logout"]);
    expect(out.stdout).toMatch(/^signed out of /);
    await expect(stat(file)).rejects.toThrow();
    const notSignedIn = await cli(["whoami"]);
    expect(notSignedIn.code).toBe(1);
    expect(notSignedIn.stderr).toMatch(/not signed in: run `redflag login`|admin\.key is not readable/);
    // Each sign-in is its own session: logout ended the last one, the first stays valid until
    // it is logged out itself.
    const stale = createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${token}` })] }));
    await expect(stale.whoAmI({})).resolves.toBeDefined();
    await expect(stale.logout({})).resolves.toBeDefined();
    await expect(stale.whoAmI({})).rejects.toMatchObject({ code: Code.Unauthenticated });
  });
});

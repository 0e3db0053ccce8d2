import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root, run } from "./support/processes.ts";

// What the `redflag` CLI tells a person to do when it cannot go on, done as printed. (Hints
// covered elsewhere: `redflag agents list` and the agent ID for a hostname, and
// REDFLAG_PUBLIC_URL, in hostnames-cli.test.ts; `redflag totp confirm` in people-cli.test.ts;
// --yes in admin-key-cli.test.ts; `redflag updates list --agent` in big-scan.test.ts;
// `redflag-agent register` after allow-reregistration in enrolment.test.ts.)
describe("the redflag CLI's hints, followed as printed", () => {
  let cp: TestControlPlane;
  let home: string;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    home = await mkdtemp(path.join(tmpdir(), "rf-cli-hints-"));
  }, 120_000);
  afterAll(async () => {
    await cp?.close();
    await rm(home, { recursive: true, force: true });
  });

  // Run from a folder with no data/admin.key, with no credential but what the test gives.
  const cli = (args: string[], input?: string) =>
    run([path.join(root, "control-plane/src/cli/main.ts"), ...args], {
      cwd: home,
      env: { REDFLAG_CONFIG_DIR: path.join(home, "config"), REDFLAG_SERVER: cp.url, REDFLAG_API_KEY: "", REDFLAG_API_KEY_FILE: "" },
      input,
    });
  // The command in backquotes in a message, as arguments.
  const quoted = (message: string) => /`redflag ([^`]+)`/.exec(message)![1]!.split(" ");

  it("a server that is not a URL, a key file that is not there, a password with no terminal, and no session", async () => {
    const badServer = await cli(["--server", "127.0.0.1:8080", "--api-key", cp.adminKey, "whoami"]);
    expect(badServer.code).toBe(1);
    expect(badServer.stderr).toBe("redflag: --server 127.0.0.1:8080 is not a URL (for example http://127.0.0.1:8080)\n");
    const asSuggested = await cli(["--server", cp.url, "--api-key", cp.adminKey, "whoami"]);
    expect(asSuggested.stdout, asSuggested.stderr).toBe("admin.key: admin through admin key\n");

    const missing = path.join(home, "admin.key");
    const noKey = await cli(["--api-key-file", missing, "whoami"]);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toBe(`redflag: no API key: ${missing} is not readable; pass --api-key, set REDFLAG_API_KEY, or point --api-key-file at the server's admin.key\n`);
    // Each way it names works (the server logs where its admin.key is: the data directory).
    const adminKey = path.join(cp.dataDir, "admin.key");
    for (const args of [["--api-key", cp.adminKey, "whoami"], ["--api-key-file", adminKey, "whoami"]]) {
      const res = await cli(args);
      expect(res.stdout, res.stderr).toBe("admin.key: admin through admin key\n");
    }
    const viaEnv = await run([path.join(root, "control-plane/src/cli/main.ts"), "whoami"], { cwd: home, env: { REDFLAG_SERVER: cp.url, REDFLAG_API_KEY: cp.adminKey, REDFLAG_CONFIG_DIR: path.join(home, "config") } });
    expect(viaEnv.stdout, viaEnv.stderr).toBe("admin.key: admin through admin key\n");

    const noTerminal = await cli(["setup", "--username", "root-admin"]);
    expect(noTerminal.code).toBe(1);
    expect(noTerminal.stderr).toBe("redflag: no terminal to type a password on: pass --password-stdin and pipe it in\n");
    const piped = await cli(["setup", "--username", "root-admin", "--password-stdin"], "a strong admin passphrase\n");
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout).toMatch(/^signed in to \S+ as root-admin \(admin\)/);

    expect((await cli(["logout"])).stdout).toBe(`signed out of ${cp.url}\n`);
    const signedOut = await cli(["whoami"]);
    expect(signedOut.code).toBe(1);
    expect(signedOut.stderr).toBe("redflag: not signed in: run `redflag login`, pass --api-key, or set REDFLAG_API_KEY\n");
    const login = await cli([...quoted(signedOut.stderr), "--username", "root-admin", "--password-stdin"], "a strong admin passphrase\n");
    expect(login.code, login.stderr).toBe(0);
    expect((await cli(["whoami"])).stdout).toBe("root-admin (root-admin): admin through session\n");
  }, 180_000);
});

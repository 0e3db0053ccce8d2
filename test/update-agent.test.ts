import { CommandState } from "@redflag/gen/command_service_pb";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// An operator ships a new agent release: the CLI describes the tarball in a manifest, the
// control plane signs it, a real agent process verifies, downloads, switches and exits 3 so
// its service manager starts the new release. A tampered download changes nothing.
describe("update_agent end to end", () => {
  let cp: TestControlPlane;
  let root: string;
  let server: Server;
  let base: string;
  const served = new Map<string, Buffer>();

  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-update-"));
    const src = path.join(root, "release-src");
    await mkdir(path.join(src, "bin"), { recursive: true });
    await writeFile(path.join(src, "bin", "redflag-agent"), "#!/bin/sh\nexec node /opt/redflag-agent/current/agent/src/main.ts \"$@\"\n", { mode: 0o755 });
    await promisify(execFile)("tar", ["-czf", path.join(root, "release.tgz"), "-C", src, "."]);
    const tarball = await readFile(path.join(root, "release.tgz"));
    served.set("/release.tgz", tarball);
    served.set("/tampered.tgz", Buffer.concat([tarball.subarray(0, 100), Buffer.from("x"), tarball.subarray(101)]));
    server = createServer((req, res) => {
      const body = served.get(req.url ?? "");
      if (body) res.writeHead(200).end(body);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("installs a signed release and exits for a restart; refuses a tampered download", async () => {
    const stateDir = path.join(root, "state");
    const installDir = path.join(root, "install");
    const env = {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      REDFLAG_AGENT_INSTALL_DIR: installDir,
    };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], { env });
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
    const queue = async (url: string) => {
      const out = await run([
        "control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "--json",
        "commands", "queue", "--agent", agentId, "--type", "update_agent",
        "--release", "9.9.9", "--url", url, "--artifact", path.join(root, "release.tgz"),
      ]);
      expect(out.code, out.stderr).toBe(0);
      return (JSON.parse(out.stdout) as { command: { id: string } }).command.id;
    };

    const tampered = await queue(`${base}/tampered.tgz`);
    const first = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(first.code, first.stderr).toBe(0);
    const refused = (await cp.admin.commands.getCommand({ id: tampered })).command!;
    expect(refused.state).toBe(CommandState.FAILED);
    expect(refused.result?.message).toMatch(/^the downloaded artifact does not match the signed manifest/);
    await expect(readlink(path.join(installDir, "current"))).rejects.toThrow();

    const good = await queue(`${base}/release.tgz`);
    const second = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(second.code, second.stderr).toBe(3);
    expect(second.stderr).toContain("exiting so the service manager starts the release now in place");
    const done = (await cp.admin.commands.getCommand({ id: good })).command!;
    expect(done.state).toBe(CommandState.SUCCEEDED);
    expect(done.result?.message).toBe("installed version 9.9.9; the agent restarts into it after reporting this result");
    expect(await readlink(path.join(installDir, "current"))).toBe(path.join("releases", "9.9.9"));
    expect(await readFile(path.join(installDir, "current", "bin", "redflag-agent"), "utf8")).toContain("exec node");
    // The watchdog is armed until the new release completes a poll cycle; this one does.
    expect(JSON.parse(await readFile(path.join(installDir, "upgrade.json"), "utf8"))).toMatchObject({ version: "9.9.9", to: "releases/9.9.9", starts: 0 });
    const third = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(third.code, third.stderr).toBe(0);
    expect(third.stderr).toContain("new release confirmed");
    await expect(readFile(path.join(installDir, "upgrade.json"))).rejects.toThrow();
  });
});

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// An admin ships a new agent release: `redflag releases publish` puts the build in the control
// plane's registry, `redflag agents upgrade` queues it, and a real agent process downloads it
// from the control plane, verifies the signed manifest, unpacks it for a trial and exits 3 so its
// service manager starts it again to try the new release. An operator cannot queue one; bytes altered in storage are
// refused by the agent.
describe("update_agent end to end, from the release registry", () => {
  let cp: TestControlPlane;
  let root: string;
  let dist: string;
  let operatorToken: string;
  const platform = `${process.platform}-${process.arch}`;

  const tarball = async (name: string, marker: string) => {
    const src = path.join(root, `src-${name}`);
    await mkdir(path.join(src, "bin"), { recursive: true });
    await writeFile(path.join(src, "bin", "redflag-agent"), `#!/bin/sh\n# ${marker}\nexec node /opt/redflag-agent/current/agent/src/main.ts "$@"\n`, { mode: 0o755 });
    await promisify(execFile)("tar", ["-czf", path.join(dist, name), "-C", src, "."]);
  };
  const cli = (args: string[], key = cp.adminKey) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", key, ...args]);

  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-update-"));
    dist = path.join(root, "dist");
    await mkdir(dist);
    // A build for this platform and one for any: the agent must get the one for its platform.
    await tarball(`redflag-agent-9.9.9-${platform}.tgz`, "built for this platform");
    await tarball("redflag-agent-9.9.9-any.tgz", "built for any platform");
    const admin = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" });
    const session = (await createClient(AuthService, admin).setup({ username: "ada", password: "correct horse battery staple" })).sessionToken;
    const asAda = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${session}` })] });
    operatorToken = (await createClient(ApiTokenService, asAda).createApiToken({ name: "ops", scope: Role.OPERATOR })).secret;
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("publishes, refuses operators and tampered bytes, installs the registry's build and exits for a restart", async () => {
    const published = await cli(["releases", "publish", dist]);
    expect(published.code, published.stderr).toBe(0);
    expect(published.stdout).toContain(`published: 9.9.9 for ${platform} (`);
    expect(published.stdout).toContain("published: 9.9.9 for any (");
    const again = await cli(["releases", "publish", dist]);
    expect(again.stdout).toContain(`already published: 9.9.9 for ${platform}`);
    // Operators may look, not publish.
    const theirs = path.join(root, "theirs");
    await mkdir(theirs);
    await writeFile(path.join(theirs, "redflag-agent-9.9.10-any.tgz"), "not a release");
    const byOperator = await cli(["releases", "publish", theirs], operatorToken);
    expect(byOperator.code).toBe(1);
    expect(byOperator.stderr).toBe("redflag: PermissionDenied: PublishRelease needs the admin role; ada acts as operator\n");
    const listed = await cli(["releases", "list"], operatorToken);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`9\\.9\\.9\\s+${platform}\\s+`));

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
    const upgrade = async (key = cp.adminKey) => cli(["--json", "agents", "upgrade", agentId, "--version", "9.9.9"], key);
    const agentRun = () => run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });

    // An operator's upgrade is refused, also the old way with a URL of their own.
    const refused = await upgrade(operatorToken);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^redflag: PermissionDenied: update_agent needs the admin role \(you act as operator\)/);
    const withUrl = await cli(["commands", "queue", "--agent", agentId, "--type", "update_agent", "--release", "9.9.9", "--url", "http://attacker.example/a.tgz"], operatorToken);
    expect(withUrl.code).toBe(1);
    expect(withUrl.stderr).toMatch(/^redflag: update_agent takes no --url, --artifact or --platform: agent upgrades come only from the control plane's release registry/);
    expect((await cp.admin.commands.listCommands({ agentId })).commands).toHaveLength(0);

    // Bytes altered where the registry keeps them: the agent checks them against the signed manifest.
    const release = await cp.app.db.prisma.agentRelease.findUniqueOrThrow({ where: { version_platform: { version: "9.9.9", platform } } });
    const chunk = await cp.app.db.prisma.agentReleaseChunk.findUniqueOrThrow({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } } });
    const tampered = Buffer.from(chunk.data);
    tampered[tampered.length - 1]! ^= 1;
    await cp.app.db.prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: tampered } });
    const bad = JSON.parse((await upgrade()).stdout) as { command: { id: string } };
    const first = await agentRun();
    expect(first.code, first.stderr).toBe(0);
    const refusedResult = (await cp.admin.commands.getCommand({ id: bad.command.id })).command!;
    expect(refusedResult.state).toBe(CommandState.FAILED);
    expect(refusedResult.result?.message).toMatch(/^the downloaded artifact does not match the signed manifest/);
    await expect(readlink(path.join(installDir, "current"))).rejects.toThrow();
    await cp.app.db.prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: chunk.data } });

    // The real thing: an admin's upgrade, from the registry, the build for this platform.
    const good = JSON.parse((await upgrade()).stdout) as { command: { id: string } };
    const second = await agentRun();
    expect(second.code, second.stderr).toBe(3);
    expect(second.stderr).toContain("exiting so the service manager starts the agent again; that start tries the new release");
    const done = (await cp.admin.commands.getCommand({ id: good.command.id })).command!;
    expect(done.state).toBe(CommandState.SUCCEEDED);
    expect(done.result?.message).toMatch(/^installed version 9\.9\.9 beside [^;]+; the agent restarts to try it and switches to it once it has completed a poll cycle/);
    expect(await readFile(path.join(installDir, "releases", "9.9.9", "bin", "redflag-agent"), "utf8")).toContain("built for this platform");
    // Nothing is switched yet: the next start of this release tries the new one as its child
    // (test/self-upgrade.test.ts runs that with real single-file agents).
    await expect(readlink(path.join(installDir, "current"))).rejects.toThrow();
    expect(JSON.parse(await readFile(path.join(installDir, "upgrade.json"), "utf8"))).toMatchObject({ version: "9.9.9", starts: 0 });
    // A dozen CLI and agent processes in a row: give a loaded machine time.
  }, 240_000);
});

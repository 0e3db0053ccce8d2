import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ArtifactManifestSchema, CommandSchema } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import type { Agent } from "@redflag/gen/fleet_service_pb";
import { AgentUpgradeState, ReleaseService } from "@redflag/gen/release_service_pb";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import pkg from "../agent/package.json" with { type: "json" };
import { buildAgent, type BuiltAgent } from "../scripts/build-agent.ts";
import { run } from "./support/processes.ts";
import { supervise, type Supervisor } from "./support/supervisor.ts";

const exec = promisify(execFile);
// A is the version of agent/package.json, built as test/agent-binary.test.ts builds it (one
// build for both, from the cache); B is the same source stamped as another version.
const A = pkg.version;
const B = "9.0.1";
// Releases that are not agents: one exits 1 at once, one sleeps and never polls.
const CRASHES = "9.0.2";
const SLEEPS = "9.0.3";
const platform = "linux-x64";

// Issue 14: a real single-file agent, installed as the install script lays it out and run by a
// service manager that restarts it on any exit (systemd's Restart=always), upgrades itself from
// the control plane's registry. The release that works decides: it tries the new one as its
// child and switches only once that child has completed a poll cycle.
describe.runIf(process.platform === "linux" && process.arch === "x64")("a single-file agent upgrading itself", () => {
  let work: string;
  let cp: TestControlPlane;
  let installDir: string;
  let agentId: string;
  let supervisor: Supervisor;
  let built: BuiltAgent;

  const cli = (args: string[]) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);
  const agent = async (): Promise<Agent> => (await cp.admin.fleet.listAgents({})).agents.find((a) => a.id === agentId)!;
  // The version the agent reports in its polls, as the control plane keeps it.
  const reported = async () => (await agent()).status?.agentVersion;
  const waitFor = async <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value) return value;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}; the agent said:\n${supervisor.lines.slice(-40).join("\n")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const upgrade = async (version: string): Promise<string> => {
    const queued = await cli(["--json", "agents", "upgrade", agentId, "--version", version]);
    expect(queued.code, queued.stderr).toBe(0);
    return (JSON.parse(queued.stdout) as { command: { id: string } }).command.id;
  };
  // The control plane's record of the upgrade a command made: it ends only on what the agent
  // reports (the new version from a poll that is not on trial, or the old one back).
  const upgradeRecord = (commandId: string, state: AgentUpgradeState) =>
    waitFor(`the upgrade record of ${commandId} to be ${AgentUpgradeState[state]}`, async () => {
      const releases = createClient(ReleaseService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
      const found = (await releases.listAgentUpgrades({ agentId })).upgrades.find((u) => u.commandId === commandId);
      return found?.state === state ? found : undefined;
    });
  const finished = (id: string) =>
    waitFor(`command ${id} to finish`, async () => {
      const command = (await cp.admin.commands.getCommand({ id })).command!;
      return command.state === CommandState.SUCCEEDED || command.state === CommandState.FAILED ? command : undefined;
    });
  const current = () => readlink(path.join(installDir, "current"));
  const releases = async () => (await readdir(path.join(installDir, "releases"))).sort();
  const fakeRelease = async (dir: string, version: string, script: string) => {
    const src = path.join(work, `src-${version}`);
    await mkdir(path.join(src, "bin"), { recursive: true });
    await writeFile(path.join(src, "bin", "redflag-agent"), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
    await exec("tar", ["-czf", path.join(dir, `redflag-agent-${version}-${platform}.tgz`), "-C", src, "bin/redflag-agent"]);
  };

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "rf-self-upgrade-"));
    // A and B are the same source stamped with two versions (cached across runs by the build).
    const a = (await buildAgent({ platforms: [platform], out: path.join(work, "a"), log: () => {} }))[0]!;
    expect(a.version).toBe(A);
    const publish = path.join(work, "publish");
    built = (await buildAgent({ platforms: [platform], out: publish, version: B, log: () => {} }))[0]!;
    await rm(path.join(publish, platform), { recursive: true });
    await fakeRelease(publish, CRASHES, "echo 'cannot start' >&2; exit 1");
    await fakeRelease(publish, SLEEPS, "exec sleep 600");

    cp = await startTestControlPlane({ REDFLAG_POLL_INTERVAL: "1s" });
    const published = await cli(["releases", "publish", publish]);
    expect(published.code, published.stderr).toBe(0);
    for (const v of [B, CRASHES, SLEEPS]) expect(published.stdout).toContain(`published: ${v} for ${platform} (`);

    // As the install script lays it out: releases/<version>, `current` pointing at it.
    installDir = path.join(work, "opt");
    await mkdir(path.join(installDir, "releases", A, "bin"), { recursive: true });
    await copyFile(a.executable, path.join(installDir, "releases", A, "bin", "redflag-agent"));
    await symlink(path.join("releases", A), path.join(installDir, "current"));
    const env = {
      // tar to unpack and sh for the fake releases; no Node is needed.
      PATH: "/usr/bin:/bin",
      HOME: work,
      REDFLAG_AGENT_STATE_DIR: path.join(work, "state"),
      REDFLAG_AGENT_INSTALL_DIR: installDir,
      REDFLAG_AGENT_MACHINE_ID_SEED: "self-upgrade",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      REDFLAG_AGENT_STOP_GRACE_SECONDS: "2",
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS: "30",
    };
    const entry = path.join(installDir, "current", "bin", "redflag-agent");
    const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    await exec(entry, ["register", "--server", cp.url, "--token", secret, "--fingerprint", signingKeyFingerprint], { env });
    agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
    supervisor = supervise(entry, ["run"], env);
    supervisor.start();
    await waitFor(`the agent to report ${A}`, async () => (await reported()) === A);
  }, 300_000);
  afterAll(async () => {
    await supervisor?.stop();
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("refuses a tampered artifact, a wrong signature and a too-large download, and keeps running", async () => {
    const prisma = cp.app.db.prisma;
    // A small release, so that the tampered one downloads quickly (the checks do not depend on what it holds).
    const release = await prisma.agentRelease.findUniqueOrThrow({ where: { version_platform: { version: CRASHES, platform } } });
    const chunk = await prisma.agentReleaseChunk.findUniqueOrThrow({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } } });

    // Bytes altered where the registry keeps them.
    const tampered = Buffer.from(chunk.data);
    tampered[tampered.length - 10]! ^= 1;
    await prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: tampered } });
    const altered = await finished(await upgrade(CRASHES));
    expect(altered.state).toBe(CommandState.FAILED);
    expect(altered.result?.message).toMatch(/^the downloaded artifact does not match the signed manifest: SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}; nothing was installed$/);
    await prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: chunk.data } });

    // A manifest that says the artifact is smaller than what is served: the control plane signs
    // what it holds, the download streams every byte the registry has.
    const manifest = fromBinary(ArtifactManifestSchema, release.manifest);
    const smaller = toBinary(ArtifactManifestSchema, { ...manifest, sizeBytes: manifest.sizeBytes - 16n });
    await prisma.agentRelease.update({ where: { id: release.id }, data: { manifest: smaller } });
    const large = await finished(await upgrade(CRASHES));
    expect(large.state).toBe(CommandState.FAILED);
    expect(large.result?.message).toBe(`the artifact is larger than the ${manifest.sizeBytes - 16n} bytes the signed manifest says; nothing was installed`);
    await prisma.agentRelease.update({ where: { id: release.id }, data: { manifest: release.manifest } });

    // A manifest signature altered in the queued command (the command itself is signed at
    // delivery, so only the manifest's own signature is wrong). The agent stops meanwhile so it
    // cannot take the command before it is altered.
    await supervisor.stop();
    const id = await upgrade(CRASHES);
    const row = await prisma.command.findUniqueOrThrow({ where: { id } });
    const command = fromBinary(CommandSchema, row.action);
    if (command.action.case !== "updateAgent") throw new Error("not an update_agent command");
    command.action.value.manifestSignature[0]! ^= 1;
    await prisma.command.update({ where: { id }, data: { action: toBinary(CommandSchema, command) } });
    supervisor.start();
    const forged = await finished(id);
    expect(forged.state).toBe(CommandState.FAILED);
    expect(forged.result?.message).toMatch(/^artifact manifest refused: signature does not verify with pinned key/);

    // A kept running: it never exited on its own, nothing was installed or switched.
    expect(supervisor.exits).toEqual([]);
    expect(await current()).toBe(path.join("releases", A));
    expect(await releases()).toEqual([A]);
    expect((await readdir(installDir)).sort()).toEqual(["current", "releases"]);
    expect(await reported()).toBe(A);
  }, 120_000);

  it("rolls back a release that cannot start: three starts, then A carries on and reports why", async () => {
    const id = await upgrade(CRASHES);
    // Installed (verified and unpacked), then A restarts to try it.
    expect((await finished(id)).state).toBe(CommandState.SUCCEEDED);
    const seen = await waitFor("the agent to report the failed upgrade", async () => (await agent()).status?.upgradeFailure);
    expect(seen).toMatchObject({ version: CRASHES, reason: "it exited 3 times before completing a poll cycle (the last time with exit code 1)" });
    expect(supervisor.lines.filter((l) => l.includes("cannot start"))).toHaveLength(3);
    expect(supervisor.exits).toEqual([{ code: 3, signal: null }]);
    expect(await current()).toBe(path.join("releases", A));
    expect(await releases()).toEqual([A]);
    expect(await reported()).toBe(A);
    expect(JSON.parse(await readFile(path.join(installDir, "upgrade-failed.json"), "utf8"))).toMatchObject({ version: CRASHES, from: A });
    expect((await upgradeRecord(id, AgentUpgradeState.ROLLED_BACK)).message).toBe(
      `the agent installed ${CRASHES} but came back reporting ${A}: the upgrade was rolled back: it exited 3 times before completing a poll cycle (the last time with exit code 1)`,
    );
  });

  it("rolls back a release that starts but never polls, within the trial time", async () => {
    supervisor.env.REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS = "3";
    const id = await upgrade(SLEEPS);
    expect((await finished(id)).state).toBe(CommandState.SUCCEEDED);
    const seen = await waitFor("the agent to report the failed upgrade", async () => {
      const failure = (await agent()).status?.upgradeFailure;
      return failure?.version === SLEEPS && failure;
    });
    expect(seen.reason).toBe("it did not complete a poll cycle within 3 s");
    expect(supervisor.exits).toEqual([{ code: 3, signal: null }, { code: 3, signal: null }]);
    expect(await current()).toBe(path.join("releases", A));
    expect(await releases()).toEqual([A]);
    // The sleeping release went with its trial.
    await expect(exec("pgrep", ["-f", "sleep 600"])).rejects.toMatchObject({ code: 1 });
    expect((await upgradeRecord(id, AgentUpgradeState.ROLLED_BACK)).message).toMatch(/: it did not complete a poll cycle within 3 s$/);
    supervisor.env.REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS = "30";
  });

  it("upgrades from A to B: B on trial polls, A switches to it, the service manager starts B", async () => {
    const id = await upgrade(B);
    const done = await finished(id);
    expect(done.state, done.result?.message).toBe(CommandState.SUCCEEDED);
    expect(done.result?.message).toBe(`installed version ${B} beside ${A}; the agent restarts to try it and switches to it once it has completed a poll cycle (else it stays on ${A})`);
    await waitFor("`current` to point at B", async () => (await current()) === path.join("releases", B));
    await waitFor("the control plane to see B", async () => (await reported()) === B);
    // A exited twice: to try B, and once B had confirmed; then the service manager started B.
    await waitFor("B to run as the service", async () => supervisor.exits.length === 4 && supervisor.pid() !== undefined);
    expect(supervisor.exits.slice(2)).toEqual([{ code: 3, signal: null }, { code: 3, signal: null }]);
    expect(await readlink(`/proc/${supervisor.pid()}/exe`)).toBe(path.join(installDir, "releases", B, "bin", "redflag-agent"));
    // The previous release is kept; the records are gone, the failure report too.
    expect(await releases()).toEqual([A, B]);
    expect((await readdir(installDir)).sort()).toEqual(["current", "releases"]);
    const { stdout } = await exec(path.join(installDir, "current", "bin", "redflag-agent"), ["--version"]);
    expect(stdout).toBe(`${B}\n`);
    await waitFor("B to poll as itself", async () => {
      const seen = await agent();
      return seen.status?.agentVersion === B && seen.status.upgradeFailure === undefined;
    });
    expect(built.version).toBe(B);
    expect((await upgradeRecord(id, AgentUpgradeState.SUCCEEDED)).message).toBe(`the agent reports ${B}`);
  }, 180_000);
});

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandState } from "@redflag/gen/command_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { buildAgent, type BuiltAgent } from "../scripts/build-agent.ts";
import { run } from "./support/processes.ts";

const exec = promisify(execFile);

// Issue 14: the agent as one executable, built the way `npm run build:agent` builds it, enrolled
// with a real control plane and running its commands on a PATH with no Node on it.
describe.runIf(process.platform === "linux" && process.arch === "x64")("the single-file agent (linux-x64)", () => {
  let work: string;
  let built: BuiltAgent;
  let cp: TestControlPlane;
  // Nothing on PATH but an empty directory: no node, no npm, no tsx.
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "rf-agent-bin-"));
    built = (await buildAgent({ platforms: ["linux-x64"], out: path.join(work, "dist"), log: () => {} }))[0]!;
    cp = await startTestControlPlane();
    const emptyBin = path.join(work, "empty-bin");
    await mkdir(emptyBin);
    env = { PATH: emptyBin, HOME: work, REDFLAG_AGENT_STATE_DIR: path.join(work, "state"), REDFLAG_AGENT_LONG_POLL_SECONDS: "0", REDFLAG_AGENT_MACHINE_ID_SEED: "single-file" };
  }, 240_000);
  afterAll(async () => {
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const agent = (args: string[], extra: NodeJS.ProcessEnv = {}) => exec(built.executable, args, { env: { ...env, ...extra }, cwd: work, timeout: 60_000 }).then(
    (r) => ({ code: 0, ...r }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" }),
  );

  it("is packed as the release registry takes it, with the version stamped in", async () => {
    const version = (await import("../agent/package.json", { with: { type: "json" } })).default.version;
    expect(path.basename(built.tarball)).toBe(`redflag-agent-${version}-linux-x64.tgz`);
    const { stdout } = await exec("tar", ["-tzf", built.tarball]);
    expect(stdout.trim().split("\n")).toEqual(["bin/redflag-agent"]);
    expect(await agent(["--version"])).toMatchObject({ code: 0, stdout: `${version}\n` });
    expect(await readdir(path.dirname(built.executable))).toEqual(["redflag-agent"]);
    // What the build leaves is what an admin publishes.
    const published = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "releases", "publish", path.dirname(built.tarball)]);
    expect(published.code, published.stderr).toBe(0);
    expect(published.stdout).toContain(`published: ${version} for linux-x64 (`);
    const registry = createClient(ReleaseService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    const { releases } = await registry.listReleases({ platform: "linux-x64" });
    expect(releases.map((r) => [r.version, Buffer.from(r.sha256).toString("hex")])).toEqual([[version, built.sha256]]);
  });

  it("enrols with a pinned fingerprint, polls and runs a signed command, without Node on the PATH", async () => {
    await expect(exec("sh", ["-c", "command -v node"], { env })).rejects.toBeDefined();
    const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await agent(["register", "--server", cp.url, "--token", secret, "--fingerprint", signingKeyFingerprint]);
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
    const command = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const once = await agent(["run", "--once"]);
    expect(once.code, once.stderr).toBe(0);
    expect((await cp.admin.commands.getCommand({ id: command.id })).command?.state).toBe(CommandState.SUCCEEDED);
    const status = await agent(["status"]);
    expect(status.stdout).toContain(agentId);
  });

  it("refuses a fingerprint that is not the control plane's, and says so", async () => {
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const wrong = "0".repeat(64);
    const reg = await agent(["register", "--server", cp.url, "--token", secret, "--fingerprint", wrong], { REDFLAG_AGENT_STATE_DIR: path.join(work, "other"), REDFLAG_AGENT_MACHINE_ID_SEED: "another" });
    expect(reg.code).not.toBe(0);
    expect(reg.stderr).toMatch(/signing keys do not include the one with fingerprint 00:00:.*someone is intercepting the connection/);
  });
});

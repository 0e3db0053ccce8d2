import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp as copy, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root, run } from "./support/processes.ts";

// A real agent process upgraded by a fleet upgrade: the release it installs is this agent's own
// code stamped 9.9.9. The agent tries it as its child, switches to it once it has polled, and
// only when the new release polls as itself (not on trial) does the control plane count the
// upgrade as succeeded. The release lives under the project's test-output
// folder, so its code finds the project's node_modules as an installed agent finds its own.
describe("a fleet upgrade of a real agent, done when the agent reports the new version", () => {
  let cp: TestControlPlane;
  let work: string;
  const platform = `${process.platform}-${process.arch}`;
  const cli = (args: string[]) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);

  beforeAll(async () => {
    // The scheduler moves upgrades on only when the test ticks it.
    cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
    await mkdir(path.join(root, "test-output"), { recursive: true });
    work = await mkdtemp(path.join(root, "test-output", "rf-fleet-"));
    // The release: bin/redflag-agent starting agent/src/main.ts beside it, package.json saying 9.9.9.
    const src = path.join(work, "release-src");
    await copy(path.join(root, "agent", "src"), path.join(src, "agent", "src"), { recursive: true, filter: (f) => !f.endsWith(".test.ts") });
    const pkg = JSON.parse(await readFile(path.join(root, "agent", "package.json"), "utf8")) as { version: string };
    await writeFile(path.join(src, "agent", "package.json"), JSON.stringify({ ...pkg, version: "9.9.9" }));
    await mkdir(path.join(src, "bin"));
    await writeFile(path.join(src, "bin", "redflag-agent"), `#!/bin/sh\nexec "${process.execPath}" "$(dirname "$0")/../agent/src/main.ts" "$@"\n`, { mode: 0o755 });
    await mkdir(path.join(work, "dist"));
    await promisify(execFile)("tar", ["-czf", path.join(work, "dist", `redflag-agent-9.9.9-${platform}.tgz`), "-C", src, "."]);
  }, 180_000);
  afterAll(async () => {
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("installs 9.9.9, restarts into it, and counts as succeeded once the agent polls reporting 9.9.9", async () => {
    const published = await cli(["releases", "publish", path.join(work, "dist")]);
    expect(published.code, published.stderr).toBe(0);
    const stateDir = path.join(work, "state");
    const installDir = path.join(work, "install");
    const env = { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_LONG_POLL_SECONDS: "0", REDFLAG_AGENT_INSTALL_DIR: installDir };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], { env });
    expect(reg.code, reg.stderr).toBe(0);
    const agent = (await cp.admin.fleet.listAgents({})).agents[0]!;
    expect(agent.agentVersion).toBe("0.1.0");
    await cp.admin.fleet.setAgentLabels({ agentId: agent.id, group: "lab", tags: [] });

    const queued = await cli(["agents", "upgrade", "--group", "lab"]);
    expect(queued.code, queued.stderr).toBe(0);
    expect(queued.stdout).toMatch(/^fleet upgrade [0-9a-f-]{36} of group lab: 1 selected, 1 queued, 0 skipped\n/);
    const status = async () => {
      await cp.app.lastSeen.flush();
      await cp.app.scheduler.tick();
      return cli(["agents", "upgrade-status", "--agent", agent.id]);
    };

    // The running agent installs the release and exits for its service manager to restart it.
    const first = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(first.code, first.stderr).toBe(3);
    expect((await status()).stdout).toMatch(/0\.1\.0\s+9\.9\.9\s+installing\s+.*installed 9\.9\.9; waiting for the agent to restart and report it\n/);

    // The service manager starts the agent again: it finds the release waiting and runs it as
    // its child, on trial. The trial's polls say so, and do not count as the new version; once
    // the child has completed a poll cycle, `current` points at it and the agent exits again.
    const trial = await run(["agent/src/main.ts", "run", "--state-dir", stateDir], { env, timeoutMs: 120_000 });
    expect(trial.code, trial.stderr).toBe(3);
    expect(trial.stderr).toContain("exiting so the service manager starts the new release");
    expect((await status()).stdout).toMatch(/0\.1\.0\s+9\.9\.9\s+installing\s+/);

    // The service manager starts what `current` points at now: the new release, which polls as 9.9.9.
    await promisify(execFile)(path.join(installDir, "current", "bin", "redflag-agent"), ["run", "--once", "--state-dir", stateDir], {
      env: { ...process.env, ...env },
      cwd: work,
    });
    const done = await status();
    expect(done.stdout).toMatch(/0\.1\.0\s+9\.9\.9\s+succeeded\s+.*the agent reports 9\.9\.9\n/);
    expect(done.stdout).toMatch(/\n1 succeeded\n$/);
    expect((await cp.admin.fleet.getAgent({ agentId: agent.id })).agent?.agentVersion).toBe("9.9.9");
  }, 240_000);
});

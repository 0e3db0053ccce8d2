import { CommandState } from "@redflag/gen/command_service_pb";
import { CommandOutcome } from "@redflag/gen/command_pb";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerAgent, runAgent } from "../agent/src/index.ts";
import { silentLogger } from "../agent/src/log.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// What goes wrong on hosts: a package tool that hangs, an executor that throws. The agent
// reports each as a failed command and keeps going.
describe("agent failures against a real control plane", () => {
  let cp: TestControlPlane;
  let root: string;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-fail-"));
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  const waitFor = async (id: string) => {
    for (let i = 0; i < 200; i++) {
      const command = (await cp.admin.commands.getCommand({ id })).command!;
      if (![CommandState.PENDING, CommandState.SENT].includes(command.state)) return command;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`command ${id} did not finish`);
  };

  it("kills a hung package tool at the command's timeout and reports it", async () => {
    const marker = `redflag-hang-${randomBytes(4).toString("hex")}`;
    const bin = path.join(root, "bin");
    await mkdir(bin);
    // apt that never answers, through a child with a unique name so the test can find survivors.
    await copyFile("/bin/sleep", path.join(bin, marker));
    await writeFile(path.join(bin, "apt"), `#!/bin/sh\n"${path.join(bin, marker)}" 600\n`);
    await chmod(path.join(bin, "apt"), 0o755);
    const stateDir = path.join(root, "hung");
    const env = {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      PATH: `${bin}:${process.env.PATH}`,
    };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], { env });
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = (await cp.admin.fleet.listAgents({})).agents.find((a) => a.machineId)!.id;
    const created = await cp.admin.commands.createCommand({
      agentId,
      timeoutSeconds: 3,
      action: { case: "scanUpdates", value: { subsystems: ["apt"] } },
    });
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env, timeoutMs: 60_000 });
    expect(once.code, once.stderr).toBe(0);
    const command = await waitFor(created.command!.id);
    expect(command.state).toBe(CommandState.FAILED);
    expect(command.result?.message).toBe("scan_updates timed out after 3s");
    const survivors = await promisify(execFile)("pgrep", ["-f", marker]).then(
      (r) => r.stdout.trim(),
      () => "",
    );
    expect(survivors).toBe("");
  });

  it("reports an executor that throws as failed and runs the next command", async () => {
    const stateDir = path.join(root, "crash");
    const seed = randomBytes(8).toString("hex");
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const { agentId } = await registerAgent({ stateDir, serverUrl: cp.url, token: secret, machineIdSeed: seed, logger: silentLogger });
    const boom = await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } });
    const next = await cp.admin.commands.createCommand({ agentId, action: { case: "disableHeartbeat", value: {} } });
    await runAgent({
      stateDir,
      machineIdSeed: seed,
      once: true,
      logger: silentLogger,
      executors: {
        collectSpecs: async () => {
          throw new TypeError("Cannot read properties of undefined (reading 'model')");
        },
        disableHeartbeat: async () => ({ outcome: CommandOutcome.SUCCEEDED, message: "heartbeat off" }),
      },
    });
    const failed = await waitFor(boom.command!.id);
    expect(failed.state).toBe(CommandState.FAILED);
    expect(failed.result?.message).toBe("collect_specs failed: Cannot read properties of undefined (reading 'model')");
    expect((await waitFor(next.command!.id)).state).toBe(CommandState.SUCCEEDED);
  });
});

import { fromBinary } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema, PackageResultState } from "@redflag/gen/command_pb";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports } from "../src/store/commands.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// redflag rollouts list|show|preview|create|pause|resume|abort, in process against a real
// control plane whose scheduler the test ticks.

let cp: TestControlPlane;
let config: string;
const agents = new Map<string, TestAgent>();
const admin = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });
// A command line as a shell would split it (double quotes only, as the help text uses them).
const words = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
const tick = async () => {
  await cp.app.lastSeen.flush();
  await cp.app.scheduler.tick();
  await cp.app.scheduler.tick();
};

// The agent polls and runs its installs: each package installed, or failed when `fail`.
async function run(hostname: string, fail = false) {
  const agent = agents.get(hostname)!;
  for (const signed of (await agent.client.pollCommands({ nonce: nonce() })).commands) {
    const command = fromBinary(CommandSchema, signed.command);
    if (command.action.case !== "installUpdates") continue;
    const packages = command.action.value.packages.map((p) => ({ source: p.source, name: p.name, architecture: p.architecture, toVersion: p.version, state: fail ? PackageResultState.FAILED : PackageResultState.INSTALLED }));
    await agent.client.reportResults({ results: [{ commandId: command.id, sequence: command.sequence, outcome: CommandOutcome.SUCCEEDED, detail: { case: "installUpdates", value: { packages } } }] });
  }
  await cp.app.lastSeen.flush();
}

beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
  config = await mkdtemp(path.join(os.tmpdir(), "rf-cli-"));
  const token = await newRegistrationToken(cp, 10);
  for (const hostname of ["web-1", "web-2", "web-3"]) {
    const agent = await registerTestAgent(cp, token, { hostname });
    await cp.admin.fleet.setAgentLabels({ agentId: agent.agentId, group: "web", tags: [] });
    agents.set(hostname, agent);
    const updates = [{ source: "apt", name: "openssl", architecture: "amd64", currentVersion: "1.0", availableVersion: "1.1", repository: "bookworm", severity: "important", security: true, sizeBytes: 1n, rebootRequired: false }];
    await recordScanReports(cp.app.db.prisma, cp.app.db.statements, agent.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(), scan: { updates, parts: 0, sources: ["apt"] } }], { rows: 10_000 });
  }
  expect((await admin(["updates", "approve", "--package", "openssl"])).code).toBe(0);
  // Each agent polls once, so none shows as offline.
  for (const hostname of agents.keys()) await run(hostname);
});
afterAll(async () => {
  await cp?.close();
  await rm(config, { recursive: true, force: true });
});

describe("redflag rollouts", () => {
  it("runs the examples of its help as printed, and shows per-ring and per-host progress", async () => {
    const help = await runInProcess(["rollouts", "create", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--ring <ring>\s+a ring, in order/);
    const examples = help.stdout.split("\n").filter((l) => l.trim().startsWith("redflag rollouts "));
    expect(examples).toHaveLength(3);
    const outputs = [];
    for (const line of examples) {
      const out = await admin(words(line.trim()).slice(1));
      expect(out.code, `${line}\n${out.stderr}`).toBe(0);
      outputs.push(out.stdout);
    }
    expect(outputs[0]).toMatch(/^#\s+RING\s+HOSTS\s+UPDATES\s+FIRST HOSTS\n1\s+canary\s+1\s+1\s+web-1\n2\s+wave 1\s+1\s+1\s+web-[23]\n3\s+rest\s+1\s+1\s+web-[23]\n$/);
    expect(outputs[1]).toMatch(/^created rollout "openssl june": (\S+); 3 hosts in 3 rings \(canary: 1, wave 1: 1, rest: 1\)\nprogress: redflag rollouts show \1\n$/);
    expect(outputs[2]).toMatch(/state: running, ring 1\/3 canary; created by admin\.key/);
    expect(outputs[2]).toMatch(/^1\s+canary\s+agents=web-1\s+installing\s+1\s+1\s+0\s+0\s+0\s+0\s+0\s+100%\s+1h$/m);
    expect(outputs[2]).toMatch(/^2\s+wave 1\s+10%\s+waiting\s+1\s+1\s+0\s+0\s+0\s+0\s+0\s+95%\s+30m$/m);

    // The printed progress hint works as printed.
    const id = /progress: redflag rollouts show (\S+)/.exec(outputs[1]!)![1]!;
    await tick();
    const shown = await admin(["rollouts", "show", id]);
    expect(shown.stdout).toMatch(/^web-1\s+canary\s+queued\s+\S+$/m);
    expect(shown.stdout).toMatch(/^web-2\s+\S+( \S+)?\s+waiting$/m);
    expect(shown.stdout).toContain(`pause: redflag rollouts pause ${id}\nabort: redflag rollouts abort ${id}\n`);

    // A failure halts it; show says why and prints the override, which works as printed.
    await run("web-1", true);
    await tick();
    const halted = await admin(["rollouts", "show", "openssl june"]);
    expect(halted.stdout).toContain(`halted: ring "canary" cannot reach its success threshold of 100%: 1 of 1 host failed (web-1: openssl failed)`);
    expect(halted.stdout).toMatch(/^web-1\s+canary\s+failed\s+\S+\s+openssl failed$/m);
    const override = /override the halt and go on past ring "canary": (redflag rollouts resume \S+)/.exec(halted.stdout)![1]!;
    const resumed = await admin(words(override).slice(1));
    expect(resumed).toEqual({ code: 0, stdout: `rollout "openssl june" is running; ring 2/3 wave 1\n`, stderr: "" });
    const list = await admin(["rollouts", "list"]);
    expect(list.stdout).toMatch(/^NAME\s+STATE\s+RING\s+HOSTS\s+SUCCEEDED\s+FAILED\s+CREATED BY\s+CREATED \(UTC\)\s+ID\nopenssl june\s+running\s+2\/3 wave 1\s+3\s+0\s+1\s+admin\.key\s+\S+\s+\S+\n$/);
  });

  it("pauses, resumes and aborts by name, and says what is wrong", async () => {
    expect(await admin(["rollouts", "pause", "openssl june"])).toEqual({ code: 0, stdout: `rollout "openssl june" is paused; ring 2/3 wave 1\n`, stderr: "" });
    expect(await admin(["rollouts", "pause", "openssl june"])).toEqual({ code: 1, stdout: "", stderr: `redflag: FailedPrecondition: rollout "openssl june" is paused; nothing to pause\n` });
    expect((await admin(["rollouts", "list", "--state", "paused"])).stdout).toMatch(/^openssl june\s+paused/m);
    expect((await admin(["rollouts", "resume", "openssl june"])).code).toBe(0);
    expect(await admin(["rollouts", "abort", "openssl june"])).toEqual({ code: 0, stdout: `rollout "openssl june" is aborted; ring 2/3 wave 1\n`, stderr: "" });
    expect(await admin(["rollouts", "show", "nope"])).toEqual({ code: 1, stdout: "", stderr: "redflag: no rollout is named nope; `redflag rollouts list` shows them\n" });
    const noRings = await admin(["rollouts", "create", "--name", "x", "--group", "web"]);
    expect(noRings.stderr).toMatch(/^redflag: give the rings with --ring/);
    const badRing = await admin(["rollouts", "create", "--name", "x", "--group", "web", "--ring", "canary:lots"]);
    expect(badRing.code).toBe(2);
    expect(badRing.stderr).toMatch(/ring "canary": "lots" is not a size; use agents=HOST,HOST, N% or rest/);
    const leftOut = await admin(["rollouts", "preview", "--name", "x", "--group", "web", "--ring", "half:50%"]);
    expect(leftOut.code).toBe(1);
    expect(leftOut.stderr).toMatch(/^redflag: InvalidArgument: 1 target agent would be left out \(web-\d\): the last ring \("half"\) must be "rest"/);
    const json = JSON.parse((await admin(["--json", "rollouts", "show", "openssl june"])).stdout);
    expect(json.rollout.state).toBe("ROLLOUT_STATE_ABORTED");
    expect(json.hosts).toHaveLength(3);
  });
});

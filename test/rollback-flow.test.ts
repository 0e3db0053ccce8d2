import { CommandType, PackageResultState } from "@redflag/gen/command_pb";
import { CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { run } from "./support/processes.ts";

// Rollback end to end: a real control plane, the real `redflag` CLI and a real agent process
// on a host whose apt is a stateful fake with earlier versions of curl in its repositories.
// The agent is asked which versions curl can go back to, the CLI prints them with a rollback
// command, and that command, run as printed, takes curl back.
// Installing with apt needs root; these machines run the tests as root.
describe.runIf(process.getuid?.() === 0)("rollback flow: list versions → roll back as printed", () => {
  let cp: TestControlPlane;
  let root: string;
  let apt: FakeApt;
  let agentId: string;
  let env: Record<string, string>;
  const stateDir = () => path.join(root, "agent");

  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-rollback-"));
    apt = await createFakeApt(root, {
      installed: ["curl amd64 7.88.1-10+deb12u14", "nginx amd64 1.22.1-9"],
      available: ["curl amd64 7.88.1-10+deb12u15 bookworm", "nginx amd64 1.22.1-9 bookworm"],
      older: ["curl amd64 7.88.1-10+deb12u5 bookworm-security", "curl amd64 7.88.1-10 bookworm"],
    });
    env = {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      PATH: `${apt.bin}:${process.env.PATH}`,
    };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir()], { env });
    expect(reg.code, reg.stderr).toBe(0);
    agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  const cli = (...args: string[]) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args], { timeoutMs: 90_000 });
  const agentRunsOnce = async () => {
    const out = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir()], { env, timeoutMs: 60_000 });
    expect(out.code, out.stderr).toBe(0);
  };
  const pendingOf = async (type: CommandType): Promise<CommandInfo | undefined> =>
    (await cp.admin.commands.listCommands({ agentId, state: CommandState.PENDING, pageSize: 50 })).commands.find((c) => c.type === type);
  const whenQueued = async (type: CommandType) => {
    for (let i = 0; i < 600 && !(await pendingOf(type)); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await pendingOf(type)).toBeDefined();
  };

  it("lists the versions a repository still has, then rolls back to the one the printed command names", async () => {
    // The CLI waits for the answer while the agent takes the question on its next poll.
    const asking = cli("commands", "versions", agentId, "apt:curl", "apt:nginx", "apt:hello", "--wait", "80s");
    await whenQueued(CommandType.LIST_PACKAGE_VERSIONS);
    await agentRunsOnce();
    const listed = await asking;
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain("apt:curl  installed 7.88.1-10+deb12u14\n");
    expect(listed.stdout).toMatch(/^ {2}7\.88\.1-10\+deb12u5\s+from bookworm-security\n {2}7\.88\.1-10\s+from bookworm$/m);
    expect(listed.stdout).toContain("apt:nginx  installed 1.22.1-9\n  nothing to go back to: no earlier version of nginx is available to go back to\n");
    expect(listed.stdout).toContain("apt:hello\n  nothing to go back to: not installed on this host\n");
    // Asking changed nothing on the host.
    expect((await apt.installed()).get("curl")).toBe("7.88.1-10+deb12u14");
    expect(await apt.argvLog()).toEqual([]);

    const line = listed.stdout.split("\n").find((l) => l.trim().startsWith("roll back with: "))!.trim().slice("roll back with: ".length);
    expect(line).toBe(`redflag commands queue --agent ${agentId} --type rollback_update --package apt:curl --to-version 7.88.1-10+deb12u5`);
    const queued = await cli(...line.split(" ").slice(1));
    expect(queued.code, queued.stderr).toBe(0);
    const rollbackId = queued.stdout.trim();
    await agentRunsOnce();
    const done = (await cp.admin.commands.getCommand({ id: rollbackId })).command!;
    expect(done.state, done.result?.message).toBe(CommandState.SUCCEEDED);
    if (done.result?.detail.case !== "rollbackUpdate") throw new Error("no rollback detail");
    expect(done.result.detail.value.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["curl", PackageResultState.INSTALLED, "7.88.1-10+deb12u14", "7.88.1-10+deb12u5"],
    ]);
    expect((await apt.installed()).get("curl")).toBe("7.88.1-10+deb12u5");
    expect((await apt.argvLog()).at(-1)).toMatch(/^install -y -q .* --allow-downgrades -- curl=7\.88\.1-10\+deb12u5$/);
  }, 240_000);

  it("fails a rollback to a version no repository has, in apt's words, and changes nothing", async () => {
    const queued = await cli("commands", "queue", "--agent", agentId, "--type", "rollback_update", "--package", "apt:curl", "--to-version", "7.0-1");
    expect(queued.code, queued.stderr).toBe(0);
    await agentRunsOnce();
    const done = (await cp.admin.commands.getCommand({ id: queued.stdout.trim() })).command!;
    expect(done.state).toBe(CommandState.FAILED);
    expect(done.result?.message).toContain("E: Version '7.0-1' for 'curl' was not found");
    expect((await apt.installed()).get("curl")).toBe("7.88.1-10+deb12u5");
  }, 120_000);
});

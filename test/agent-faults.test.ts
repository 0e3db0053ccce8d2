import { CommandState } from "@redflag/gen/command_service_pb";
import { CommandOutcome } from "@redflag/gen/command_pb";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SUBSYSTEMS } from "../control-plane/src/domain/agent-config.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { freshDatabase, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { root, run } from "./support/processes.ts";

// What goes wrong on the agent's side, with a real control plane and real agent processes:
// kill -9 between running a command and reporting it, kill -9 while it runs, a torn journal,
// a clock ahead or behind, and a state directory that is full or read-only. Commands are dry
// runs of one package each; the fake apt-get notes every run in started.log (before it
// runs, so a run cut short counts too), which is how "never run twice" is seen from outside.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const canMount = (() => {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync("unshare", ["-m", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
// libfaketime (Debian's faketime package; .ci/run installs it), preloaded into the agent itself:
// the faketime wrapper forks, so killing it would leave the agent running.
const faketime = ["x86_64", "aarch64"].map((arch) => `/usr/lib/${arch}-linux-gnu/faketime/libfaketime.so.1`).find((file) => existsSync(file));

describe("agent faults against a real control plane", () => {
  let db: FreshDatabase;
  let cp: TestControlPlane | undefined;
  let port = 0;
  let work: string;
  let apt: FakeApt;
  let slowFlag: string;
  let startedLog: string;
  let next = 0;
  const children = new Set<ChildProcess>();
  // Agents poll every few seconds (a poll that only refused commands waits a whole interval).
  const env = { REDFLAG_DELIVERY_LEASE: "2s", REDFLAG_POLL_INTERVAL: "3s" };

  const startCp = async () => {
    cp = await startTestControlPlane(env, { db, port });
    port = cp.app.server.port;
  };
  const stopCp = async () => {
    await cp!.app.close();
    cp = undefined;
  };

  beforeAll(async () => {
    db = await freshDatabase();
    work = await mkdtemp(path.join(tmpdir(), "rf-agent-faults-"));
    const packages = Array.from({ length: 100 }, (_, i) => `pkg-${i}`);
    apt = await createFakeApt(path.join(work, "apt"), {
      installed: packages.map((p) => `${p} amd64 1.0`),
      available: packages.map((p) => `${p} amd64 2.0 bookworm`),
    });
    // apt-get notes each run first, and takes a few seconds while the slow flag exists.
    slowFlag = path.join(work, "slow");
    startedLog = path.join(work, "started.log");
    await rename(path.join(apt.bin, "apt-get"), path.join(apt.bin, "apt-get.real"));
    await writeFile(
      path.join(apt.bin, "apt-get"),
      `#!/bin/sh\necho "$*" >> '${startedLog}'\n[ -e '${slowFlag}' ] && sleep 4\nexec '${path.join(apt.bin, "apt-get.real")}' "$@"\n`,
    );
    await chmod(path.join(apt.bin, "apt-get"), 0o755);
    await startCp();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await cp?.app.close();
    await db?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  const runs = async (name: string) =>
    (await readFile(startedLog, "utf8").catch(() => "")).split("\n").filter((l) => l.split(" ").includes(name)).length;
  const journal = async (stateDir: string) =>
    JSON.parse(await readFile(path.join(stateDir, "journal.json"), "utf8")) as { entries: { commandId: string; state: string; acknowledged: boolean }[] };

  interface Agent {
    id: string;
    stateDir: string;
    env: Record<string, string>;
  }
  const register = async (agentEnv: Record<string, string> = {}): Promise<Agent> => {
    const stateDir = path.join(work, `agent-${next++}`);
    const envFor = {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "2",
      PATH: `${apt.bin}:${process.env.PATH}`,
      ...agentEnv,
    };
    const { secret } = await cp!.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp!.url, "--token", secret, "--state-dir", stateDir], { env: envFor });
    expect(reg.code, reg.stderr).toBe(0);
    const id = (JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string }).agentId;
    // Scheduled scans just ran as far as the agent knows (a day ahead, for clocks that are).
    const lastRun = Object.fromEntries(SUBSYSTEMS.map((name) => [name, new Date(Date.now() + 86_400_000).toISOString()]));
    await writeFile(path.join(stateDir, "auto-scans.json"), JSON.stringify({ lastRun, pending: [] }));
    return { id, stateDir, env: envFor };
  };
  const start = (agent: Agent) => {
    const child = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", agent.stateDir], { cwd: root, env: { ...process.env, ...agent.env }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d;
      if (process.env.REDFLAG_TEST_AGENT_LOGS) process.stderr.write(d);
    });
    children.add(child);
    return { child, stderr: () => stderr };
  };
  const dryRun = async (agent: Agent, name: string) =>
    (await cp!.admin.commands.createCommand({ agentId: agent.id, action: { case: "dryRunUpdate", value: { packages: [{ source: "apt", name }] } } })).command!.id;
  const settled = async (id: string, timeout = 60_000) => {
    let command;
    await expect
      .poll(
        async () => {
          command = (await cp!.admin.commands.getCommand({ id })).command!;
          return [CommandState.PENDING, CommandState.SENT].includes(command.state);
        },
        { timeout, interval: 200 },
      )
      .toBe(false);
    return command!;
  };

  it("reports a command run before a kill -9 once after the restart, and never runs it again", { timeout: 180_000 }, async () => {
    const agent = await register();
    let proc = start(agent);
    await writeFile(slowFlag, "");
    const id = await dryRun(agent, "pkg-1");
    await expect.poll(() => runs("pkg-1"), { timeout: 30_000, interval: 100 }).toBe(1);
    // The control plane goes away while the command runs, so its result cannot be reported.
    await stopCp();
    await expect
      .poll(async () => (await journal(agent.stateDir)).entries.find((e) => e.commandId === id), { timeout: 30_000, interval: 100 })
      .toMatchObject({ state: "done", acknowledged: false });
    await killHard(proc.child);
    await rm(slowFlag);
    // Back after the delivery lease: the command could be delivered again, but the agent
    // reports its journaled result first.
    await sleep(2500);
    await startCp();
    proc = start(agent);
    const command = await settled(id);
    expect(command.state).toBe(CommandState.SUCCEEDED);
    expect(command.deliveryCount).toBe(1);
    expect(await runs("pkg-1")).toBe(1);

    // Killed while the command runs: reported as interrupted after the restart, not run again.
    await writeFile(slowFlag, "");
    const cut = await dryRun(agent, "pkg-2");
    await expect.poll(() => runs("pkg-2"), { timeout: 30_000, interval: 100 }).toBe(1);
    await killHard(proc.child);
    await rm(slowFlag);
    await sleep(2500);
    proc = start(agent);
    const interrupted = await settled(cut);
    expect(interrupted.state).toBe(CommandState.FAILED);
    expect(interrupted.result?.message).toBe("the agent stopped before the command finished; it was not run again");
    await sleep(5000);
    expect(await runs("pkg-2")).toBe(1);
    await killHard(proc.child);
  });

  it("delivers a command again whose poll answer died with the agent, and runs it once", { timeout: 180_000 }, async () => {
    const agent = await register();
    const proc = start(agent);
    // Idle and long-polling; then frozen, so the answer the control plane writes for the
    // command below waits unread in the socket, and dies with the process.
    expect((await settled(await dryRun(agent, "pkg-20"))).state).toBe(CommandState.SUCCEEDED);
    await sleep(1000);
    proc.child.kill("SIGSTOP");
    const id = await dryRun(agent, "pkg-21");
    await expect.poll(async () => (await cp!.admin.commands.getCommand({ id })).command?.state, { timeout: 30_000, interval: 100 }).toBe(CommandState.SENT);
    await killHard(proc.child);
    const again = start(agent);
    const command = await settled(id);
    expect(command.state).toBe(CommandState.SUCCEEDED);
    expect(command.deliveryCount).toBe(2);
    expect(await runs("pkg-21")).toBe(1);
    await killHard(again.child);
  });

  it("survives a torn journal: sets it aside, says so, never runs an earlier command again, and runs new ones", { timeout: 180_000 }, async () => {
    const agent = await register();
    let proc = start(agent);
    await writeFile(slowFlag, "");
    const id = await dryRun(agent, "pkg-3");
    await expect.poll(() => runs("pkg-3"), { timeout: 30_000, interval: 100 }).toBe(1);
    await stopCp();
    await expect
      .poll(async () => (await journal(agent.stateDir)).entries.find((e) => e.commandId === id)?.state, { timeout: 30_000, interval: 100 })
      .toBe("done");
    await killHard(proc.child);
    await rm(slowFlag);
    // The journal's last write torn part-way, as a crash on a file system without atomic
    // renames can leave it.
    const file = path.join(agent.stateDir, "journal.json");
    const whole = await readFile(file);
    await writeFile(file, whole.subarray(0, Math.floor(whole.length * 0.6)));

    await startCp();
    proc = start(agent);
    // Its result died with the journal; delivered again after the lease, it is refused, not run.
    const command = await settled(id);
    expect(command.state).toBe(CommandState.REJECTED);
    expect(command.deliveryCount).toBe(2);
    expect(command.result?.message).toMatch(
      /^not run: this agent's journal was found damaged at \S+ and set aside as \S+journal\.json\.damaged-\S+; this command was first delivered before that and may already have run, so it is not run again \(queue it again if it did not run\)$/,
    );
    expect(await runs("pkg-3")).toBe(1);
    const fresh = await settled(await dryRun(agent, "pkg-4"));
    expect(fresh.state).toBe(CommandState.SUCCEEDED);
    expect(await runs("pkg-4")).toBe(1);
    expect(proc.stderr()).toContain("the journal was damaged and set aside; commands delivered before now are not run");
    await killHard(proc.child);
  });

  describe.skipIf(!faketime)("with the agent's clock off (libfaketime)", () => {
    it("refuses commands from a clock ahead as expired and from a clock behind as issued in the future, saying so, and runs them once the clock is right", { timeout: 180_000 }, async () => {
      for (const [offset, expected] of [
        ["+15m", /^command expired at \S+; this host's clock says \S+ \(unless the command waited behind a long one, this host's clock is ahead: correct it\)$/],
        ["-3m", /^command issued in the future at \S+; this host's clock says \S+ \(this host's clock is behind: correct it\)$/],
      ] as const) {
        const agent = await register();
        // Only the wall clock is shifted; timers keep running at the real pace.
        const proc = start({ ...agent, env: { ...agent.env, LD_PRELOAD: faketime!, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: "1" } });
        const name = offset === "+15m" ? "pkg-5" : "pkg-6";
        const command = await settled(await dryRun(agent, name));
        expect(command.state, offset).toBe(CommandState.REJECTED);
        expect(command.result?.outcome).toBe(CommandOutcome.REJECTED);
        expect(command.result?.message, offset).toMatch(expected);
        expect(await runs(name)).toBe(0);
        await killHard(proc.child);
        // With the clock right the same agent runs the next one.
        const fixed = start(agent);
        expect((await settled(await dryRun(agent, name))).state).toBe(CommandState.SUCCEEDED);
        expect(await runs(name)).toBe(1);
        await killHard(fixed.child);
      }
    });
  });

  describe.skipIf(!canMount)("with the state directory on its own mount (root, unshare)", () => {
    it("does not run a command it cannot journal on a full or read-only disk, says why, and runs again once it can", { timeout: 180_000 }, async () => {
      const agent = await register();
      const copy = `${agent.stateDir}.src`;
      await rename(agent.stateDir, copy);
      execFileSync("mkdir", ["-m", "700", agent.stateDir]);
      const script = `mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1" && cp -a "$2"/. "$1"/ && exec "$3" agent/src/main.ts run --state-dir "$1"`;
      const child = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", agent.stateDir, copy, process.execPath], {
        cwd: root,
        env: { ...process.env, ...agent.env },
        stdio: ["ignore", "ignore", "pipe"],
      });
      children.add(child);
      let stderr = "";
      child.stderr!.on("data", (d: Buffer) => (stderr += d));
      // The agent runs in a private mount namespace whose state directory is a small tmpfs
      // holding a copy of its registration; `inside` runs a shell command in that namespace.
      const inside = (command: string) => execFileSync("nsenter", ["-t", String(child.pid), "-m", "sh", "-c", command], { encoding: "utf8" });
      // Running and polling: a first command runs as usual.
      expect((await settled(await dryRun(agent, "pkg-7"))).state).toBe(CommandState.SUCCEEDED);

      // Full: fill the file system to the last byte.
      inside(`dd if=/dev/zero of="${agent.stateDir}/filler" bs=4k 2>/dev/null || true`);
      const full = await settled(await dryRun(agent, "pkg-8"));
      expect(full.state).toBe(CommandState.REJECTED);
      expect(full.result?.message).toMatch(
        /^not run: the agent cannot record the command in its journal before running it \(cannot write \S+journal\.json: ENOSPC: no space left on device.*\); free space or make the state directory writable, then queue it again$/,
      );
      expect(await runs("pkg-8")).toBe(0);
      inside(`rm "${agent.stateDir}/filler"`);
      expect((await settled(await dryRun(agent, "pkg-9"))).state).toBe(CommandState.SUCCEEDED);
      expect(await runs("pkg-9")).toBe(1);

      // Read-only: the file system is remounted so under the running agent.
      inside(`mount -o remount,ro "${agent.stateDir}"`);
      const readOnly = await settled(await dryRun(agent, "pkg-10"));
      expect(readOnly.state).toBe(CommandState.REJECTED);
      expect(readOnly.result?.message).toMatch(/\(cannot write \S+journal\.json: EROFS: read-only file system.*\)/);
      expect(await runs("pkg-10")).toBe(0);
      inside(`mount -o remount,rw "${agent.stateDir}"`);
      expect((await settled(await dryRun(agent, "pkg-11"))).state).toBe(CommandState.SUCCEEDED);
      expect(await runs("pkg-11")).toBe(1);
      expect(stderr).toContain("rejected a command it cannot journal");
      await killHard(child);
    });
  });
});

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

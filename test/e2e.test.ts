import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run, startServerProcess, type ServerProcess } from "./support/processes.ts";

// The whole pull loop with real processes: redflag-server, the redflag CLI and redflag-agent
// with a real APT scan, on the embedded database and, when TEST_DATABASE_URL is set, PostgreSQL.
const backends = ["embedded", ...(process.env.TEST_DATABASE_URL ? ["postgres"] : [])] as const;

describe.each(backends)("end to end on %s", (backend) => {
  let server: ServerProcess;
  let dataDir: string;
  let stateDir: string;
  let dropDatabase: (() => Promise<void>) | undefined;
  const seed = randomBytes(8).toString("hex");

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "redflag-e2e-"));
    stateDir = path.join(dataDir, "agent-state");
    const env: Record<string, string> = { REDFLAG_DATA_DIR: path.join(dataDir, "server"), REDFLAG_POLL_INTERVAL: "2s" };
    if (backend === "postgres") {
      const name = `redflag_e2e_${seed}`;
      const admin = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      await admin.end();
      const url = new URL(process.env.TEST_DATABASE_URL!);
      url.pathname = `/${name}`;
      env.DATABASE_URL = url.toString();
      dropDatabase = async () => {
        const c = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await c.end();
      };
    }
    server = await startServerProcess(env);
  });

  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
    await dropDatabase?.();
    await rm(dataDir, { recursive: true, force: true });
  });

  const cli = async (...args: string[]) => {
    const res = await run([
      "control-plane/src/cli/main.ts",
      "--server",
      server.url,
      "--api-key-file",
      path.join(dataDir, "server", "admin.key"),
      ...args,
    ]);
    return res;
  };
  const cliJson = async <T>(...args: string[]): Promise<T> => {
    const res = await cli(...args, "--json");
    expect(res.code, res.stderr).toBe(0);
    return JSON.parse(res.stdout) as T;
  };
  const agentEnv = { REDFLAG_AGENT_MACHINE_ID_SEED: seed, REDFLAG_AGENT_APT_REFRESH: "0", REDFLAG_AGENT_LONG_POLL_SECONDS: "0" };
  const agent = (...args: string[]) => run(["agent/src/main.ts", ...args], { env: agentEnv, timeoutMs: 120_000 });

  let agentId: string;

  it("writes the admin key 0600 on first start", async () => {
    expect((await stat(path.join(dataDir, "server", "admin.key"))).mode & 0o777).toBe(0o600);
  });

  it("registers a real agent with a token from the CLI", async () => {
    const created = await cliJson<{ secret: string; token: { id: string; seats: number } }>("tokens", "create", "--seats", "1", "--expires", "1h");
    expect(created.secret).toMatch(/^rfreg_/);
    const reg = await agent("register", "--server", server.url, "--token", created.secret, "--state-dir", stateDir);
    expect(reg.code, reg.stderr).toBe(0);
    const listed = await cliJson<{ agents: { id: string; hostname: string; health: string }[] }>("agents", "list");
    expect(listed.agents).toHaveLength(1);
    agentId = listed.agents[0]!.id;
    expect(listed.agents[0]!.health).toBe("AGENT_HEALTH_NEVER_REPORTED");
    const tokens = await cliJson<{ tokens: { usedSeats: number; state: string }[] }>("tokens", "list");
    expect(tokens.tokens[0]).toMatchObject({ usedSeats: 1, state: "REGISTRATION_TOKEN_STATE_EXHAUSTED" });
  });

  it("runs a queued APT scan: the agent verifies, scans for real and reports", async () => {
    const queued = await cli("commands", "queue", "--agent", agentId, "--type", "scan_updates");
    expect(queued.code, queued.stderr).toBe(0);
    const commandId = queued.stdout.trim();
    expect(commandId).toMatch(/^[0-9a-f-]{36}$/);
    const once = await agent("run", "--once", "--state-dir", stateDir);
    expect(once.code, once.stderr + once.stdout).toBe(0);
    const got = await cliJson<{ command: { state: string; sequence: string; result: { outcome: string; scanUpdates: { subsystems: { subsystem: string; state: string }[] } } } }>(
      "commands",
      "get",
      commandId,
    );
    expect(got.command.state).toBe("COMMAND_STATE_SUCCEEDED");
    expect(got.command.sequence).toBe("1");
    expect(got.command.result.outcome).toBe("COMMAND_OUTCOME_SUCCEEDED");
    expect(got.command.result.scanUpdates.subsystems).toContainEqual(
      expect.objectContaining({ subsystem: "apt", state: "SUBSYSTEM_RUN_STATE_RAN" }),
    );
    const updates = (got.command.result.scanUpdates as unknown as { updates?: { security?: boolean }[] }).updates ?? [];
    const shown = await cliJson<{ agents: { pendingUpdateCount?: number; securityUpdateCount?: number; lastScanTime?: string }[] }>("agents", "list");
    expect(shown.agents[0]!.pendingUpdateCount ?? 0).toBe(updates.length);
    expect(shown.agents[0]!.securityUpdateCount ?? 0).toBe(updates.filter((u) => u.security).length);
    expect(shown.agents[0]!.lastScanTime).toBeDefined();
    const list = await cli("commands", "list", "--agent", agentId);
    expect(list.stdout).toMatch(/scan_updates\s+succeeded/);
  });

  it("keeps polling as a service, runs collect_specs, and stops cleanly on SIGTERM", async () => {
    type Listed = { agents: { health: string; lastScanTime: string }[] };
    const before = Date.parse((await cliJson<Listed>("agents", "list")).agents[0]!.lastScanTime);
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], {
      cwd: path.resolve(import.meta.dirname, ".."),
      env: { ...process.env, ...agentEnv, REDFLAG_AGENT_LONG_POLL_SECONDS: "20" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d));
    child.stderr.on("data", (d: Buffer) => (output += d));
    try {
      const queued = await cliJson<{ command: { id: string; state: string } }>(
        "commands", "queue", "--agent", agentId, "--type", "collect_specs", "--wait", "60s",
      );
      expect(queued.command.state, output).toBe("COMMAND_STATE_SUCCEEDED");
      const got = await cliJson<{ command: { result: { collectSpecs: { specs: { cpuCores: number; memoryTotalBytes: string; disks: unknown[] } } } } }>(
        "commands", "get", queued.command.id,
      );
      expect(got.command.result.collectSpecs.specs.cpuCores).toBeGreaterThan(0);
      expect(Number(got.command.result.collectSpecs.specs.memoryTotalBytes)).toBeGreaterThan(0);
      // Online: heard from within three poll intervals. A busy machine can hold the agent up
      // for a moment (a scheduled scan between polls), so ask until it has polled again.
      await expect
        .poll(async () => (await cliJson<Listed>("agents", "list")).agents[0]!.health, { timeout: 20_000, interval: 500 })
        .toBe("AGENT_HEALTH_ONLINE");
      // The service also scans on its own schedule (every source is auto_run by default) and
      // reports without a command: the last scan time moves on from the one before it started.
      const deadline = Date.now() + 60_000;
      let after = before;
      while (after <= before && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1000));
        after = Date.parse((await cliJson<{ agents: { lastScanTime: string }[] }>("agents", "list")).agents[0]!.lastScanTime);
      }
      expect(after, output).toBeGreaterThan(before);
    } finally {
      const code = await new Promise<number | null>((resolve) => {
        child.once("exit", resolve);
        child.kill("SIGTERM");
      });
      expect(code, output).toBe(0);
    }
    // A real agent service, real APT and a scheduled scan of every source: on a busy 2-core
    // machine this takes longer than a unit test.
  }, 150_000);

  it("reports CLI errors clearly with a non-zero exit", async () => {
    const unknown = await cli("commands", "queue", "--agent", "00000000-0000-4000-8000-000000000000", "--type", "scan_updates");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/NotFound: agent 00000000-0000-4000-8000-000000000000 does not exist/);
    const badKey = await run(["control-plane/src/cli/main.ts", "--server", server.url, "--api-key", "rfadm_wrong", "agents", "list"]);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/Unauthenticated: the API token is not valid \(unknown or revoked\)/);
    const badType = await cli("commands", "queue", "--agent", agentId, "--type", "make_coffee");
    expect(badType.code).toBe(2);
    const down = await run(["control-plane/src/cli/main.ts", "--server", "http://127.0.0.1:9", "--api-key", "x", "agents", "list"]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the control plane at http:\/\/127.0.0.1:9/);
  });
});

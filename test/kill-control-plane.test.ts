import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandService, CommandState } from "@redflag/gen/command_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SUBSYSTEMS } from "../control-plane/src/domain/agent-config.ts";
import { headerInterceptor } from "../control-plane/test/support/control-plane.ts";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { root, run, startServerProcess, type ServerProcess } from "./support/processes.ts";

// Item 6 of issue 13: a real control plane process (its own entry point) under a burst of
// commands to real agent processes, killed with SIGKILL mid-burst and started again on the same
// database and port, several times; on PostgreSQL every other round terminates its database
// connections instead. At the end every command queued has exactly one result, ran exactly
// once (counted from outside the agents: the fake apt-get logs every run with the command's own
// package name) and no result is lost. REDFLAG_FAULT_ROUNDS=10 runs a longer version.
const ROUNDS = Number(process.env.REDFLAG_FAULT_ROUNDS ?? 3);
const AGENTS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(availableBackends)("kill -9 of the control plane under a burst of commands, on %s", (backend: Backend) => {
  let db: FreshDatabase;
  let server: ServerProcess | undefined;
  let port = 0;
  let work: string;
  let apt: FakeApt;
  const agents: { id: string; stateDir: string; seed: string; child: ChildProcess }[] = [];
  const env = () => ({
    REDFLAG_DATA_DIR: db.dataDir,
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    REDFLAG_ADDR: `127.0.0.1:${port}`,
    // Short, so the test sees commands lost with a killed process delivered again.
    REDFLAG_DELIVERY_LEASE: "3s",
    REDFLAG_POLL_INTERVAL: "5s",
    REDFLAG_SWEEP_INTERVAL_MS: "1000",
  });
  const start = async () => {
    server = await startServerProcess(env());
    port = Number(new URL(server.url).port);
  };
  const kill = async () => {
    const child = server!.child;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };

  beforeAll(async () => {
    db = await freshDatabase({ backend });
    work = await mkdtemp(path.join(tmpdir(), "rf-kill9-"));
    const packages = Array.from({ length: 2000 }, (_, i) => `pkg-${i}`);
    apt = await createFakeApt(path.join(work, "apt"), {
      installed: packages.map((p) => `${p} amd64 1.0`),
      available: packages.map((p) => `${p} amd64 2.0 bookworm`),
    });
    await start();
  }, 120_000);
  afterAll(async () => {
    for (const agent of agents) {
      if (agent.child.exitCode === null) {
        const exited = new Promise((resolve) => agent.child.once("exit", resolve));
        agent.child.kill("SIGKILL");
        await exited;
      }
    }
    await server?.stop();
    await db?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("loses no command, runs none twice and loses no result", { timeout: 360_000 }, async () => {
    const adminKey = (await readFile(path.join(db.dataDir, "admin.key"), "utf8")).trim();
    const transport = createConnectTransport({
      baseUrl: server!.url,
      httpVersion: "1.1",
      interceptors: [headerInterceptor({ authorization: `Bearer ${adminKey}` })],
      defaultTimeoutMs: 5_000,
    });
    const commands = createClient(CommandService, transport);
    const { secret } = await createClient(TokenService, transport).createRegistrationToken({ seats: AGENTS });
    const agentEnv = (seed: string) => ({
      REDFLAG_AGENT_MACHINE_ID_SEED: seed,
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "5",
      REDFLAG_AGENT_LOG_LEVEL: "warn",
      PATH: `${apt.bin}:${process.env.PATH}`,
    });
    const startAgent = (stateDir: string, seed: string) =>
      spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], { cwd: root, env: { ...process.env, ...agentEnv(seed) }, stdio: "ignore" });
    for (let i = 0; i < AGENTS; i++) {
      const stateDir = path.join(work, `agent-${i}`);
      const seed = randomBytes(8).toString("hex");
      const reg = await run(["agent/src/main.ts", "register", "--server", server!.url, "--token", secret, "--state-dir", stateDir], { env: agentEnv(seed) });
      expect(reg.code, reg.stderr).toBe(0);
      const id = (JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string }).agentId;
      // Scheduled scans just ran, as far as the agent knows: this test counts commands.
      const lastRun = Object.fromEntries(SUBSYSTEMS.map((name) => [name, new Date().toISOString()]));
      await writeFile(path.join(stateDir, "auto-scans.json"), JSON.stringify({ lastRun, pending: [] }));
      agents.push({ id, stateDir, seed, child: startAgent(stateDir, seed) });
    }

    // The burst: one dry run per package, each with its own idempotency key, retried with that
    // key until answered, as the CLI does; the control plane may die before or after queueing.
    const queued = new Map<string, string>();
    let next = 0;
    let queueing = true;
    let retries = 0;
    let excluded = -1;
    let allowed = 20;
    const errors = new Map<string, number>();
    const create = async (agentId: string, n: number, worker: number) => {
      const key = `burst-${n}`;
      for (;;) {
        try {
          const res = await commands.createCommand({
            agentId,
            idempotencyKey: key,
            action: { case: "dryRunUpdate", value: { packages: [{ source: "apt", name: `pkg-${n}` }] } },
          });
          queued.set(key, res.command!.id);
          return res.command!.id;
        } catch (err) {
          const code = ConnectError.from(err).code;
          errors.set(Code[code]!, (errors.get(Code[code]!) ?? 0) + 1);
          if (![Code.Unavailable, Code.Aborted, Code.Unknown, Code.DeadlineExceeded, Code.Internal].includes(code)) throw err;
          retries++;
          await sleep(100 + worker * 20);
        }
      }
    };
    const queuer = async (worker: number) => {
      while (queueing) {
        // Bursts the agents can work off in a while on a busy 2-core machine.
        if (next >= allowed) {
          await sleep(100);
          continue;
        }
        const n = next++;
        // Not the agent about to be frozen: it must be idle, holding a long-poll.
        const target = n % AGENTS === excluded ? (n + 1) % AGENTS : n % AGENTS;
        await create(agents[target]!.id, n, worker);
        await sleep(30);
      }
    };
    const queuers = Promise.all(Array.from({ length: 4 }, (_, w) => queuer(w)));

    const faults: string[] = [];
    // Commands whose delivery an agent died without reading.
    const unread: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      await sleep(1500 + Math.random() * 1500);
      if (backend === "postgres" && round % 2 === 1) {
        // Every connection the control plane has, dropped by the database.
        const client = new pg.Client({ connectionString: db.databaseUrl });
        await client.connect();
        const dropped = await client.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
        await client.end();
        faults.push(`terminated ${dropped.rowCount} database connections`);
        allowed = next + 40;
        continue;
      }
      // One agent freezes first, so the answer to its held long-poll for the command queued
      // now is written but never read: it dies with the agent, killed with the control plane.
      excluded = round % AGENTS;
      const frozen = agents[excluded]!;
      const idleBy = Date.now() + 30_000;
      const busy = async () => {
        for (const state of [CommandState.PENDING, CommandState.SENT]) {
          if ((await commands.listCommands({ agentId: frozen.id, state, pageSize: 1 })).commands.length > 0) return true;
        }
        return false;
      };
      while (Date.now() < idleBy && (await busy().catch(() => true))) await sleep(200);
      await sleep(1500);
      frozen.child.kill("SIGSTOP");
      await sleep(300);
      const id = await create(frozen.id, next++, 9);
      const sent = async () => (await commands.getCommand({ id })).command!.state === CommandState.SENT;
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline && !(await sent())) await sleep(50);
      if (await sent()) unread.push(id);
      // The next burst starts, and the control plane dies in the middle of it.
      allowed = next + 40;
      await sleep(300 + Math.random() * 700);
      await kill();
      const exited = new Promise((resolve) => frozen.child.once("exit", resolve));
      frozen.child.kill("SIGKILL");
      await exited;
      faults.push("SIGKILL");
      await sleep(200 + Math.random() * 800);
      await start();
      frozen.child = startAgent(frozen.stateDir, frozen.seed);
      excluded = -1;
    }
    await sleep(1000);
    queueing = false;
    await queuers;

    const ids = [...queued.values()];
    const prisma = await openReader(db);
    try {
      const deadline = Date.now() + 150_000;
      let open = ids.length;
      while (Date.now() < deadline) {
        const rows = await prisma.query("SELECT count(*)::int AS n FROM commands WHERE state IN ('pending', 'sent')");
        open = (rows.rows[0] as { n: number }).n;
        if (open === 0) break;
        await sleep(500);
      }
      const rows = (
        await prisma.query(
          `SELECT c.id::text, c.state, c.delivery_count, (SELECT count(*)::int FROM command_results r WHERE r.command_id = c.id) AS results,
                  convert_from(c.action, 'LATIN1') AS action
             FROM commands c`,
        )
      ).rows as { id: string; state: string; delivery_count: number; results: number; action: string }[];
      const runs = new Map<string, number>();
      for (const line of await apt.argvLog()) {
        const name = /pkg-\d+/.exec(line)?.[0];
        if (name) runs.set(name, (runs.get(name) ?? 0) + 1);
      }
      const byId = new Map(rows.map((r) => [r.id, r]));
      const lost = ids.filter((id) => ["pending", "sent", "timed_out"].includes(byId.get(id)?.state ?? "missing"));
      const withoutResult = ids.filter((id) => byId.get(id)?.results !== 1);
      const twice = [...runs].filter(([, n]) => n > 1);
      const never = [...queued.keys()].map((k) => `pkg-${k.slice("burst-".length)}`).filter((name) => !runs.has(name));
      const redelivered = rows.filter((r) => r.delivery_count > 1).length;
      const unreadOnce = unread.filter((id) => (byId.get(id)?.delivery_count ?? 0) < 2);
      // Every result is stored by now (above); an agent whose last report the control plane died
      // answering learns it was taken only when it reports again, after its backoff: wait for that.
      const unacknowledged = async () => {
        const journals = await Promise.all(
          agents.map(async (a) => JSON.parse(await readFile(path.join(a.stateDir, "journal.json"), "utf8")) as { entries: { acknowledged: boolean }[] }),
        );
        return journals.flatMap((j) => j.entries).filter((e) => !e.acknowledged).length;
      };
      let unreported = await unacknowledged();
      for (const reportedBy = Date.now() + 120_000; unreported > 0 && Date.now() < reportedBy; unreported = await unacknowledged()) await sleep(500);
      console.log(
        `${backend}: ${ids.length} commands queued by ${next} creates (${retries} retried calls: ${JSON.stringify(Object.fromEntries(errors))}) across ${faults.length} faults (${faults.join(", ")}); ` +
          `${rows.length} commands stored, ${redelivered} delivered more than once (${unread.length} of them answers an agent died without reading); lost ${lost.length}, without exactly one result ${withoutResult.length}, ` +
          `run twice ${twice.length}, never run ${never.length}, unreported in journals ${unreported}`,
      );
      // One command per idempotency key, even for creates the control plane died answering.
      expect(rows).toHaveLength(ids.length);
      expect(new Set(ids).size).toBe(ids.length);
      expect(lost).toEqual([]);
      expect(withoutResult).toEqual([]);
      expect(rows.filter((r) => r.state !== "succeeded").map((r) => `${r.id} ${r.state}`)).toEqual([]);
      expect(twice).toEqual([]);
      expect(never).toEqual([]);
      expect(unreported).toBe(0);
      // A delivery nobody read was made again.
      expect(unread.length).toBeGreaterThan(0);
      expect(unreadOnce).toEqual([]);
    } finally {
      await prisma.end();
    }
  });
});

// A plain connection for the checks: to PostgreSQL directly, or through the control plane's own
// embedded database socket in <data dir>/run (its process must be running).
async function openReader(db: FreshDatabase): Promise<pg.Client> {
  const client = db.databaseUrl
    ? new pg.Client({ connectionString: db.databaseUrl })
    : new pg.Client({ host: path.join(db.dataDir, "run"), port: 5432, user: "postgres", database: "postgres" });
  await client.connect();
  return client;
}

import { Command, InvalidArgumentError } from "commander";
import { startControlPlane, startEchoServer, type ChildServer } from "./servers.ts";
import { agentClient, formatErrors, hammer, newStats, planAgents, registerWithRetry, SimAgent } from "./simulator.ts";
import { formatUsage, ms, printCommand, printMachineFacts, watchProcess, type ServerUsage } from "./stats.ts";

// Benchmark 1: idle authenticated PollCommands on the real control plane against the floor, a
// bare connect-node server on the same listener answering the same RPC with an empty response.
// Same load generator, same client count, same run; loopback only.
const number = (min: number) => (text: string) => {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`must be a number ≥ ${min}`);
  return n;
};
const o = new Command("bench-poll")
  .description("Benchmark 1: idle PollCommands on the control plane vs a bare connect-node echo server (ratio, target ≥ 0.7).")
  .option("--clients <k>", "concurrent clients, each on its own HTTP/2 connection", number(1), 32)
  .option("--duration <seconds>", "measured time per target", number(1), 10)
  .option("--warmup <seconds>", "unmeasured time before each measurement", number(0), 2)
  .option("--database-url <url>", "also run on a fresh database on this PostgreSQL server (default: DATABASE_URL or TEST_DATABASE_URL)")
  .option("--no-embedded", "skip the embedded PGlite run")
  .parse()
  .opts<{ clients: number; duration: number; warmup: number; databaseUrl?: string; embedded: boolean }>();
const postgresUrl = o.databaseUrl ?? process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL;
const timing = { warmupMs: o.warmup * 1000, durationMs: o.duration * 1000 };

printCommand();
printMachineFacts();
console.log(`clients: ${o.clients}, warm-up ${o.warmup} s, measured ${o.duration} s per target`);

interface Row {
  target: string;
  rps: number;
  p50: number;
  p99: number;
  errors: string;
  server: ServerUsage;
  loadGenCores: number;
}

async function measure(target: string, server: ChildServer, call: (i: number) => Promise<unknown>): Promise<Row> {
  const watch = watchProcess(server.pid);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await hammer(o.clients, call, timing);
  const cpu = process.cpuUsage(cpu0);
  const usage = await watch.stop();
  const row = {
    target,
    rps: r.requestsPerSecond,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: formatErrors(r.errors),
    server: usage,
    loadGenCores: (cpu.user + cpu.system) / 1000 / (performance.now() - t0),
  };
  console.log(
    `${target}: ${row.rps.toFixed(0)} req/s, p50 ${ms(row.p50)}, p99 ${ms(row.p99)}, errors ${row.errors}; ${formatUsage(usage)}; load generator ${(row.loadGenCores * 100).toFixed(0)} % of one core`,
  );
  return row;
}

const rows: Row[] = [];
{
  const echo = await startEchoServer();
  const conns = Array.from({ length: o.clients }, () => agentClient(echo.url));
  const status = { agentVersion: "0.1.0-sim", configRevision: 1n, trustedKeysRevision: 1n };
  const headers = { authorization: `Bearer ${"x".repeat(200)}`, "x-machine-id": "0".repeat(64) };
  try {
    rows.push(
      await measure("echo floor", echo, (i) => {
        const nonce = new Uint8Array(16);
        crypto.getRandomValues(nonce);
        return conns[i]!.client.pollCommands({ nonce, waitSeconds: 0, status }, { headers, timeoutMs: 30_000 });
      }),
    );
  } finally {
    conns.forEach((c) => c.close());
    await echo.stop();
  }
}

const backends: (string | undefined)[] = [];
if (o.embedded) backends.push(undefined);
if (postgresUrl) backends.push(postgresUrl);
for (const pg of backends) {
  const cp = await startControlPlane({ postgresUrl: pg });
  const conns = Array.from({ length: o.clients }, () => agentClient(cp.url));
  try {
    const token = await cp.registrationToken(o.clients);
    const stats = newStats();
    const plans = planAgents({ agents: o.clients, seed: 1, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
    const agents = plans.map((p, i) => new SimAgent(p, conns[i]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
    for (const a of agents) await registerWithRetry(a, token, stats);
    rows.push(await measure(`control plane (${cp.backend})`, cp, (i) => agents[i]!.poll(0)));
  } finally {
    conns.forEach((c) => c.close());
    await cp.stop();
  }
}

const floor = rows[0]!.rps;
console.log("\n| target | req/s | ratio to floor | p50 | p99 | server CPU (cores) | server RSS | errors |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(
    `| ${r.target} | ${r.rps.toFixed(0)} | ${(r.rps / floor).toFixed(2)} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.server ? r.server.cpuCores.toFixed(2) : "n/a"} | ${r.server ? r.server.rssMb.toFixed(0) + " MB" : "n/a"} | ${r.errors} |`,
  );
}
for (const r of rows.slice(1)) console.log(`ratio ${r.target} / floor: ${(r.rps / floor).toFixed(2)} (target ≥ 0.7)`);

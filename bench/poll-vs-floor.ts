import { Command } from "commander";
import { number } from "./options.ts";
import { startControlPlane, startEchoServer, type ChildServer } from "./servers.ts";
import { agentClient, floorPolls, formatErrors, hammer, newStats, planAgents, registerWithRetry, SimAgent } from "./simulator.ts";
import { ms, printCommand, printMachineFacts, summarize, watchProcess } from "./stats.ts";

// Benchmark 1: idle authenticated PollCommands on the real control plane against the floor, a
// bare connect-node server on the same listener answering the same RPC with an empty response.
// Same load generator, same client count, same run; loopback only. The targets take turns in
// short rounds (in a rotating order) rather than one long measurement each, so a machine whose
// speed drifts (shared or virtual) weighs on all of them alike.
const o = new Command("bench-poll")
  .description("Benchmark 1: idle PollCommands on the control plane vs a bare connect-node echo server (ratio, target ≥ 0.9, issue 18).")
  .option("--clients <k>", "concurrent clients, each on its own HTTP/2 connection", number(1), 32)
  .option("--duration <seconds>", "measured time per target, over all rounds", number(1), 20)
  .option("--rounds <n>", "turns each target takes", number(1), 5)
  .option("--warmup <seconds>", "unmeasured time before each turn", number(0), 1)
  .option("--database-url <url>", "also run on a fresh database on this PostgreSQL server (default: DATABASE_URL or TEST_DATABASE_URL)")
  .option("--no-embedded", "skip the embedded PGlite run")
  .parse()
  .opts<{ clients: number; duration: number; rounds: number; warmup: number; databaseUrl?: string; embedded: boolean }>();
const postgresUrl = o.databaseUrl ?? process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL;
const turn = { warmupMs: o.warmup * 1000, durationMs: (o.duration * 1000) / o.rounds };

printCommand();
printMachineFacts();
console.log(`clients: ${o.clients}; ${o.rounds} rounds, each target measured ${(turn.durationMs / 1000).toFixed(1)} s per round after ${o.warmup} s of warm-up`);

interface Target {
  name: string;
  server: ChildServer;
  call: (i: number) => Promise<unknown>;
  close(): Promise<void>;
  // Per round: requests per second.
  rates: number[];
  latencies: number[];
  errors: Map<string, number>;
  cpuCoreSeconds: number;
  seconds: number;
  rssMb: number;
  loadGenCoreSeconds: number;
}

const targets: Target[] = [];
const newTarget = (name: string, server: ChildServer, call: Target["call"], close: Target["close"]): Target => ({
  name, server, call, close, rates: [], latencies: [], errors: new Map(), cpuCoreSeconds: 0, seconds: 0, rssMb: 0, loadGenCoreSeconds: 0,
});
try {
  {
    const echo = await startEchoServer();
    const conns = Array.from({ length: o.clients }, () => agentClient(echo.url));
    const poll = floorPolls(200);
    targets.push(
      newTarget(
        "echo floor",
        echo,
        (i) => poll(conns[i]!.client, 0, { timeoutMs: 30_000 }),
        async () => {
          conns.forEach((c) => c.close());
          await echo.stop();
        },
      ),
    );
  }
  const backends: (string | undefined)[] = [];
  if (o.embedded) backends.push(undefined);
  if (postgresUrl) backends.push(postgresUrl);
  for (const pg of backends) {
    const cp = await startControlPlane({ postgresUrl: pg });
    const conns = Array.from({ length: o.clients }, () => agentClient(cp.url));
    const close = async () => {
      conns.forEach((c) => c.close());
      await cp.stop();
    };
    try {
      const token = await cp.registrationToken(o.clients);
      const stats = newStats();
      const plans = planAgents({ agents: o.clients, seed: 1, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
      const agents = plans.map((p, i) => new SimAgent(p, conns[i]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
      for (const a of agents) await registerWithRetry(a, token, stats);
      targets.push(newTarget(`control plane (${cp.backend})`, cp, (i) => agents[i]!.poll(0), close));
    } catch (err) {
      await close();
      throw err;
    }
  }

  for (let round = 0; round < o.rounds; round++) {
    // Rotating order: each target goes first in some round.
    const order = targets.map((_, k) => targets[(k + round) % targets.length]!);
    for (const t of order) {
      const watch = watchProcess(t.server.pid);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const r = await hammer(o.clients, t.call, turn);
      const cpu = process.cpuUsage(cpu0);
      const elapsed = (performance.now() - t0) / 1000;
      const usage = await watch.stop();
      t.rates.push(r.requestsPerSecond);
      t.latencies.push(...r.latencySamples);
      for (const [code, n] of r.errors) t.errors.set(code, (t.errors.get(code) ?? 0) + n);
      if (usage) {
        t.cpuCoreSeconds += usage.cpuCores * elapsed;
        t.rssMb = usage.rssMb;
      }
      t.seconds += elapsed;
      t.loadGenCoreSeconds += (cpu.user + cpu.system) / 1e6;
    }
    console.log(`round ${round + 1}: ${targets.map((t) => `${t.name} ${t.rates.at(-1)!.toFixed(0)} req/s`).join(", ")}`);
  }
} finally {
  for (const t of targets.reverse()) await t.close().catch(() => {});
  targets.reverse();
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const floor = targets[0]!;
console.log("\n| target | req/s (mean of rounds) | ratio to floor | ratio per round (min–max) | p50 | p99 | server CPU (cores) | server RSS | load generator (cores) | errors |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const t of targets) {
  const perRound = t.rates.map((r, k) => r / floor.rates[k]!);
  const l = summarize(t.latencies);
  console.log(
    `| ${t.name} | ${mean(t.rates).toFixed(0)} | ${(mean(t.rates) / mean(floor.rates)).toFixed(2)} | ${Math.min(...perRound).toFixed(2)}–${Math.max(...perRound).toFixed(2)} | ` +
      `${ms(l.p50)} | ${ms(l.p99)} | ${(t.cpuCoreSeconds / t.seconds).toFixed(2)} | ${t.rssMb.toFixed(0)} MB | ${(t.loadGenCoreSeconds / t.seconds).toFixed(2)} | ${formatErrors(t.errors)} |`,
  );
}
// Server CPU per request: steadier than req/s where the load generator, on the same cores,
// is the limit (one core of two here).
const cpuPerRequest = (t: (typeof targets)[number]) => (t.cpuCoreSeconds * 1000) / (mean(t.rates) * t.seconds);
for (const t of targets.slice(1)) {
  console.log(
    `ratio ${t.name} / floor: ${(mean(t.rates) / mean(floor.rates)).toFixed(2)} (target ≥ 0.9); ` +
      `server CPU per poll ${cpuPerRequest(t).toFixed(3)} ms against the floor's ${cpuPerRequest(floor).toFixed(3)} ms (floor / control plane: ${(cpuPerRequest(floor) / cpuPerRequest(t)).toFixed(2)})`,
  );
}

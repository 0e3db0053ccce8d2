import { Code, ConnectError } from "@connectrpc/connect";
import { Command } from "commander";
import { retryAfterMs } from "../agent/src/errors.ts";
import { integer } from "./options.ts";
import { startControlPlane } from "./servers.ts";
import { agentClient, errorCode, newStats, planAgents, SimAgent, type SimStats } from "./simulator.ts";
import { percentile, printCommand, printMachineFacts, sampleProcess, watchProcess } from "./stats.ts";

// Benchmark 9 (issue 18, item 2): enrolment herds. N agents, each with its own key, machine ID,
// HTTP/2 connection and source address (127.x.y.z: loopback answers for all of 127.0.0.0/8), so
// the control plane's per-address rate limits, left at their defaults, see N machines. Three
// herds, each every agent at once:
//   1. enrolment from scratch: every agent's first Register;
//   2. after an outage, every agent renews;
//   3. after an outage, every agent registers again (a re-registration proven with its key).
// Agents retry as the real agent does (agent/src/loop.ts): Unavailable, ResourceExhausted and
// DeadlineExceeded after max(backoff, the server's retry-after hint spread up to twice it).
// Prints, per herd: how long until every agent was through, the calls' outcomes by code, the
// calls that timed out (there must be none), the server's CPU per successful call and its RSS.
const o = new Command("bench-enrol")
  .description("Benchmark 9: enrolment herds with per-address rate limits at their defaults.")
  .option("--agents <n>", "agents", integer(1), 10_000)
  .option("--agents-per-token <n>", "agents enrolling with one registration token (the per-token limit is 300 a minute, 600 at once)", integer(1), 500)
  .option("--database-url <url>", "run on a fresh database on this PostgreSQL server (default: embedded PGlite)")
  .option("--seed <n>", "seed for identities", integer(0), 1)
  .option("--cost-agents <n>", "first, this many other agents register 16 at a time over 64 open connections: the server's CPU per Register without connection set-up", integer(0), 2000)
  .option("--herds <list>", "the herds after the first enrolment: renew, reregister", "renew,reregister")
  .parse()
  .opts<{ agents: number; agentsPerToken: number; costAgents: number; databaseUrl?: string; seed: number; herds: string }>();

printCommand();
printMachineFacts();

// The control plane's own defaults (config.ts): bench/servers.ts turns them off for the other benchmarks.
const DEFAULT_LIMITS = {
  REDFLAG_REGISTER_RATE_PER_ADDRESS: "60:120",
  REDFLAG_REGISTER_RATE_PER_TOKEN: "300:600",
  REDFLAG_RENEW_RATE_PER_ADDRESS: "600:1200",
};

const addressOf = (i: number) => `127.${1 + ((i >> 16) & 0xff)}.${(i >> 8) & 0xff}.${i & 0xff}`;

interface Herd {
  outcomes: Map<string, number>;
  timeouts: number;
  latencies: number[];
}

// Every agent at once: `call` on its own connection, retried like the agent, until it succeeds
// or fails for good. Returns when the last one is through.
async function herd(name: string, agents: SimAgent[], clients: ReturnType<typeof agentClient>[], call: (a: SimAgent) => Promise<void>, pid: number) {
  const h: Herd = { outcomes: new Map(), timeouts: 0, latencies: [] };
  const count = (k: string) => h.outcomes.set(k, (h.outcomes.get(k) ?? 0) + 1);
  const before = await sampleProcess(pid);
  const watch = watchProcess(pid);
  const t0 = performance.now();
  let failed = 0;
  await Promise.all(
    agents.map(async (agent) => {
      let backoff = 1000;
      for (;;) {
        const started = performance.now();
        try {
          await call(agent);
          h.latencies.push(performance.now() - started);
          count("OK");
          return;
        } catch (err) {
          const code = ConnectError.from(err).code;
          count(errorCode(err));
          if (code === Code.DeadlineExceeded) h.timeouts++;
          if (code !== Code.Unavailable && code !== Code.ResourceExhausted && code !== Code.DeadlineExceeded) {
            failed++;
            return;
          }
          const wait = Math.max(backoff * (0.5 + agent.plan.random()), retryAfterMs(err, agent.plan.random));
          backoff = Math.min(backoff * 2, 60_000);
          await new Promise((r) => setTimeout(r, wait));
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const after = await sampleProcess(pid);
  const usage = await watch.stop();
  for (const c of clients) c.close();
  const ok = h.outcomes.get("OK") ?? 0;
  const cpuMs = before && after ? ((after.cpuSeconds - before.cpuSeconds) * 1000) / Math.max(1, ok) : NaN;
  const sorted = h.latencies.sort((a, b) => a - b);
  console.log(
    `${name}: ${ok} of ${agents.length} through in ${seconds.toFixed(1)} s (${(ok / seconds).toFixed(0)}/s); ` +
      `calls by outcome: ${[...h.outcomes].map(([k, v]) => `${k} ×${v}`).join(", ")}; timed out: ${h.timeouts}; failed for good: ${failed}; ` +
      `successful call p50 ${percentile(sorted, 50).toFixed(0)} ms, p99 ${percentile(sorted, 99).toFixed(0)} ms; ` +
      `server ${cpuMs.toFixed(2)} ms CPU per success, ${usage ? `${(usage.cpuCores * 100).toFixed(0)} % of one core, RSS ${usage.rssMb.toFixed(0)} MB (peak ${usage.peakRssMb.toFixed(0)} MB)` : "usage not measured"}`,
  );
}

// Register alone: `n` agents (seeds apart from the herd's), 16 calls in flight on 64 open
// connections from 64 addresses (n / 64 each, within the per-address burst of 120), 500 to a
// token (within the per-token burst of 600).
async function registerCost(n: number) {
  const conns = Array.from({ length: 64 }, (_, i) => agentClient(cp.url, { localAddress: `127.254.0.${i + 1}` }));
  const tokens: string[] = [];
  for (let left = n; left > 0; left -= 500) tokens.push(await cp.registrationToken(Math.min(left, 500)));
  const stats = newStats();
  const plans = planAgents({ agents: n, seed: o.seed + 1_000_000, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
  const agents = plans.map((p, i) => new SimAgent(p, conns[i % 64]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
  // Warm the connections (and the server's code) with a tenth of them, then measure the rest.
  const warm = Math.ceil(n / 10);
  const run = async (list: SimAgent[]) => {
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < list.length) {
        const agent = list[next++]!;
        await agent.register(tokens[Math.floor(agent.plan.index / 500)]!);
      }
    }));
  };
  await run(agents.slice(0, warm));
  const before = await sampleProcess(cp.pid);
  const t0 = performance.now();
  await run(agents.slice(warm));
  const seconds = (performance.now() - t0) / 1000;
  const after = await sampleProcess(cp.pid);
  for (const c of conns) c.close();
  const measured = n - warm;
  const cpuMs = before && after ? ((after.cpuSeconds - before.cpuSeconds) * 1000) / measured : NaN;
  console.log(`0. Register alone: ${measured} in ${seconds.toFixed(1)} s (${(measured / seconds).toFixed(0)}/s), 16 in flight on open connections; server ${cpuMs.toFixed(2)} ms CPU per Register`);
}

const cp = await startControlPlane({ postgresUrl: o.databaseUrl, env: DEFAULT_LIMITS });
console.log(`control plane: started here (pid ${cp.pid}, ${cp.backend} database), per-address and per-token limits at their defaults; ${o.agents} agents, ${o.agentsPerToken} per token`);
try {
  const tokens: string[] = [];
  for (let left = o.agents; left > 0; left -= o.agentsPerToken) tokens.push(await cp.registrationToken(Math.min(left, o.agentsPerToken)));
  const stats: SimStats = newStats();
  const plans = planAgents({ agents: o.agents, seed: o.seed, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
  // Each herd gets fresh connections: after an outage every agent connects again.
  const connect = () => plans.map((p) => agentClient(cp.url, { localAddress: addressOf(p.index) }));
  let clients = connect();
  const agents = plans.map((p, i) => new SimAgent(p, clients[i]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
  const herds = new Set(o.herds.split(","));
  const withClients = (next: ReturnType<typeof connect>) => agents.forEach((a, i) => a.useClient(next[i]!.client));

  if (o.costAgents > 0) await registerCost(o.costAgents);
  await herd("1. enrolment from scratch (first Register)", agents, clients, (a) => a.register(tokens[Math.floor(a.plan.index / o.agentsPerToken)]!), cp.pid);
  if (herds.has("renew")) {
    withClients((clients = connect()));
    await herd("2. after an outage, every agent renews", agents, clients, (a) => a.renew(), cp.pid);
  }
  if (herds.has("reregister")) {
    withClients((clients = connect()));
    await herd("3. after an outage, every agent registers again", agents, clients, (a) => a.register(tokens[Math.floor(a.plan.index / o.agentsPerToken)]!), cp.pid);
  }
  const alive = await fetch(`${cp.url}/healthz`).then((r) => r.ok, () => false);
  console.log(`control plane still answering /healthz: ${alive}`);
} finally {
  await cp.stop();
}

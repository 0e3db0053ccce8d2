import type { MessageInitShape } from "@bufbuild/protobuf";
import { UpdateSeverity, type PackageUpdateSchema } from "@redflag/gen/command_pb";
import { Command } from "commander";
import { integer } from "./options.ts";
import { startControlPlane } from "./servers.ts";
import { agentClient, countError, formatErrors, newStats, planAgents, registerWithRetry, SimAgent } from "./simulator.ts";
import { printCommand, printMachineFacts, seededRandom, watchProcess } from "./stats.ts";

// Benchmark 7 (issue 18, item 6): scan reports are cheap. N agents each report a scheduled scan
// of U pending updates, back to back; one report in ten differs from the agent's last (a new
// version of one update, as when a repository publishes), the rest repeat it, as most scheduled
// scans of a real fleet do. The floor, in the same run and against the same control plane: idle
// polls (PollCommands with nothing queued) from the same agents at the same concurrency, the
// cheapest authenticated call there is. Prints both rates, their ratio and the server's CPU per call.
const o = new Command("bench-scan-reports")
  .description("Benchmark 7: ReportResults carrying one scheduled scan each (mostly unchanged) against idle polls, same run.")
  .option("--agents <n>", "concurrent agents", integer(1), 32)
  .option("--updates <n>", "updates in each scan", integer(1), 60)
  .option("--changed-percent <p>", "share of reports that differ from the agent's previous one", integer(0), 10)
  .option("--seconds <s>", "length of each measured phase", integer(1), 15)
  .option("--warmup <s>", "unmeasured seconds before each phase", integer(0), 3)
  .option("--database-url <url>", "run on a fresh database on this PostgreSQL server (default: embedded PGlite)")
  .option("--seed <n>", "seed for identities and changes", integer(0), 1)
  .parse()
  .opts<{ agents: number; updates: number; changedPercent: number; seconds: number; warmup: number; databaseUrl?: string; seed: number }>();

printCommand();
printMachineFacts();

type Update = MessageInitShape<typeof PackageUpdateSchema>;
const scanOf = (agent: number, updates: number): Update[] =>
  Array.from({ length: updates }, (_, i) => ({
    source: "apt",
    name: `pkg-${String(i).padStart(4, "0")}`,
    architecture: "amd64",
    currentVersion: "1.0",
    availableVersion: `2.0.${agent % 7}`,
    repository: i % 5 === 0 ? "bookworm-security" : "bookworm",
    severity: i % 5 === 0 ? UpdateSeverity.IMPORTANT : UpdateSeverity.UNKNOWN,
    security: i % 5 === 0,
    sizeBytes: BigInt(1000 + i),
    rebootRequired: false,
  }));

const cp = await startControlPlane({ postgresUrl: o.databaseUrl });
console.log(`control plane: started here (pid ${cp.pid}, ${cp.backend} database); ${o.agents} agents, ${o.updates} updates per scan, ${o.changedPercent} % of reports changed`);
const stats = newStats();
const conns = Array.from({ length: o.agents }, () => agentClient(cp.url));
try {
  const token = await cp.registrationToken(o.agents);
  const plans = planAgents({ agents: o.agents, seed: o.seed, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
  const agents = plans.map((p, i) => new SimAgent(p, conns[i]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
  for (const agent of agents) await registerWithRetry(agent, token, stats);
  const scans = agents.map((_, i) => scanOf(i, o.updates));
  // Every agent's first scan: the view the measured reports repeat or change.
  await Promise.all(agents.map((agent, i) => agent.reportScan(scans[i]!)));

  // Runs `call` back to back on every agent for the warm-up, then for the measured seconds.
  const phase = async (name: string, call: (agent: SimAgent, i: number) => Promise<boolean>) => {
    const run = async (seconds: number) => {
      const until = Date.now() + seconds * 1000;
      let done = 0;
      await Promise.all(
        agents.map(async (agent, i) => {
          while (Date.now() < until) {
            try {
              if (await call(agent, i)) done++;
            } catch (err) {
              countError(stats, name, err);
            }
          }
        }),
      );
      return done;
    };
    await run(o.warmup);
    const watch = watchProcess(cp.pid);
    const t0 = performance.now();
    const done = await run(o.seconds);
    const seconds = (performance.now() - t0) / 1000;
    const usage = await watch.stop();
    const rate = done / seconds;
    const cpuMs = usage ? (usage.cpuCores * seconds * 1000) / Math.max(1, done) : NaN;
    console.log(`${name}: ${done} in ${seconds.toFixed(1)} s = ${rate.toFixed(0)}/s; server ${usage ? `${(usage.cpuCores * 100).toFixed(0)} % of one core, ${cpuMs.toFixed(2)} ms CPU per call, RSS ${usage.rssMb.toFixed(0)} MB` : "not measured"}`);
    return { rate, cpuMs };
  };

  const floor = await phase("idle polls (floor)", async (agent) => {
    await agent.poll(0);
    return true;
  });
  const random = seededRandom(o.seed);
  let changed = 0;
  let generation = 0;
  const reports = await phase("scan reports", async (agent, i) => {
    if (random() * 100 < o.changedPercent) {
      const scan = scans[i]!;
      const k = Math.floor(random() * scan.length);
      scan[k] = { ...scan[k]!, availableVersion: `3.${++generation}` };
      changed++;
    }
    return agent.reportScan(scans[i]!);
  });
  console.log(`changed reports: ${changed}`);
  console.log(
    `scan reports: ${reports.rate.toFixed(0)}/s = ${(reports.rate / floor.rate).toFixed(2)} × the idle-poll floor (${floor.rate.toFixed(0)}/s); ` +
      `server CPU per report ${reports.cpuMs.toFixed(2)} ms, per idle poll ${floor.cpuMs.toFixed(2)} ms`,
  );
  if (stats.errors.size > 0) console.log(`errors: ${formatErrors(stats.errors)}`);
} finally {
  for (const c of conns) c.close();
  await cp.stop();
}

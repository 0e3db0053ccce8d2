import { Command } from "commander";
import { integer, number } from "./options.ts";
import { startControlPlane, type BenchControlPlane } from "./servers.ts";
import { simulateInProcesses } from "./processes.ts";
import { formatErrors, simulate } from "./simulator.ts";
import { bound, fetchMetrics, openFileDescriptors, formatUsage, histogramQuantiles, metricSample, ms, printCommand, printMachineFacts, rpcHistogram, watchProcess } from "./stats.ts";

// `npm run bench:sim -- [options]`: N simulated agents against a control plane, either one at
// --url (with --token, and --server-pid for its CPU and RSS) or one this command starts.

const program = new Command("bench-sim")
  .description("Simulate N RedFlag agents polling one control plane, and report polls/s, latency, errors and server CPU/RSS.")
  .option("--url <url>", "control plane URL (default: start one here, on a fresh database)")
  .option("--token <secret>", "registration token (required with --url)")
  .option("--server-pid <pid>", "PID of the control plane at --url, for its CPU and RSS", number(1))
  .option("--database-url <url>", "when starting the control plane: a PostgreSQL server to create a fresh database on (default: embedded PGlite)")
  .option("--server-env <KEY=VALUE...>", "extra environment for the control plane this command starts")
  .option("--agents <n>", "simulated agents", number(1, 200_000), 100)
  .option("--start-period <seconds>", "spread registrations over this long", number(0), 10)
  .option("--duration <seconds>", "whole run, including the start period", number(1), 40)
  .option("--interval <seconds>", "poll interval of interval-mode agents", number(0), 5)
  .option("--jitter <percent>", "proportional jitter of each interval", number(0, 100), 20)
  .option("--long-poll-share <fraction>", "share of agents holding long-polls", number(0, 1), 0)
  .option("--wait <seconds>", "long-poll wait_seconds", number(1, 60), 30)
  .option("--heartbeat-share <fraction>", "share of agents in heartbeat mode", number(0, 1), 0)
  .option("--heartbeat-interval <seconds>", "poll interval in heartbeat mode", number(0), 2)
  .option("--no-verify", "skip verifying command signatures")
  .option("--renew-at <fraction>", "renew the access token at this share of its life", number(0, 1), 0.8)
  .option("--agents-per-connection <n>", "agents sharing one HTTP/2 connection", number(1), 1)
  .option("--connections-per-agent <n>", "HTTP/2 connections of each agent, each polling at --interval (many connections with fewer Registers)", integer(1), 1)
  .option("--register-concurrency <n>", "at most this many Register calls in flight (0: each agent registers at its start time)", number(0), 0)
  .option("--seed <n>", "seed for the schedule, modes and identities", number(0), 1)
  .option("--processes <n>", "split the agents over this many simulator processes (file descriptors are per process: each holds its share of the connections)", integer(1), 1)
  .parse();

const o = program.opts<{
  url?: string;
  token?: string;
  serverPid?: number;
  databaseUrl?: string;
  serverEnv?: string[];
  agents: number;
  startPeriod: number;
  duration: number;
  interval: number;
  jitter: number;
  longPollShare: number;
  wait: number;
  heartbeatShare: number;
  heartbeatInterval: number;
  verify: boolean;
  renewAt: number;
  agentsPerConnection: number;
  connectionsPerAgent: number;
  registerConcurrency: number;
  seed: number;
  processes: number;
}>();
if (o.url && !o.token) program.error("--url needs --token (a registration token with enough seats)");
if (o.agentsPerConnection > 1 && o.connectionsPerAgent > 1) program.error("--agents-per-connection and --connections-per-agent: one or the other");

printCommand();
printMachineFacts();
let cp: BenchControlPlane | undefined;
let url = o.url;
let token = o.token;
let pid = o.serverPid;
if (!url) {
  const env = Object.fromEntries((o.serverEnv ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
  cp = await startControlPlane({ postgresUrl: o.databaseUrl, env });
  url = cp.url;
  pid = cp.pid;
  token = await cp.registrationToken(Math.min(o.agents + 10, 100_000));
  console.log(`control plane: started here (pid ${cp.pid}, ${cp.backend} database)`);
}
const abort = new AbortController();
process.once("SIGINT", () => abort.abort());
try {
  const watch = watchProcess(pid);
  // The steady state: from the end of the start period (registrations done) to the end.
  let steady: ReturnType<typeof watchProcess> | undefined;
  // The server's /metrics at the start of the steady state (prom-client also resets its
  // event-loop delay histogram on every scrape, so the one at the end covers just that window).
  let metricsAtSteady: Promise<string | undefined> | undefined;
  const steadyTimer = setTimeout(() => {
    steady = watchProcess(pid);
    metricsAtSteady = fetchMetrics(url!).catch(() => undefined);
  }, o.startPeriod * 1000);
  const cpu0 = process.cpuUsage();
  const options = {
    url,
    token: token!,
    agents: o.agents,
    seed: o.seed,
    startPeriodMs: o.startPeriod * 1000,
    durationMs: o.duration * 1000,
    intervalMs: o.interval * 1000,
    jitterPercent: o.jitter,
    longPollShare: o.longPollShare,
    waitSeconds: o.wait,
    heartbeatShare: o.heartbeatShare,
    heartbeatIntervalMs: o.heartbeatInterval * 1000,
    verify: o.verify,
    renewAtFraction: o.renewAt,
    agentsPerConnection: o.agentsPerConnection,
    connectionsPerAgent: o.connectionsPerAgent,
    registerConcurrency: o.registerConcurrency,
  };
  const { result: r, cpuSeconds: workersCpuSeconds } =
    o.processes > 1 ? await simulateInProcesses(options, o.processes, abort.signal) : { result: await simulate(options, abort.signal), cpuSeconds: 0 };
  const fds = pid === undefined ? undefined : await openFileDescriptors(pid);
  const usage = await watch.stop();
  clearTimeout(steadyTimer);
  const steadyUsage = await steady?.stop();
  const atEnd = await fetchMetrics(url!).catch(() => undefined);
  const atSteady = await metricsAtSteady;
  const cpu = process.cpuUsage(cpu0);
  const s = r.stats;
  console.log(`agents: ${r.registered}/${r.agents} registered, ${s.renewals} renewals, run ${r.elapsedSeconds.toFixed(1)} s`);
  console.log(`polls: ${r.polls} (${s.longPolls} long-polls), ${r.pollsPerSecond.toFixed(1)} polls/s after the start period`);
  console.log(`latency after the start period (immediate polls, n=${r.latency.count}): p50 ${ms(r.latency.p50)}, p95 ${ms(r.latency.p95)}, p99 ${ms(r.latency.p99)}, max ${ms(r.latency.max)}`);
  console.log(`commands: ${s.commandsReceived} received and verified, ${s.resultsAcknowledged} results acknowledged, ${s.rejectedCommands} rejected`);
  console.log(`errors by code: ${formatErrors(s.errors)}`);
  for (const [where, message] of s.errorMessages) console.log(`  ${where}, first seen as: ${message}`);
  console.log(`whole run: ${formatUsage(usage)}; simulator ${(((cpu.user + cpu.system) / 1e6 + workersCpuSeconds) * 100 / r.elapsedSeconds).toFixed(0)} % of one core${o.processes > 1 ? ` (${o.processes} processes)` : ""}`);
  if (steadyUsage) console.log(`after the start period: ${formatUsage(steadyUsage)}`);
  if (fds !== undefined || atEnd) {
    // What each connection costs the server: its file descriptors (one per connection, against
    // its `ulimit -n`) and, from its /metrics, the memory V8 and the native side hold.
    const mb = (series: string) => `${(metricSample(atEnd ?? "", series) / 2 ** 20).toFixed(0)} MB`;
    const memory = atEnd ? `, JS heap ${mb("nodejs_heap_size_used_bytes")} used of ${mb("nodejs_heap_size_total_bytes")}, external ${mb("nodejs_external_memory_bytes")}` : "";
    console.log(`server at the end: ${fds ?? "?"} open file descriptors${memory}`);
  }
  if (atSteady && atEnd) {
    const h = histogramQuantiles(rpcHistogram(atSteady, "PollCommands"), rpcHistogram(atEnd, "PollCommands"), [0.5, 0.95, 0.99]);
    console.log(
      `server-side PollCommands latency after the start period (its /metrics histogram, n=${h.count}, long-polls included): ` +
        `p50 ${bound(h.bounds[0]!)}, p95 ${bound(h.bounds[1]!)}, p99 ${bound(h.bounds[2]!)}`,
    );
    if (o.longPollShare > 0) {
      // The handlers' own time: a held long-poll ends at its wait (--wait), so the calls in the
      // buckets up to half of it are every poll that was not held empty to its end (the run
      // queues no commands).
      const upTo = o.wait / 2;
      const answered = histogramQuantiles(rpcHistogram(atSteady, "PollCommands"), rpcHistogram(atEnd, "PollCommands"), [0.5, 0.95, 0.99], upTo);
      console.log(
        `server-side PollCommands latency of the calls not held to their wait (answered within ${upTo} s, n=${answered.count}): ` +
          `p50 ${bound(answered.bounds[0]!)}, p95 ${bound(answered.bounds[1]!)}, p99 ${bound(answered.bounds[2]!)}`,
      );
    }
    for (const method of ["Renew", "ReportResults", "Register"]) {
      const m = histogramQuantiles(rpcHistogram(atSteady, method), rpcHistogram(atEnd, method), [0.5, 0.99]);
      if (m.count > 0) console.log(`server-side ${method} latency after the start period (n=${m.count}): p50 ${bound(m.bounds[0]!)}, p99 ${bound(m.bounds[1]!)}`);
    }
  }
  if (atSteady && atEnd) {
    // What a poll waits before the server's event loop reaches it (GC pauses, other work): not
    // in the histogram above, which starts when the call is picked up.
    const lag = (q: string) => ms(metricSample(atEnd, `nodejs_eventloop_lag_${q}_seconds`) * 1000);
    console.log(
      `server event-loop delay after the start period (sampled every 10 ms, which it includes): p50 ${lag("p50")}, p99 ${lag("p99")}, max ${lag("max")}`,
    );
    const gc = (kind: string) => {
      const series = (what: string) => `nodejs_gc_duration_seconds_${what}{kind="${kind}"}`;
      const n = metricSample(atEnd, series("count")) - metricSample(atSteady, series("count"));
      const seconds = metricSample(atEnd, series("sum")) - metricSample(atSteady, series("sum"));
      return `${n} ${kind} (${n > 0 ? ms((seconds * 1000) / n) : "–"} each)`;
    };
    console.log(`server garbage collections after the start period: ${gc("minor")}, ${gc("major")}`);
  }
} finally {
  await cp?.stop();
}

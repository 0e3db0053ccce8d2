import { toBinary } from "@bufbuild/protobuf";
import { CommandSchema, type Command as AgentCommand } from "@redflag/gen/command_pb";
import * as ed from "@noble/ed25519";
import { COMMAND_TYPE, newSecretKey, pae, signEnvelope } from "@redflag/common/signing/envelope";
import { Command } from "commander";
import { setTimeout as sleep } from "node:timers/promises";
import { integer } from "./options.ts";
import { startControlPlane, startEchoServer, type BenchControlPlane } from "./servers.ts";
import { agentClient, countError, floorPolls, formatErrors, newStats, planAgents, registerWithRetry, SimAgent, type SimStats } from "./simulator.ts";
import { fetchMetrics, formatUsage, metricSample, ms, printCommand, printMachineFacts, sampleProcess, summarize, watchProcess } from "./stats.ts";

// Benchmark 4 (command throughput) and a scaled-down benchmark 3 (agents holding long-polls:
// server RSS and queue-to-delivery latency), against a control plane started here.
const o = new Command("bench-commands")
  .description("Benchmark 4: signed command deliveries/s with results reported; then long-poll delivery latency and RSS.")
  .option("--agents <n>", "agents for the throughput phase", integer(1), 50)
  .option("--commands <m>", "commands queued for the throughput phase", integer(1), 2000)
  .option("--queue-concurrency <n>", "concurrent CreateCommand calls while queueing", integer(1), 8)
  .option("--long-polls <n>", "agents holding long-polls in the latency phase (0 skips it)", integer(0), 500)
  .option("--latency-commands <n>", "commands sent one by one to long-polling agents", integer(1), 200)
  .option("--wait <seconds>", "long-poll wait_seconds", integer(1), 30)
  .option("--hold <seconds>", "keep the long-polls held this long before the latency phase, and on the floor (time to inspect the servers)", integer(0), 0)
  .option("--timeout <seconds>", "give up a phase after this long", integer(1), 60)
  .option("--no-floor", "skip the floor for the long-polls (the same calls held on a bare connect-node server)")
  .option("--database-url <url>", "run on a fresh database on this PostgreSQL server (default: embedded PGlite)")
  .option("--seed <n>", "seed for identities and agent choice", integer(0), 1)
  .parse()
  .opts<{
    agents: number;
    commands: number;
    queueConcurrency: number;
    longPolls: number;
    latencyCommands: number;
    wait: number;
    hold: number;
    timeout: number;
    floor: boolean;
    databaseUrl?: string;
    seed: number;
  }>();

printCommand();
printMachineFacts();

async function registerAll(cp: BenchControlPlane, count: number, seed: number, stats: SimStats) {
  const token = await cp.registrationToken(count);
  const plans = planAgents({ agents: count, seed, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
  const conns = plans.map(() => agentClient(cp.url));
  const agents = plans.map((p, i) => new SimAgent(p, conns[i]!.client, stats, { verify: true, renewAtFraction: 0.8 }));
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < agents.length) await registerWithRetry(agents[next++]!, token, stats);
    }),
  );
  console.log(`registered ${count} agents in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { agents, close: () => conns.forEach((c) => c.close()) };
}

async function queueMany(cp: BenchControlPlane, targets: string[], concurrency: number, onQueued?: (id: string, sentAt: number) => void) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < targets.length) {
        const agentId = targets[next++]!;
        const sentAt = performance.now();
        const res = await cp.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } });
        onQueued?.(res.command!.id, sentAt);
      }
    }),
  );
}

// A server busy taking 10,000 long-polls at once may answer /metrics late: that is "not yet".
const longPollsWaiting = (url: string) =>
  fetchMetrics(url).then(
    (text) => metricSample(text, "redflag_long_polls_waiting"),
    () => 0,
  );
// A server still busy with thousands of calls may answer /metrics late: its heap is then "n/a".
async function serverMemory(url: string) {
  const text = await fetchMetrics(url).catch(() => "");
  const mb = (series: string) => Math.round(metricSample(text, series) / 2 ** 20);
  return { heapUsed: mb("nodejs_heap_size_used_bytes"), heapTotal: mb("nodejs_heap_size_total_bytes"), external: mb("nodejs_external_memory_bytes") };
}

// What the control plane's RSS was with every long-poll held, and the length of its access
// tokens (the floor's clients send headers of the same size).
let heldRssMb: number | undefined;
// RSS at the end of --hold, after the long-polls have renewed (every --wait seconds); the first
// sample above is taken the moment they are all first held.
let heldAfterHold: { lastMb: number; maxMb: number } | undefined;
let accessTokenLength = 0;

const cp = await startControlPlane({ postgresUrl: o.databaseUrl });
console.log(`control plane: started here (pid ${cp.pid}, ${cp.backend} database)`);
try {
  // Phase 1: M commands queued for N agents, then every agent polls back to back until it has
  // received, verified and reported its share.
  {
    const stats = newStats();
    const { agents, close } = await registerAll(cp, o.agents, o.seed, stats);
    try {
      const targets = Array.from({ length: o.commands }, (_, i) => agents[i % agents.length]!.agentId);
      const q0 = performance.now();
      await queueMany(cp, targets, o.queueConcurrency);
      const queueSeconds = (performance.now() - q0) / 1000;
      console.log(`queued ${o.commands} commands in ${queueSeconds.toFixed(1)} s (${(o.commands / queueSeconds).toFixed(0)} CreateCommand/s, concurrency ${o.queueConcurrency})`);

      const watch = watchProcess(cp.pid);
      let sample: AgentCommand | undefined;
      const deadline = Date.now() + o.timeout * 1000;
      const t0 = performance.now();
      await Promise.all(
        agents.map(async (agent, i) => {
          const share = Math.floor(o.commands / agents.length) + (i < o.commands % agents.length ? 1 : 0);
          let got = 0;
          while ((got < share || agent.pendingResults > 0) && Date.now() < deadline) {
            if (got >= share) {
              await agent.flush();
              continue;
            }
            try {
              const commands = await agent.poll(0);
              got += commands.length;
              sample ??= commands[0];
            } catch (err) {
              countError(stats, "PollCommands", err);
            }
          }
        }),
      );
      const seconds = (performance.now() - t0) / 1000;
      const usage = await watch.stop();
      console.log(
        `throughput: ${stats.resultsAcknowledged}/${o.commands} delivered, verified and acknowledged in ${seconds.toFixed(1)} s: ` +
          `${(stats.resultsAcknowledged / seconds).toFixed(0)} signed deliveries/s with results reported (${stats.polls} polls, ${stats.rejectedCommands} rejected)`,
      );
      console.log(`errors by code: ${formatErrors(stats.errors)}; ${formatUsage(usage)}`);
      // The floor (issue 18, item 5): the signing library alone (@noble/ed25519's sign) signing
      // the same command bytes back to back on one core of this machine. The control plane's own
      // signEnvelope (the key expanded once, common/src/signing/envelope.ts) is shown beside it.
      if (sample) {
        const bytes = toBinary(CommandSchema, sample);
        const secretKey = newSecretKey();
        const rate = (sign: () => unknown) => {
          // Warm (the JIT, noble's precomputed tables) before counting.
          for (const w0 = performance.now(); performance.now() - w0 < 1000; ) sign();
          let signed = 0;
          const s0 = performance.now();
          while (performance.now() - s0 < 3000) {
            sign();
            signed++;
          }
          return signed / ((performance.now() - s0) / 1000);
        };
        const message = pae(COMMAND_TYPE, bytes);
        const libraryRate = rate(() => ed.sign(message, secretKey));
        const ownRate = rate(() => signEnvelope(secretKey, COMMAND_TYPE, bytes));
        const deliveries = stats.resultsAcknowledged / seconds;
        console.log(
          `floor: the signing library alone (@noble/ed25519 sign) signs these ${bytes.length}-byte commands at ${libraryRate.toFixed(0)}/s on one core; ` +
            `deliveries with results are ${(deliveries / libraryRate).toFixed(2)} × that ` +
            `(signEnvelope, the key expanded once: ${ownRate.toFixed(0)}/s, deliveries ${(deliveries / ownRate).toFixed(2)} × that)`,
        );
      }
    } finally {
      close();
    }
  }

  // Phase 2 (benchmark 3, scaled down): agents hold long-polls; commands are queued one at a time
  // and timed from just before CreateCommand is sent to the agent's verified receipt.
  if (o.longPolls > 0) {
    const stats = newStats();
    const { agents, close } = await registerAll(cp, o.longPolls, o.seed + 1, stats);
    const stop = new AbortController();
    const sent = new Map<string, number>();
    const received = new Map<string, number>();
    try {
      const loops = agents.map(async (agent) => {
        while (!stop.signal.aborted) {
          await agent.flush(stop.signal);
          try {
            for (const c of await agent.poll(o.wait, stop.signal)) received.set((c as AgentCommand).id, performance.now());
          } catch (err) {
            if (!stop.signal.aborted) countError(stats, "PollCommands", err);
          }
        }
      });
      // Every agent holds a long-poll once the server says so (its /metrics, loopback).
      const heldBy = Date.now() + o.timeout * 1000;
      let waiting = 0;
      while ((waiting = await longPollsWaiting(cp.url)) < o.longPolls && Date.now() < heldBy) await sleep(250);
      if (waiting < o.longPolls) console.log(`only ${waiting} of ${o.longPolls} long-polls held after ${o.timeout} s`);
      const held = await sampleProcess(cp.pid);
      const mem = await serverMemory(cp.url);
      heldRssMb = held && waiting >= o.longPolls ? held.rssBytes / 2 ** 20 : undefined;
      accessTokenLength = agents[0]!.accessTokenLength;
      console.log(
        `long-polls: ${waiting} held; server RSS ${held ? (held.rssBytes / 2 ** 20).toFixed(0) : "n/a"} MB ` +
          `(JS heap ${mem.heapUsed} MB used of ${mem.heapTotal} MB, external ${mem.external} MB)`,
      );
      if (o.hold > 0) {
        console.log(`holding ${waiting} long-polls for ${o.hold} s (server pid ${cp.pid})`);
        heldAfterHold = await holdAndWatch(cp.pid, o.hold);
        console.log(`after holding ${o.hold} s (each long-poll renews every ${o.wait} s): server RSS ${heldAfterHold.lastMb.toFixed(0)} MB (max ${heldAfterHold.maxMb.toFixed(0)} MB)`);
      }
      const watch = watchProcess(cp.pid);
      const pick = (k: number) => agents[(k * 7919 + o.seed) % agents.length]!.agentId;
      const targets = Array.from({ length: o.latencyCommands }, (_, k) => pick(k));
      await queueMany(cp, targets, 1, (id, at) => sent.set(id, at));
      const deadline = Date.now() + o.timeout * 1000;
      while (received.size < sent.size && Date.now() < deadline) await sleep(50);
      const usage = await watch.stop();
      const latencies = [...sent].filter(([id]) => received.has(id)).map(([id, at]) => received.get(id)! - at);
      const l = summarize(latencies);
      console.log(
        `delivery latency queue→agent (n=${l.count}/${sent.size}): p50 ${ms(l.p50)}, p95 ${ms(l.p95)}, p99 ${ms(l.p99)}, max ${ms(l.max)}; ` +
          `${stats.resultsAcknowledged} results acknowledged`,
      );
      console.log(`errors by code: ${formatErrors(stats.errors)}; ${formatUsage(usage)}`);
      stop.abort();
      await Promise.all(loops);
    } finally {
      stop.abort();
      close();
    }
  }
  // The floor for the long-polls: as many HTTP/2 connections, each holding a PollCommands of the
  // same wait on the bare echo server (the same listener and RPC plumbing; no auth, database,
  // logging or metrics), so the control plane's RSS can be read as a multiple of what the
  // transport itself costs on this machine, measured in the same run.
  if (o.longPolls > 0 && o.floor) {
    const echo = await startEchoServer();
    const stop = new AbortController();
    const conns = Array.from({ length: o.longPolls }, () => agentClient(echo.url));
    const poll = floorPolls(accessTokenLength || 300);
    const loops: Promise<void>[] = [];
    try {
      for (const [i, c] of conns.entries()) {
        loops.push(
          (async () => {
            while (!stop.signal.aborted) {
              await poll(c.client, o.wait, { timeoutMs: o.wait * 1000 + 15_000, signal: stop.signal }).catch(() => sleep(1000));
            }
          })(),
        );
        // Connections ramp up as they do for the control plane (there, 16 registrations at a time).
        if (i % 200 === 199) await sleep(50);
      }
      const heldBy = Date.now() + o.timeout * 1000;
      const echoHeld = () => fetch(`${echo.url}/held`, { signal: AbortSignal.timeout(5000) }).then(async (r) => Number(await r.text()), () => 0);
      let waiting = 0;
      while ((waiting = await echoHeld()) < o.longPolls && Date.now() < heldBy) await sleep(250);
      const sample = await sampleProcess(echo.pid);
      const floorMb = sample ? sample.rssBytes / 2 ** 20 : undefined;
      const heap = await fetch(`${echo.url}/memory`, { signal: AbortSignal.timeout(5000) }).then(
        async (r) => (await r.json()) as Record<string, number>,
        () => undefined,
      );
      const mb = (n: number | undefined) => (n === undefined ? "n/a" : (n / 2 ** 20).toFixed(0));
      console.log(
        `floor: ${waiting} long-polls held on the bare echo server: RSS ${floorMb?.toFixed(0) ?? "n/a"} MB ` +
          `(JS heap ${mb(heap?.heapUsed)} MB used of ${mb(heap?.heapTotal)} MB, external ${mb(heap?.external)} MB)` +
          (floorMb && heldRssMb ? `; the control plane held ${o.longPolls} with ${heldRssMb.toFixed(0)} MB, ${(heldRssMb / floorMb).toFixed(2)} × the floor` : ""),
      );
      if (o.hold > 0) {
        console.log(`holding ${waiting} long-polls on the floor for ${o.hold} s (echo server pid ${echo.pid})`);
        const floorHeld = await holdAndWatch(echo.pid, o.hold);
        console.log(
          `after holding ${o.hold} s: the floor's RSS ${floorHeld.lastMb.toFixed(0)} MB (max ${floorHeld.maxMb.toFixed(0)} MB)` +
            (heldAfterHold ? `; the control plane's ${heldAfterHold.lastMb.toFixed(0)} MB, floor + ${(heldAfterHold.lastMb - floorHeld.lastMb).toFixed(0)} MB (max against max: + ${(heldAfterHold.maxMb - floorHeld.maxMb).toFixed(0)} MB)` : ""),
        );
      }
    } finally {
      stop.abort();
      await Promise.allSettled(loops);
      conns.forEach((c) => c.close());
      await echo.stop();
    }
  }
} finally {
  await cp.stop();
}

// Waits `seconds`, sampling the process's RSS every 5 s: the last sample and the largest.
async function holdAndWatch(pid: number, seconds: number): Promise<{ lastMb: number; maxMb: number }> {
  let lastMb = 0;
  let maxMb = 0;
  for (const end = Date.now() + seconds * 1000; Date.now() < end; ) {
    await sleep(Math.min(5000, end - Date.now()));
    const sample = await sampleProcess(pid);
    if (!sample) continue;
    lastMb = sample.rssBytes / 2 ** 20;
    maxMb = Math.max(maxMb, lastMb);
  }
  return { lastMb, maxMb };
}

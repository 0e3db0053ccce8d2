import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { newRegistrationToken } from "../control-plane/test/support/agents.ts";
import { simulateInProcesses } from "./processes.ts";
import { agentClient, mergeResults, newStats, planAgents, shares, SimAgent, simulate, type SimulationResult } from "./simulator.ts";
import { jittered, percentile, seededRandom, summarize } from "./stats.ts";

describe("simulator plan", () => {
  const options = { agents: 200, seed: 7, startPeriodMs: 10_000, longPollShare: 0.25, heartbeatShare: 0.1 };

  it("is the same for the same seed and different for another", () => {
    const strip = (p: ReturnType<typeof planAgents>) => p.map(({ random: _, ...rest }) => rest);
    expect(strip(planAgents(options))).toEqual(strip(planAgents(options)));
    expect(strip(planAgents({ ...options, seed: 8 }))).not.toEqual(strip(planAgents(options)));
  });

  it("gives each agent its own identity, a start within the period, and the configured shares of modes", () => {
    const plans = planAgents(options);
    expect(new Set(plans.map((p) => p.machineId)).size).toBe(200);
    expect(plans.every((p) => /^[0-9a-f]{64}$/.test(p.machineId) && p.secretSeed.length === 32)).toBe(true);
    expect(plans.every((p) => p.startDelayMs >= 0 && p.startDelayMs < 10_000)).toBe(true);
    const count = (mode: string) => plans.filter((p) => p.mode === mode).length;
    expect([count("long-poll"), count("heartbeat"), count("interval")]).toEqual([50, 20, 130]);
  });

  it("jitters proportionally and computes nearest-rank percentiles", () => {
    const random = seededRandom(1);
    const delays = Array.from({ length: 1000 }, () => jittered(1000, 20, random));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(800);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1200);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(summarize([5, 1, 3, 2, 4])).toMatchObject({ count: 5, p50: 3, p99: 5, max: 5 });
  });
});

describe("several simulator processes", () => {
  it("split the agents into contiguous shares that cover the plan once", () => {
    expect(shares(10, 3)).toEqual([
      { from: 0, to: 3 },
      { from: 3, to: 6 },
      { from: 6, to: 10 },
    ]);
    expect(shares(20_000, 4).map((s) => s.to - s.from)).toEqual([5000, 5000, 5000, 5000]);
  });

  it("merge into one result: counts and rates add up, percentiles over all samples, errors by key", () => {
    const result = (latencies: number[], errors: [string, number][], elapsedSeconds: number): SimulationResult => {
      const stats = { ...newStats(), polls: latencies.length, registrations: 2, pollLatencies: latencies, errors: new Map(errors) };
      return { agents: 2, registered: 2, elapsedSeconds, pollsPerSecond: latencies.length / 10, polls: latencies.length, latency: { count: 0, p50: 0, p95: 0, p99: 0, max: 0 }, stats };
    };
    const merged = mergeResults([result([1, 2, 3], [["PollCommands:Unavailable", 1]], 10), result([4, 5], [["PollCommands:Unavailable", 2], ["Register:Internal", 1]], 12)]);
    expect(merged).toMatchObject({ agents: 4, registered: 4, elapsedSeconds: 12, polls: 5, pollsPerSecond: 0.5 });
    expect(merged.latency).toMatchObject({ count: 5, p50: 3, max: 5 });
    expect(merged.stats.errors).toEqual(new Map([["PollCommands:Unavailable", 3], ["Register:Internal", 1]]));
  });
});

describe("simulated agents against a real control plane", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_ACCESS_TOKEN_TTL: "60s" });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("register, receive and verify a signed command, report its result, and renew with the agent key", async () => {
    const token = await newRegistrationToken(cp, 5);
    const stats = newStats();
    const conn = agentClient(cp.url);
    try {
      const [plan] = planAgents({ agents: 1, seed: 3, startPeriodMs: 0, longPollShare: 0, heartbeatShare: 0 });
      const agent = new SimAgent(plan!, conn.client, stats, { verify: true, renewAtFraction: 0 });
      await agent.register(token);
      expect(await agent.poll(0)).toEqual([]);
      const queued = (await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } })).command!;
      const [received] = await agent.poll(0);
      expect(received).toMatchObject({ id: queued.id, agentId: agent.agentId });
      expect(stats).toMatchObject({ commandsReceived: 1, resultsAcknowledged: 1, rejectedCommands: 0 });
      expect((await cp.admin.commands.getCommand({ id: queued.id })).command?.result?.message).toBe("simulated");

      expect(await agent.renewIfDue()).toBe(true);
      expect(await agent.poll(0)).toEqual([]);
      expect(stats.renewals).toBe(1);
    } finally {
      conn.close();
    }
  });

  it("runs a short seeded simulation with interval, heartbeat and long-poll agents and no errors", async () => {
    const token = await newRegistrationToken(cp, 10);
    const r = await simulate({
      url: cp.url,
      token,
      agents: 6,
      seed: 1,
      startPeriodMs: 300,
      durationMs: 2_500,
      intervalMs: 200,
      jitterPercent: 20,
      longPollShare: 1 / 3,
      waitSeconds: 1,
      heartbeatShare: 1 / 6,
      heartbeatIntervalMs: 100,
      verify: true,
      renewAtFraction: 0.8,
      agentsPerConnection: 2,
    });
    expect(r.registered).toBe(6);
    expect(r.stats.errors).toEqual(new Map());
    expect(r.stats.longPolls).toBeGreaterThan(0);
    expect(r.latency.count).toBeGreaterThan(10);
    expect(r.pollsPerSecond).toBeGreaterThan(0);
  });

  it("polls on each of an agent's connections with --connections-per-agent, and registers it once", async () => {
    const token = await newRegistrationToken(cp, 10);
    const base = { url: cp.url, token, seed: 9, startPeriodMs: 0, durationMs: 3_000, intervalMs: 100, jitterPercent: 0, longPollShare: 0, waitSeconds: 1 };
    const rest = { heartbeatShare: 0, heartbeatIntervalMs: 100, verify: true, renewAtFraction: 0.8, agentsPerConnection: 1, agents: 2 };
    const one = await simulate({ ...base, ...rest });
    const three = await simulate({ ...base, ...rest, connectionsPerAgent: 3 });
    expect(three).toMatchObject({ agents: 2, registered: 2 });
    expect(three.stats.errors).toEqual(new Map());
    // The same agents, the same interval: three connections polling each make about three times the polls.
    expect(three.polls).toBeGreaterThan(one.polls * 2);
  });

  it("runs the same fleet split over two processes, each agent registered once with its own connection", async () => {
    const token = await newRegistrationToken(cp, 10);
    const options = { url: cp.url, token, agents: 4, seed: 5, startPeriodMs: 200, durationMs: 2_500, intervalMs: 200, jitterPercent: 20 };
    const rest = { longPollShare: 0, waitSeconds: 1, heartbeatShare: 0, heartbeatIntervalMs: 100, verify: true, renewAtFraction: 0.8, agentsPerConnection: 1 };
    const { result, cpuSeconds } = await simulateInProcesses({ ...options, ...rest, registerConcurrency: 2 }, 2, new AbortController().signal);
    expect(result).toMatchObject({ agents: 4, registered: 4 });
    expect(result.stats.errors).toEqual(new Map());
    expect(result.polls).toBeGreaterThan(8);
    expect(cpuSeconds).toBeGreaterThan(0);
    // The shares are the one-process plan's agents, each registered once.
    const planned = planAgents({ ...options, ...rest }).map((p) => p.machineId);
    const listed = (await cp.admin.fleet.listAgents({ pageSize: 500 })).agents.map((a) => a.machineId);
    expect(listed.filter((id) => planned.includes(id)).sort()).toEqual([...planned].sort());
  });
});

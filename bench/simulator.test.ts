import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { newRegistrationToken } from "../control-plane/test/support/agents.ts";
import { agentClient, newStats, planAgents, SimAgent, simulate } from "./simulator.ts";
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
});

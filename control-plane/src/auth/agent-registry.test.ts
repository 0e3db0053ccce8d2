import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "../../test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../../test/support/control-plane.ts";
import type { Statements } from "../store/statements.ts";
import { createAgentRegistry } from "./agent-registry.ts";

describe("the agent registry cache", () => {
  let cp: TestControlPlane;
  let agent: TestAgent;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    agent = await registerTestAgent(cp, await newRegistrationToken(cp));
  });
  afterAll(async () => {
    await cp?.close();
  });

  const bumpGeneration = () => cp.app.db.prisma.agent.update({ where: { id: agent.agentId }, data: { credentialGeneration: { increment: 1 } } });

  it("keeps an agent's state until it is invalidated", async () => {
    const registry = createAgentRegistry(cp.app.db.statements);
    const before = (await registry.get(agent.agentId))!.credentialGeneration;
    await bumpGeneration();
    expect((await registry.get(agent.agentId))!.credentialGeneration).toBe(before);
    registry.invalidate(agent.agentId);
    expect((await registry.get(agent.agentId))!.credentialGeneration).toBe(before + 1);
  });

  // A credential revoked while a read was on its way (here or on another replica) must not be
  // forgotten again for the cache's whole lifetime.
  it("does not keep what a read started before an invalidation returned", async () => {
    const registry = createAgentRegistry(cp.app.db.statements);
    const inFlight = registry.get(agent.agentId);
    registry.invalidate(agent.agentId);
    const stale = (await inFlight)!.credentialGeneration;
    await bumpGeneration();
    expect((await registry.get(agent.agentId))!.credentialGeneration).toBe(stale + 1);
  });

  // A herd of first polls (after a restart, or right after a fleet registered) reads the agents
  // in one query instead of one each; each caller still gets its own agent's state.
  it("reads the misses that arrive together in one query", async () => {
    const other = await registerTestAgent(cp, await newRegistrationToken(cp));
    let queries = 0;
    // The real statements, counting the queries that reach them.
    const real = cp.app.db.statements;
    const counted: Statements = {
      prepared: real.prepared,
      rows: (name, text, values) => {
        queries++;
        return real.rows(name, text, values);
      },
    };
    const registry = createAgentRegistry(counted);
    const unknown = "00000000-0000-4000-8000-000000000000";
    const [a, b, again, missing] = await Promise.all([registry.get(agent.agentId), registry.get(other.agentId), registry.get(agent.agentId), registry.get(unknown)]);
    expect(queries).toBe(1);
    expect(a!.machineId).toBe(agent.machineId);
    expect(b!.machineId).toBe(other.machineId);
    expect(again).toBe(a);
    expect(missing).toBeUndefined();
    // Cached now: no further query.
    expect((await registry.get(other.agentId))!.machineId).toBe(other.machineId);
    expect(queries).toBe(1);
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "../../test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../../test/support/control-plane.ts";
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
});

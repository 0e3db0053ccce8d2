import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createAgentTokens } from "./agent-tokens.ts";

describe("agent access tokens", () => {
  const secret = new Uint8Array(randomBytes(32));

  it("carry agent, machine and credential generation, and expire", async () => {
    const tokens = createAgentTokens(secret, 3600);
    const now = new Date();
    const { token, expiresAt } = await tokens.issue("agent-1", "m".repeat(64), 3, now);
    expect(expiresAt.getTime() - now.getTime()).toBeGreaterThan(3598_000);
    await expect(tokens.verify(token, now.getTime())).resolves.toMatchObject({
      agentId: "agent-1",
      machineId: "m".repeat(64),
      generation: 3,
    });
    // Also once cached: an expired token is refused.
    await expect(tokens.verify(token, now.getTime() + 3601_000)).rejects.toMatchObject({ code: Code.Unauthenticated });
  });

  it("refuse tokens signed with another secret or altered", async () => {
    const theirs = await createAgentTokens(new Uint8Array(randomBytes(32)), 3600).issue("a", "m", 1, new Date());
    const tokens = createAgentTokens(secret, 3600);
    await expect(tokens.verify(theirs.token, Date.now())).rejects.toMatchObject({ rawMessage: "access token is not valid" });
    const ours = await tokens.issue("a", "m", 1, new Date());
    const [h, p, sig] = ours.token.split(".");
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: "b", mid: "m", gen: 1, exp: 9e9 })).toString("base64url")}.${sig}`;
    await expect(tokens.verify(forged, Date.now())).rejects.toMatchObject({ code: Code.Unauthenticated });
    expect(p).toBeDefined();
  });

  it("stay bounded in memory", async () => {
    const tokens = createAgentTokens(secret, 3600, 20);
    const now = new Date();
    const issued = await Promise.all(Array.from({ length: 50 }, (_, i) => tokens.issue(`a${i}`, "m", 1, now)));
    for (const t of issued) await tokens.verify(t.token, now.getTime());
    // Evicted tokens are simply verified again.
    for (const t of issued) await expect(tokens.verify(t.token, now.getTime())).resolves.toBeDefined();
  });
});

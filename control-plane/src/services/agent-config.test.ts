import { describe, expect, it } from "vitest";
import { loadConfig } from "../config.ts";
import type { Prisma } from "../store/types.ts";
import { createAgentConfigs } from "./agent-config.ts";

// A database whose reads the test answers one by one: the holds query, then the overrides query.
function controlledDb() {
  const reads: ((rows: unknown[]) => void)[] = [];
  const read = () => new Promise<unknown[]>((resolve) => reads.push(resolve));
  const db = { hold: { findMany: read }, agent: { findMany: read } } as unknown as Prisma;
  const answer = async (holds: unknown[]) => {
    while (reads.length < 1) await new Promise((r) => setTimeout(r, 1));
    reads.shift()!(holds);
    while (reads.length < 1) await new Promise((r) => setTimeout(r, 1));
    reads.shift()!([]);
  };
  return { db, reads, answer };
}

const hold = (name: string) => ({ source: "apt", name, reason: "pinned", agentId: null, createdAt: new Date() });

describe("agent configs", () => {
  it("keep answering from the last read while a due refresh runs, and wait for a fresh read after an invalidation", async () => {
    const { db, reads, answer } = controlledDb();
    const configs = createAgentConfigs(loadConfig({}, "/srv"), db, undefined, 0);

    const first = configs.forAgent("a");
    await answer([hold("nginx")]);
    expect((await first).holds.map((h) => h.name)).toEqual(["nginx"]);

    // Due at once (refreshMs 0): the refresh starts, but the poll does not wait for it.
    expect((await configs.forAgent("a")).holds.map((h) => h.name)).toEqual(["nginx"]);
    expect(reads).toHaveLength(1);
    await answer([hold("nginx"), hold("openssl")]);
    await new Promise((r) => setTimeout(r, 5));
    expect((await configs.forAgent("a")).holds.map((h) => h.name)).toEqual(["nginx", "openssl"]);

    // That poll started another refresh (still due); let it finish.
    await answer([hold("nginx"), hold("openssl")]);
    await new Promise((r) => setTimeout(r, 5));

    // After a change made here, the next poll waits for the new holds.
    configs.invalidate();
    let settled = false;
    const next = configs.forAgent("a").finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 5));
    expect(settled).toBe(false);
    await answer([]);
    expect((await next).holds).toEqual([]);
  });
});

import { fromBinary } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { AgentConfigSchema, type SignedAgentConfig } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../config.ts";
import { AGENT_CONFIG_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { generateKeyPair, type KeyPair } from "../signing/keys.ts";
import { createCommandSigner } from "../signing/signer.ts";
import { createSettings } from "../settings.ts";
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

// The environment's defaults; never reloaded, so the test's database sees no settings read.
const defaultSettings = (db: Prisma) => createSettings(db, loadConfig({}, "/srv"), Infinity);

const hold = (name: string) => ({ source: "apt", name, reason: "pinned", agentId: null, createdAt: new Date() });

describe("agent configs", () => {
  it("keep answering from the last read while a due refresh runs, and wait for a fresh read after an invalidation", async () => {
    const { db, reads, answer } = controlledDb();
    const configs = createAgentConfigs(db, defaultSettings(db), 0);

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

  it("share one config among the agents without holds or overrides of their own", async () => {
    const { db, answer } = controlledDb();
    const configs = createAgentConfigs(db, defaultSettings(db), 60_000);
    const first = configs.forAgent("a");
    await answer([hold("nginx"), { ...hold("redis"), agentId: "c" }]);
    const [a, b, c] = [await first, await configs.forAgent("b"), await configs.forAgent("c")];
    // One object for a fleet of agents without holds of their own, not one each.
    expect(b).toBe(a);
    expect(a.holds.map((h) => h.name)).toEqual(["nginx"]);
    expect(c.holds.map((h) => h.name)).toEqual(["nginx", "redis"]);
    expect(c.revision).not.toBe(a.revision);
    expect(await configs.forAgent("c")).toBe(c);
  });
});

describe("signed agent configs", () => {
  const open = (signed: SignedAgentConfig, keys: KeyPair[]) => {
    const key = keys.find((k) => k.keyId === signed.keyId)!;
    expect(verifySignature(key.publicKey, AGENT_CONFIG_TYPE, signed.config, signed.signature)).toBe(true);
    return fromBinary(AgentConfigSchema, signed.config);
  };
  const micros = (t: Timestamp | undefined) => t!.seconds * 1_000_000n + BigInt(t!.nanos / 1000);

  it("are bound to the agent and to when the holds were read, and signed once per agent, config and key", async () => {
    const { db, answer } = controlledDb();
    const configs = createAgentConfigs(db, defaultSettings(db), 3_600_000);
    const first = generateKeyPair();
    let signatures = 0;
    const signer = createCommandSigner(first, [first], (kind, n) => {
      if (kind === "agent_config") signatures += n;
    });

    const before = BigInt(Date.now()) * 1000n;
    const pending = configs.signedForAgent("agent-a", signer);
    await answer([hold("openssl")]);
    const a = await pending;
    const opened = open(a, [first]);
    expect(opened).toMatchObject({ agentId: "agent-a", holds: [{ source: "apt", name: "openssl" }] });
    expect(opened.revision).toBe((await configs.forAgent("agent-a")).revision);
    // The issue time is when the read began, not when the config was signed.
    expect(micros(opened.issueTime)).toBeGreaterThanOrEqual(before);
    expect(micros(opened.issueTime)).toBeLessThanOrEqual(BigInt(Date.now()) * 1000n);
    expect(signatures).toBe(1);

    // Delivered again (the agent has not taken it yet): from the cache, not signed again.
    expect(await configs.signedForAgent("agent-a", signer)).toBe(a);
    await configs.forAgent("agent-a");
    expect(signatures).toBe(1);

    // Another agent with the same holds gets its own binding, with the same issue time.
    const b = open(await configs.signedForAgent("agent-b", signer), [first]);
    expect(b.agentId).toBe("agent-b");
    expect(b.issueTime).toEqual(opened.issueTime);
    expect(signatures).toBe(2);

    // After a rotation the cached signature by the old key is not used.
    const second = generateKeyPair();
    signer.replace(second, [first, second]);
    const rotated = await configs.signedForAgent("agent-a", signer);
    expect(rotated.keyId).toBe(second.keyId);
    expect(open(rotated, [second]).issueTime).toEqual(opened.issueTime);
    expect(signatures).toBe(3);

    // A change: the next read is issued strictly later, even within the same millisecond.
    configs.invalidate();
    const changed = configs.signedForAgent("agent-a", signer);
    await answer([]);
    const next = open(await changed, [second]);
    expect(next.holds).toEqual([]);
    expect(micros(next.issueTime)).toBeGreaterThan(micros(opened.issueTime));
    expect(signatures).toBe(4);
  });
});

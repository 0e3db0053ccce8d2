import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { createCluster, encode } from "./cluster.ts";

describe("cluster", () => {
  it("stays in process with the embedded database: this replica leads, wake-ups and events are local", async () => {
    const cluster = await createCluster({ databaseUrl: undefined, logger: pino({ level: "silent" }) });
    expect(cluster.isLeader()).toBe(true);
    const seen: string[] = [];
    cluster.events.subscribe((e) => seen.push(e.commandId));
    const waiting = cluster.wakeups.wait("agent", 5_000, new AbortController().signal);
    cluster.wakeups.notify("agent");
    cluster.events.publish([{ agentId: "agent", commandId: "c1" }]);
    expect(await waiting).toBe(true);
    expect(seen).toEqual(["c1"]);
    await cluster.close();
  });

  it("splits a large batch into NOTIFY payloads under the 8000-byte limit, losing nothing", () => {
    const id = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
    const wakes = Array.from({ length: 300 }, (_, i) => id(i));
    const changes = Array.from({ length: 300 }, (_, i) => [id(i), id(i + 1000)] as [string, string]);
    const invalidations = ["settings", ...Array.from({ length: 200 }, (_, i) => `agent:${id(i)}`)];
    const payloads = encode("replica", wakes, changes, invalidations);
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    const msgs = payloads.map((p) => JSON.parse(p) as { r: string; w?: string[]; e?: [string, string][]; x?: string[] });
    expect(msgs.every((m) => m.r === "replica")).toBe(true);
    expect(msgs.flatMap((m) => m.w ?? [])).toEqual(wakes);
    expect(msgs.flatMap((m) => m.e ?? [])).toEqual(changes);
    expect(msgs.flatMap((m) => m.x ?? [])).toEqual(invalidations);
    expect(encode("replica", [], [])).toEqual([]);
  });
});

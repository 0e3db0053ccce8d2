import { describe, expect, it } from "vitest";
import { createBackoff, jittered, sleep } from "./backoff.ts";

describe("backoff", () => {
  it("doubles its ceiling up to the cap, with full jitter", () => {
    const top = createBackoff({ baseMs: 1000, capMs: 300_000, random: () => 0.999999 });
    const ceilings = Array.from({ length: 12 }, () => top.next());
    expect(ceilings.slice(0, 4)).toEqual([1000, 2000, 4000, 8000]);
    expect(Math.max(...ceilings)).toBe(300_000);
    top.reset();
    expect(top.next()).toBe(1000);
    const bottom = createBackoff({ baseMs: 1000, capMs: 300_000, random: () => 0 });
    expect(bottom.next()).toBe(0);
  });

  it("spreads the poll interval by ±percent", () => {
    expect(jittered(60_000, 20, () => 0)).toBe(48_000);
    expect(jittered(60_000, 20, () => 1)).toBe(72_000);
    expect(jittered(60_000, 0, () => 0)).toBe(60_000);
    expect(jittered(60_000, 250, () => 0)).toBe(0);
  });

  it("sleeps until aborted", async () => {
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 20);
    await sleep(60_000, controller.signal);
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

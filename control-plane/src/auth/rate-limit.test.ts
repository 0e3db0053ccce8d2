import { describe, expect, it } from "vitest";
import { createRateLimiter } from "./rate-limit.ts";

describe("rate limiter", () => {
  it("allows the burst, then refills at the rate, per key", () => {
    const limiter = createRateLimiter({ perMinute: 60, burst: 3 });
    const t = 1_000_000;
    expect([1, 2, 3].map(() => limiter.take("a", t))).toEqual([0, 0, 0]);
    expect(limiter.take("a", t)).toBe(1);
    expect(limiter.take("b", t)).toBe(0);
    // One call a second comes back.
    expect(limiter.take("a", t + 1000)).toBe(0);
    expect(limiter.take("a", t + 1000)).toBe(1);
    // Never more than the burst, however long the key was idle.
    expect([1, 2, 3, 4].map(() => limiter.take("a", t + 3_600_000))).toEqual([0, 0, 0, 1]);
  });

  it("says how long to wait at a slow rate, and is off at rate 0", () => {
    const slow = createRateLimiter({ perMinute: 1, burst: 1 });
    expect(slow.take("a", 0)).toBe(0);
    expect(slow.take("a", 0)).toBe(60);
    expect(slow.take("a", 30_000)).toBe(30);
    const off = createRateLimiter({ perMinute: 0, burst: 0 });
    expect(Array.from({ length: 1000 }, () => off.take("a")).every((w) => w === 0)).toBe(true);
  });

  it("stays bounded in memory: full buckets are dropped first, busy ones keep their count", () => {
    const limiter = createRateLimiter({ perMinute: 1, burst: 2 }, 3);
    limiter.take("k1", 0);
    limiter.take("k2", 0);
    limiter.take("busy", 0);
    limiter.take("busy", 0);
    // A minute on, k1 and k2 are full again and make room; busy has refilled one call only.
    expect(limiter.take("new", 60_000)).toBe(0);
    expect(limiter.take("busy", 60_000)).toBe(0);
    expect(limiter.take("busy", 60_000)).toBe(60);
  });
});

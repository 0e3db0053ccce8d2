import { describe, expect, it } from "vitest";
import { createLoginThrottle, createRateLimiter } from "./rate-limit.ts";

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

describe("sign-in throttle", () => {
  const t = 1_000_000;

  it("lets the free failures through, then doubles the wait after each failure up to the cap", () => {
    const throttle = createLoginThrottle({ free: 3, maxDelayMs: 8000, forgetMs: 60_000 });
    for (let i = 0; i < 3; i++) {
      expect(throttle.wait("k", t)).toBe(0);
      throttle.fail("k", t);
    }
    // Each failure after the free ones is answered by a wait before the next attempt.
    expect(throttle.wait("k", t)).toBe(1000);
    expect(throttle.wait("k", t + 400)).toBe(600);
    throttle.fail("k", t + 1000);
    expect(throttle.wait("k", t + 1000)).toBe(2000);
    throttle.fail("k", t + 3000);
    expect(throttle.wait("k", t + 3000)).toBe(4000);
    throttle.fail("k", t + 7000);
    expect(throttle.wait("k", t + 7000)).toBe(8000);
    throttle.fail("k", t + 15_000);
    expect(throttle.wait("k", t + 15_000)).toBe(8000);
    // Never a lock: once the wait is over, the next attempt is allowed.
    expect(throttle.wait("k", t + 23_000)).toBe(0);
    expect(throttle.wait("other", t + 15_000)).toBe(0);
  });

  it("forgets a key after a quiet spell, and on reset", () => {
    const throttle = createLoginThrottle({ free: () => 1, maxDelayMs: 8000, forgetMs: 60_000 });
    throttle.fail("k", t);
    throttle.fail("k", t);
    expect(throttle.wait("k", t)).toBe(2000);
    throttle.fail("k", t + 1);
    expect(throttle.wait("k", t + 1)).toBe(4000);
    expect(throttle.wait("k", t + 60_002)).toBe(0);
    throttle.fail("k", t + 60_002);
    expect(throttle.wait("k", t + 60_002)).toBe(1000);
    throttle.reset("k");
    expect(throttle.wait("k", t + 60_002)).toBe(0);
  });

  it("stays bounded in memory", () => {
    const throttle = createLoginThrottle({ free: 1, maxDelayMs: 8000, forgetMs: 60_000, maxKeys: 2 });
    throttle.fail("a", t);
    throttle.fail("b", t + 70_000);
    // "a" is stale and makes room; "b" keeps its count.
    throttle.fail("c", t + 70_000);
    expect(throttle.wait("b", t + 70_000)).toBe(1000);
    expect(throttle.wait("c", t + 70_000)).toBe(1000);
  });
});

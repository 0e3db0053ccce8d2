import type { RateLimit } from "../config.ts";

// Failed sign-ins per key (an address; a username at an address). The first `free` failures cost
// nothing; after that, each failure makes the key wait before its next attempt, 1 s doubling up
// to `maxDelayMs`. A key with no failure for `forgetMs` starts afresh, and a success resets the
// username-at-address key. Delays, not locks: nobody can lock a username for the person it
// belongs to, who signs in from another address, and an address that keeps guessing gets ever
// fewer guesses. In memory: each replica counts its own, which is enough to make guessing slow.
export interface LoginThrottle {
  // Milliseconds until `key` may try again, or 0 when it may now.
  wait(key: string, now?: number): number;
  fail(key: string, now?: number): void;
  reset(key: string): void;
}

export function createLoginThrottle(opts: {
  // May change at run time (a setting): read at every check.
  free: number | (() => number);
  maxDelayMs: number;
  forgetMs: number;
  baseDelayMs?: number;
  maxKeys?: number;
}): LoginThrottle {
  const free = () => (typeof opts.free === "function" ? opts.free() : opts.free);
  const base = opts.baseDelayMs ?? 1000;
  const maxKeys = opts.maxKeys ?? 100_000;
  const keys = new Map<string, { failures: number; last: number }>();
  const current = (key: string, now: number) => {
    const entry = keys.get(key);
    if (entry && now - entry.last > opts.forgetMs) {
      keys.delete(key);
      return undefined;
    }
    return entry;
  };
  const delay = (failures: number) => {
    const over = failures - free();
    return over < 0 ? 0 : Math.min(base * 2 ** Math.min(over, 40), opts.maxDelayMs);
  };
  return {
    wait(key, now = Date.now()) {
      const entry = current(key, now);
      return entry ? Math.max(0, entry.last + delay(entry.failures) - now) : 0;
    },
    fail(key, now = Date.now()) {
      const entry = current(key, now);
      if (!entry && keys.size >= maxKeys) {
        for (const [k, e] of keys) if (now - e.last > opts.forgetMs) keys.delete(k);
        if (keys.size >= maxKeys) keys.clear();
      }
      keys.set(key, { failures: (entry?.failures ?? 0) + 1, last: now });
    },
    reset: (key) => void keys.delete(key),
  };
}

export interface RateLimiter {
  // Takes one call for `key`: 0 when allowed, else the seconds until one is.
  take(key: string, now?: number): number;
}

export function createRateLimiter(limit: RateLimit, maxKeys = 100_000): RateLimiter {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const level = (b: { tokens: number; at: number }, now: number) => Math.min(limit.burst, b.tokens + ((now - b.at) * limit.perMinute) / 60_000);
  return {
    take(key, now = Date.now()) {
      if (limit.perMinute <= 0) return 0;
      const b = buckets.get(key);
      if (!b && buckets.size >= maxKeys) {
        // Full buckets hold nothing worth keeping; if every one is in use, start over.
        for (const [k, old] of buckets) if (level(old, now) >= limit.burst) buckets.delete(k);
        if (buckets.size >= maxKeys) buckets.clear();
      }
      const tokens = b ? level(b, now) : limit.burst;
      if (tokens >= 1) {
        buckets.set(key, { tokens: tokens - 1, at: now });
        return 0;
      }
      return Math.max(1, Math.ceil(((1 - tokens) * 60) / limit.perMinute));
    },
  };
}

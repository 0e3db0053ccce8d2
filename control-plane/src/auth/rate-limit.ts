// Failed sign-ins counted per key (an IP address, a username) in a sliding window; a key over
// its limit is refused until its oldest failure leaves the window. In memory: each replica
// counts its own, which is enough to make guessing slow.
export interface FailureLimiter {
  // Seconds until `key` may try again, or 0 when it may now.
  retryAfter(key: string, now?: number): number;
  fail(key: string, now?: number): void;
  reset(key: string): void;
}

// `limit` may change at run time (a setting): it is read at every check.
export function createFailureLimiter(opts: { limit: number | (() => number); windowMs: number }): FailureLimiter {
  const limit = () => (typeof opts.limit === "function" ? opts.limit() : opts.limit);
  const failures = new Map<string, number[]>();
  const recent = (key: string, now: number) => {
    const kept = (failures.get(key) ?? []).filter((t) => t > now - opts.windowMs);
    if (kept.length === 0) failures.delete(key);
    else failures.set(key, kept);
    return kept;
  };
  return {
    retryAfter(key, now = Date.now()) {
      const list = recent(key, now);
      const max = limit();
      if (list.length < max) return 0;
      return Math.max(1, Math.ceil((list[list.length - max]! + opts.windowMs - now) / 1000));
    },
    fail(key, now = Date.now()) {
      if (failures.size > 100_000) failures.clear();
      failures.set(key, [...recent(key, now), now]);
    },
    reset: (key) => void failures.delete(key),
  };
}

// Calls allowed per key (an IP address, a registration token, an agent): a token bucket that
// refills `perMinute` a minute up to `burst`. In memory, per replica: with N replicas behind a
// load balancer a key gets up to N times the limit, so set limit/replicas if that matters.
export interface RateLimit {
  readonly perMinute: number;
  readonly burst: number;
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

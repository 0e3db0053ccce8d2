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

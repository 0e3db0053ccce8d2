export interface Backoff {
  // The delay before the next attempt; each call doubles the ceiling up to the cap.
  next(): number;
  reset(): void;
}

// Exponential backoff with full jitter: a uniform delay between 0 and min(cap, base · 2^n), so
// agents that lost the control plane together do not come back together.
export function createBackoff(opts: { baseMs: number; capMs: number; random?: () => number }): Backoff {
  const random = opts.random ?? Math.random;
  let attempt = 0;
  return {
    next() {
      const ceiling = Math.min(opts.capMs, opts.baseMs * 2 ** attempt);
      if (ceiling < opts.capMs) attempt++;
      return Math.round(random() * ceiling);
    },
    reset() {
      attempt = 0;
    },
  };
}

// The poll interval spread by ±percent, so a fleet started together drifts apart.
export function jittered(intervalMs: number, percent: number, random: () => number = Math.random): number {
  const spread = Math.min(100, Math.max(0, percent)) / 100;
  return Math.max(0, Math.round(intervalMs * (1 + (2 * random() - 1) * spread)));
}

// Resolves after `ms`, or at once when `signal` aborts.
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

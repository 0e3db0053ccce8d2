import { plural } from "@redflag/common/plural";
import type { CircuitBreakerConfig } from "@redflag/gen/common_pb";

export type BreakerState = "closed" | "open" | "half_open";

export type BreakerDecision =
  | { allowed: true; state: BreakerState }
  | { allowed: false; state: "open"; reason: string };

export interface Breakers {
  // Whether the subsystem may run now. In half-open state exactly one trial is let through.
  check(subsystem: string, config: CircuitBreakerConfig | undefined): BreakerDecision;
  record(subsystem: string, config: CircuitBreakerConfig | undefined, succeeded: boolean): void;
  state(subsystem: string): BreakerState;
}

interface Entry {
  state: BreakerState;
  failures: number[];
  openedAt: number;
  trialRunning: boolean;
}

// One circuit breaker per subsystem (closed → open → half-open → closed), kept for the life of
// the agent process.
export function createBreakers(now: () => number = Date.now): Breakers {
  const entries = new Map<string, Entry>();
  const entry = (name: string) => {
    let e = entries.get(name);
    if (!e) entries.set(name, (e = { state: "closed", failures: [], openedAt: 0, trialRunning: false }));
    return e;
  };
  const enabled = (c: CircuitBreakerConfig | undefined): c is CircuitBreakerConfig => (c?.failureThreshold ?? 0) > 0;

  return {
    check(name, config) {
      const e = entry(name);
      if (!enabled(config) || e.state === "closed") return { allowed: true, state: e.state };
      const reopensAt = e.openedAt + config.cooldownSeconds * 1000;
      if (e.state === "open" && now() >= reopensAt) {
        e.state = "half_open";
        e.trialRunning = false;
      }
      if (e.state === "half_open" && !e.trialRunning) {
        e.trialRunning = true;
        return { allowed: true, state: "half_open" };
      }
      return {
        allowed: false,
        state: "open",
        reason:
          `circuit breaker open after ${plural(config.failureThreshold, "failure")} in ${config.windowSeconds}s; ` +
          `next try after ${new Date(Math.max(reopensAt, now())).toISOString()}`,
      };
    },

    record(name, config, succeeded) {
      const e = entry(name);
      if (!enabled(config)) return;
      const t = now();
      if (succeeded) {
        entries.set(name, { state: "closed", failures: [], openedAt: 0, trialRunning: false });
        return;
      }
      if (e.state === "half_open") {
        e.state = "open";
        e.openedAt = t;
        e.trialRunning = false;
        return;
      }
      e.failures = [...e.failures.filter((f) => f > t - config.windowSeconds * 1000), t];
      if (e.failures.length >= config.failureThreshold) {
        e.state = "open";
        e.openedAt = t;
      }
    },

    state: (name) => entry(name).state,
  };
}

// Heartbeat mode: poll every few seconds until a deadline, then fall back to the configured
// interval. Kept in memory: a restarted agent polls normally until told again.
export interface Heartbeat {
  enable(untilMs: number, intervalSeconds: number): void;
  disable(): void;
  // The heartbeat interval while it lasts, otherwise undefined.
  interval(nowMs: number): number | undefined;
  until(nowMs: number): number | undefined;
}

export function createHeartbeat(): Heartbeat {
  let state: { untilMs: number; intervalSeconds: number } | undefined;
  const active = (now: number) => (state && now < state.untilMs ? state : undefined);
  return {
    enable(untilMs, intervalSeconds) {
      state = { untilMs, intervalSeconds };
    },
    disable() {
      state = undefined;
    },
    interval: (now) => active(now)?.intervalSeconds,
    until: (now) => active(now)?.untilMs,
  };
}

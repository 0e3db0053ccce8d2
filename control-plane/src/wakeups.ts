// Wakes long-polling PollCommands calls when a command is queued for their agent.
export interface Wakeups {
  // Resolves true when woken, false on timeout, abort or close.
  wait(agentId: string, ms: number, signal: AbortSignal): Promise<boolean>;
  notify(agentId: string): void;
  close(): void;
  waiting(): number;
}

export function createWakeups(): Wakeups {
  const waiters = new Map<string, Set<(woken: boolean) => void>>();
  let closed = false;
  let count = 0;

  return {
    wait(agentId, ms, signal) {
      if (closed || signal.aborted) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        let set = waiters.get(agentId);
        if (!set) waiters.set(agentId, (set = new Set()));
        const done = (woken: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          set!.delete(done);
          if (set!.size === 0 && waiters.get(agentId) === set) waiters.delete(agentId);
          count--;
          resolve(woken);
        };
        const onAbort = () => done(false);
        const timer = setTimeout(() => done(false), ms);
        signal.addEventListener("abort", onAbort, { once: true });
        set.add(done);
        count++;
      });
    },
    notify(agentId) {
      const set = waiters.get(agentId);
      if (set) for (const done of [...set]) done(true);
    },
    close() {
      closed = true;
      for (const set of [...waiters.values()]) for (const done of [...set]) done(false);
    },
    waiting: () => count,
  };
}

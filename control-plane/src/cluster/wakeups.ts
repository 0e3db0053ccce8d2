// Wakes long-polling PollCommands calls when a command is queued for their agent.
export interface Wakeups {
  // A mark to take before looking for commands; `wait` with it returns at once when the agent
  // was notified after the mark, so a command queued while the poll was claiming is not missed.
  mark(): number;
  // Resolves true when woken (or notified since `since`), false on timeout, abort or close.
  wait(agentId: string, ms: number, signal: AbortSignal, since?: number): Promise<boolean>;
  notify(agentId: string): void;
  // Wakes every waiting poll (and any about to wait with an earlier mark), so each looks at the
  // queue again: after the replica link was down, when notifications may have been missed.
  notifyAll(): void;
  close(): void;
  waiting(): number;
}

// Recent notifications remembered for `since`; far more than can happen during one claim.
const RECENT_NOTIFICATIONS = 50_000;

// `onNotify` hears every notification (this replica's and, through the cluster, the others').
export function createWakeups(onNotify?: (agentId: string) => void): Wakeups {
  const waiters = new Map<string, Set<(woken: boolean) => void>>();
  // agent ID → the counter at its latest notification, oldest first.
  const notified = new Map<string, number>();
  let counter = 0;
  // The counter at the latest notifyAll.
  let everyoneAt = -1;
  let closed = false;
  let count = 0;

  return {
    mark: () => counter,
    wait(agentId, ms, signal, since) {
      if (closed || signal.aborted) return Promise.resolve(false);
      if (since !== undefined && ((notified.get(agentId) ?? -1) > since || everyoneAt > since)) return Promise.resolve(true);
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
      onNotify?.(agentId);
      notified.delete(agentId);
      notified.set(agentId, ++counter);
      if (notified.size > RECENT_NOTIFICATIONS) notified.delete(notified.keys().next().value!);
      const set = waiters.get(agentId);
      if (set) for (const done of [...set]) done(true);
    },
    notifyAll() {
      everyoneAt = ++counter;
      for (const set of [...waiters.values()]) for (const done of [...set]) done(true);
    },
    close() {
      closed = true;
      for (const set of [...waiters.values()]) for (const done of [...set]) done(false);
    },
    waiting: () => count,
  };
}

// Changes people watch live (the console's activity feed): which command changed, for which
// agent. In-process: each replica publishes what it does itself (issue 6 adds LISTEN/NOTIFY
// to carry them across replicas). Publishing costs nothing while nobody watches.
export interface CommandChanged {
  commandId: string;
  agentId: string;
}

export interface EventBus {
  publish(events: readonly CommandChanged[]): void;
  // `onGap` hears that changes may have been lost (the replica link was down).
  subscribe(listener: (event: CommandChanged) => void, onGap?: () => void): () => void;
  // Tells every subscriber that changes may have been lost.
  gap(): void;
  readonly watching: number;
}

export function createEventBus(): EventBus {
  const listeners = new Map<(event: CommandChanged) => void, (() => void) | undefined>();
  return {
    publish(events) {
      if (listeners.size === 0) return;
      for (const event of events) for (const listener of listeners.keys()) listener(event);
    },
    subscribe(listener, onGap) {
      // Each subscription is its own entry, even for a listener function used twice.
      const own = (event: CommandChanged) => listener(event);
      listeners.set(own, onGap);
      return () => listeners.delete(own);
    },
    gap() {
      for (const onGap of [...listeners.values()]) onGap?.();
    },
    get watching() {
      return listeners.size;
    },
  };
}

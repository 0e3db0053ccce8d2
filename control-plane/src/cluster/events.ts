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
  // One entry per subscription, even for a listener function subscribed twice.
  const subscriptions = new Set<{ listener: (event: CommandChanged) => void; onGap: (() => void) | undefined }>();
  return {
    publish(events) {
      if (subscriptions.size === 0) return;
      for (const event of events) for (const s of subscriptions) s.listener(event);
    },
    subscribe(listener, onGap) {
      const subscription = { listener, onGap };
      subscriptions.add(subscription);
      return () => subscriptions.delete(subscription);
    },
    gap() {
      for (const s of [...subscriptions]) s.onGap?.();
    },
    get watching() {
      return subscriptions.size;
    },
  };
}

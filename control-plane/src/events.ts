// Changes people watch live (the console's activity feed): which command changed, for which
// agent. In-process: each replica publishes what it does itself (issue 6 adds LISTEN/NOTIFY
// to carry them across replicas). Publishing costs nothing while nobody watches.
export interface CommandChanged {
  commandId: string;
  agentId: string;
}

export interface EventBus {
  publish(events: readonly CommandChanged[]): void;
  subscribe(listener: (event: CommandChanged) => void): () => void;
  readonly watching: number;
}

export function createEventBus(): EventBus {
  const listeners = new Set<(event: CommandChanged) => void>();
  return {
    publish(events) {
      if (listeners.size === 0) return;
      for (const event of events) for (const listener of listeners) listener(event);
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get watching() {
      return listeners.size;
    },
  };
}

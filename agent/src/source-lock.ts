// One package-manager operation at a time per source: a scan never overlaps an install, and two
// installs of one source never race for its lock. Different sources run independently.
export interface SourceLocks {
  run<T>(source: string, fn: () => Promise<T>): Promise<T>;
  busy(source: string): boolean;
}

export function createSourceLocks(): SourceLocks {
  const tails = new Map<string, Promise<unknown>>();
  const active = new Map<string, number>();
  return {
    async run(source, fn) {
      const previous = tails.get(source) ?? Promise.resolve();
      let release!: () => void;
      const mine = new Promise<void>((resolve) => (release = resolve));
      const tail = previous.then(() => mine);
      tails.set(source, tail);
      await previous;
      active.set(source, (active.get(source) ?? 0) + 1);
      try {
        return await fn();
      } finally {
        active.set(source, active.get(source)! - 1);
        release();
        if (tails.get(source) === tail) tails.delete(source);
      }
    },
    busy: (source) => (active.get(source) ?? 0) > 0,
  };
}

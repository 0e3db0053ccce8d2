// Which agents may have queued commands, kept in memory so that an idle poll (the overwhelming
// majority) answers without a database round trip and only a poll with something to fetch runs
// the claim query.
//
// The index is fed by the same signal that wakes long-polls: every command queued here or on
// another replica (through the cluster link) notes its agent. A poll whose claim finds fewer
// commands than it asked for, with no note and no other claim for that agent meanwhile, clears
// the agent. Anything the feed may have missed is covered by a resync: a full read of the
// agents with pending commands, at start, every `resyncMs`, and after the cluster link comes
// back. Until a resync has succeeded with the feed intact (at start, or while the link is down)
// every agent "may have" commands and every poll claims, as if there were no index.
export interface PendingIndex {
  // False only when this replica knows the agent has nothing queued.
  mayHave(agentId: string): boolean;
  // A command was queued (or returned to the queue) for this agent.
  note(agentId: string): void;
  // Runs one claim for the agent and updates the index from what it returned.
  claim<T>(agentId: string, limit: number, run: () => Promise<T[]>): Promise<T[]>;
  // The feed of notes has a gap (the cluster link is down): claim for everyone until the link
  // is back and a resync has run.
  feedLost(): void;
  // The feed is whole again; a resync follows at once.
  feedRestored(): void;
  resync(): Promise<void>;
  // True while the index is trusted (idle polls skip the claim).
  readonly synced: boolean;
  // Agents currently marked.
  readonly size: number;
  stop(): void;
}

export interface PendingIndexOptions {
  // Every agent with at least one pending command, read from the database.
  load: () => Promise<string[]>;
  resyncMs?: number;
  // False when the feed starts with the cluster link, which reports feedRestored() once it is up.
  feedUp?: boolean;
  onError?: (err: unknown) => void;
}

export function createPendingIndex(opts: PendingIndexOptions): PendingIndex {
  const resyncMs = opts.resyncMs ?? 10_000;
  // agent ID → the counter when it was last noted (or seen pending by a resync).
  let marked = new Map<string, number>();
  // agent ID → claims running for it now.
  const claiming = new Map<string, number>();
  let counter = 0;
  let synced = false;
  let feedUp = opts.feedUp ?? true;
  // Bumped whenever the feed breaks, so a resync that spans a break does not count.
  let epoch = 0;
  let resyncing: Promise<void> | undefined;
  let stopped = false;

  const note = (agentId: string) => {
    marked.set(agentId, ++counter);
  };

  const resync = () => {
    resyncing ??= (async () => {
      const started = epoch;
      // Entries found now outrank any claim that began before this read.
      const gen = ++counter;
      try {
        const agents = await opts.load();
        const next = new Map<string, number>();
        for (const id of agents) next.set(id, gen);
        // Notes that arrived while the read ran are kept, whatever it saw.
        for (const [id, at] of marked) if (at > gen) next.set(id, at);
        marked = next;
        if (feedUp && epoch === started && !stopped) synced = true;
      } catch (err) {
        opts.onError?.(err);
      }
    })().finally(() => (resyncing = undefined));
    return resyncing;
  };

  const timer = setInterval(() => {
    if (feedUp) void resync();
  }, resyncMs);
  timer.unref();

  return {
    mayHave: (agentId) => !synced || marked.has(agentId),
    note,
    async claim(agentId, limit, run) {
      const others = claiming.get(agentId) ?? 0;
      // A claim already running for this agent may be holding rows ours skips (SKIP LOCKED):
      // neither may conclude that the queue is empty from its own result.
      if (others > 0) note(agentId);
      claiming.set(agentId, others + 1);
      const since = counter;
      try {
        const got = await run();
        if (got.length >= limit) note(agentId);
        else if ((marked.get(agentId) ?? 0) <= since) marked.delete(agentId);
        return got;
      } finally {
        const left = claiming.get(agentId)! - 1;
        if (left === 0) claiming.delete(agentId);
        else claiming.set(agentId, left);
      }
    },
    feedLost() {
      feedUp = false;
      synced = false;
      epoch++;
    },
    feedRestored() {
      feedUp = true;
      // A read already running began before the feed came back: it cannot count, so read again.
      void (resyncing ? resyncing.then(resync) : resync());
    },
    resync,
    get synced() {
      return synced;
    },
    get size() {
      return marked.size;
    },
    stop() {
      stopped = true;
      synced = false;
      clearInterval(timer);
    },
  };
}

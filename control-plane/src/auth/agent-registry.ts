import { getAgentAuthStates, type AgentAuthState } from "../store/agents.ts";
import type { Statements } from "../store/statements.ts";

export interface AgentRegistry {
  get(agentId: string): Promise<AgentAuthState | undefined>;
  invalidate(agentId: string): void;
  // Forgets every agent (after the replica link was down: invalidations may have been missed).
  clear(): void;
}

// Caches what authentication needs to know about an agent (machine binding, credential
// generation, decommissioned) so idle polls do not read the agents table. Changes made by this
// process invalidate the entry at once, and other replicas' through the cluster link (which
// drops every entry when it comes back from an outage); ttlMs only bounds what could still slip
// through. It is longer than any poll interval, so an interval-mode poll does not re-read it.
export function createAgentRegistry(sql: Statements, ttlMs = 10 * 60_000, maxEntries = 200_000): AgentRegistry {
  const entries = new Map<string, { state: AgentAuthState | undefined; loadedAt: number }>();
  const loading = new Map<string, { state: Promise<AgentAuthState | undefined>; epoch: number }>();
  // Moves on with every invalidation: a read that started before one may already be stale, so
  // what it returns is not kept.
  let epoch = 0;
  const read = createBatchedRead(sql);

  return {
    async get(agentId) {
      const now = Date.now();
      const entry = entries.get(agentId);
      if (entry && now - entry.loadedAt < ttlMs) return entry.state;
      let pending = loading.get(agentId);
      if (!pending) {
        const load = { state: read(agentId), epoch };
        loading.set(agentId, load);
        void load.state.finally(() => loading.get(agentId) === load && loading.delete(agentId)).catch(() => {});
        pending = load;
      }
      const state = await pending.state;
      if (pending.epoch === epoch) {
        if (entries.size >= maxEntries) entries.clear();
        entries.set(agentId, { state, loadedAt: now });
      }
      return state;
    },
    invalidate(agentId) {
      epoch++;
      entries.delete(agentId);
      loading.delete(agentId);
    },
    clear() {
      epoch++;
      entries.clear();
      loading.clear();
    },
  };
}

// Reads at most this many agents in one query.
const MAX_BATCH = 500;

// Cache misses are read together, one query for every miss that arrives in the same turn of the
// event loop: after a restart, or when a fleet that has just registered polls for the first time,
// thousands of agents arrive at once, and a query each would keep thousands of queries (and every
// call waiting behind them) queued at the database pool together (docs/benchmarks.md, section 3).
// The IDs come from access tokens this server signed, so no malformed ID can fail a batch.
function createBatchedRead(sql: Statements): (agentId: string) => Promise<AgentAuthState | undefined> {
  let queued: { agentId: string; resolve: (state: AgentAuthState | undefined) => void; reject: (err: unknown) => void }[] = [];
  const flush = () => {
    const batch = queued;
    queued = [];
    getAgentAuthStates(
      sql,
      batch.map((q) => q.agentId),
    ).then(
      (states) => batch.forEach((q) => q.resolve(states.get(q.agentId))),
      (err: unknown) => batch.forEach((q) => q.reject(err)),
    );
  };
  return (agentId) =>
    new Promise((resolve, reject) => {
      queued.push({ agentId, resolve, reject });
      if (queued.length === 1) setImmediate(() => queued.length > 0 && flush());
      else if (queued.length >= MAX_BATCH) flush();
    });
}

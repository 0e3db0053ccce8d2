import type { Logger } from "../log.ts";
import { flushLastSeen } from "../store/agents.ts";
import type { Statements } from "../store/statements.ts";

// A poll's status as stored: the serialized AgentStatus, its reboot flag for the indexed column,
// and the version the agent reports running (its agent_version column: upgrades are confirmed by
// it, and the minimum supported version is checked against it).
export interface PolledStatus {
  bytes: Uint8Array;
  rebootRequired: boolean;
  agentVersion?: string | undefined;
}

export interface LastSeenBuffer {
  record(agentId: string, at: Date, status: PolledStatus | null): void;
  // What this process heard but has not written yet, so readers are never behind the buffer.
  peek(agentId: string): { at: Date; status: Uint8Array | null; rebootRequired: boolean | undefined } | undefined;
  flush(): Promise<void>;
  stop(): Promise<void>;
}

// Idle polls never write synchronously: last-seen times and statuses collect here and are
// written in one batched statement every intervalMs.
export function createLastSeenBuffer(sql: Statements, intervalMs: number, logger: Logger): LastSeenBuffer {
  let pending = new Map<string, { at: Date; status: PolledStatus | null }>();
  // The batch being written: until its statement commits, readers must still see it here.
  let inFlight = new Map<string, { at: Date; status: PolledStatus | null }>();
  let flushing: Promise<void> = Promise.resolve();

  const flush = () => {
    flushing = flushing.then(async () => {
      if (pending.size === 0) return;
      const batch = pending;
      pending = new Map();
      inFlight = batch;
      try {
        await flushLastSeen(sql, [...batch].map(([agentId, v]) => ({ agentId, at: v.at, status: v.status?.bytes ?? null, rebootRequired: v.status?.rebootRequired ?? null, agentVersion: v.status?.agentVersion || null })));
      } catch (err) {
        logger.warn({ err, agents: batch.size }, "could not record last-seen times; will retry");
        for (const [id, v] of batch) if (!pending.has(id)) pending.set(id, v);
      } finally {
        inFlight = new Map();
      }
    });
    return flushing;
  };
  const timer = setInterval(() => void flush(), intervalMs);
  timer.unref();

  return {
    record(agentId, at, status) {
      pending.set(agentId, { at, status: status ?? pending.get(agentId)?.status ?? inFlight.get(agentId)?.status ?? null });
    },
    peek(agentId) {
      const entry = pending.get(agentId) ?? inFlight.get(agentId);
      return entry && { at: entry.at, status: entry.status?.bytes ?? null, rebootRequired: entry.status?.rebootRequired };
    },
    flush,
    async stop() {
      clearInterval(timer);
      await flush();
    },
  };
}

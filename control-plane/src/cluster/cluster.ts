import { randomUUID } from "node:crypto";
import pg from "pg";
import { createEventBus, type CommandChanged, type EventBus } from "./events.ts";
import type { Logger } from "../log.ts";
import { createWakeups, type Wakeups } from "./wakeups.ts";

// What several replicas on one PostgreSQL share beyond the tables: long-poll wake-ups and the
// WatchEvents feed travel over LISTEN/NOTIFY, and one replica (the holder of a session
// advisory lock) runs the scheduler's exclusive jobs. With the embedded database there is one
// process by definition: everything stays in process and this replica always leads.
export interface Cluster {
  // Wakes this replica's long-polls at once and the other replicas' through NOTIFY.
  readonly wakeups: Wakeups;
  // Feeds this replica's WatchEvents streams at once and the other replicas' through NOTIFY.
  readonly events: EventBus;
  // Tells the other replicas to drop a cache this replica just changed the truth behind:
  // "settings", "configs" (holds, per-agent config), "principals" (people, tokens, keys) or
  // "agent:<id>" (an agent's registration or decommissioning).
  invalidate(cache: string): void;
  // True while this replica holds the scheduler lock.
  isLeader(): boolean;
  close(): Promise<void>;
}

export interface ClusterOptions {
  // Unset: the embedded database, one process.
  databaseUrl: string | undefined;
  logger: Logger;
  // How often a replica that does not lead tries to take the lock (and a leader checks its
  // connection).
  leaderRetryMs?: number;
  // Hears every wake-up, this replica's and the others' (the pending-command index).
  onNotify?: (agentId: string) => void;
  // The link to the other replicas went down (false: their wake-ups may be missed) or came back.
  onLinkChange?: (up: boolean) => void;
  // Another replica changed what this cache holds (see Cluster.invalidate); "*" after the link
  // was down: every cache, since invalidations may have been missed.
  onInvalidate?: (cache: string) => void;
}

export const CHANNEL = "redflag_commands";
// "RFSC": the scheduler's session lock; other keys: migrations, bootstrap.
export const LEADER_LOCK_KEY = 0x52465343;
// NOTIFY payloads must stay below 8000 bytes.
const MAX_PAYLOAD = 7000;
// How the link shows in pg_stat_activity.
export const LINK_APPLICATION_NAME = "redflag-replica-link";
const RECONNECT_BASE_MS = 250;
const RECONNECT_CAP_MS = 30_000;

// One message: the sending replica, agents to wake, changed commands as [agentId, commandId],
// and caches to drop.
interface Message {
  r: string;
  w?: string[];
  e?: [string, string][];
  x?: string[];
}

export async function createCluster(opts: ClusterOptions): Promise<Cluster> {
  const localWakeups = createWakeups(opts.onNotify);
  const localEvents = createEventBus();
  if (!opts.databaseUrl) {
    return { wakeups: localWakeups, events: localEvents, invalidate: () => {}, isLeader: () => true, close: async () => localWakeups.close() };
  }
  let wasDown = false;
  const onLinkChange = (up: boolean) => {
    opts.onLinkChange?.(up);
    // Wake-ups, invalidations and events sent while the link was down never arrive: every
    // long-poll here looks again, every cache is dropped and every events feed is told.
    if (up && wasDown) {
      localWakeups.notifyAll();
      opts.onInvalidate?.("*");
      localEvents.gap();
    }
    wasDown = !up;
  };
  const link = createLink(opts.databaseUrl, opts.logger, opts.leaderRetryMs ?? 5_000, onLinkChange, (msg) => {
    for (const agentId of msg.w ?? []) localWakeups.notify(agentId);
    if (msg.e && msg.e.length > 0) localEvents.publish(msg.e.map(([agentId, commandId]) => ({ agentId, commandId })));
    for (const cache of msg.x ?? []) opts.onInvalidate?.(cache);
  });
  await link.start();
  const wakeups: Wakeups = {
    mark: () => localWakeups.mark(),
    wait: (agentId, ms, signal, since) => localWakeups.wait(agentId, ms, signal, since),
    notifyAll: () => localWakeups.notifyAll(),
    notify(agentId) {
      localWakeups.notify(agentId);
      link.wake(agentId);
    },
    close: () => localWakeups.close(),
    waiting: () => localWakeups.waiting(),
  };
  const events: EventBus = {
    publish(list: readonly CommandChanged[]) {
      localEvents.publish(list);
      for (const event of list) link.changed(event);
    },
    subscribe: (listener, onGap) => localEvents.subscribe(listener, onGap),
    gap: () => localEvents.gap(),
    get watching() {
      return localEvents.watching;
    },
  };
  return {
    wakeups,
    events,
    invalidate: (cache) => link.invalidate(cache),
    isLeader: () => link.leader,
    async close() {
      localWakeups.close();
      await link.close();
    },
  };
}

// A dedicated connection (not from the pool: LISTEN and session locks belong to one session)
// that reconnects with jittered backoff. Outgoing notifications are batched: while one NOTIFY
// is in flight the next ones gather, so a burst costs a few statements, not one per command.
// Best effort: what is lost while the link is down only delays a long-poll until its wait ends.
function createLink(
  url: string,
  logger: Logger,
  leaderRetryMs: number,
  onLinkChange: ((up: boolean) => void) | undefined,
  onMessage: (msg: Message) => void,
) {
  const replicaId = randomUUID();
  const wakes = new Set<string>();
  const changes = new Map<string, string>();
  const invalidations = new Set<string>();
  let client: pg.Client | undefined;
  let connected = false;
  let leader = false;
  let closed = false;
  let flushing: Promise<void> | undefined;
  let attempt = 0;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let leaderTimer: NodeJS.Timeout | undefined;

  const onNotification = (n: pg.Notification) => {
    if (n.channel !== CHANNEL || !n.payload) return;
    let msg: Message;
    try {
      msg = JSON.parse(n.payload) as Message;
    } catch {
      return;
    }
    if (msg.r === replicaId) return;
    onMessage(msg);
  };

  const lost = (c: pg.Client, err?: unknown) => {
    if (client !== c) return;
    client = undefined;
    if (connected) onLinkChange?.(false);
    connected = false;
    if (leader) logger.warn("lost the scheduler lock with its connection");
    leader = false;
    c.removeAllListeners("notification");
    void c.end().catch(() => {});
    if (closed) return;
    const delay = Math.round(Math.random() * Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** attempt++));
    logger.warn({ err, retryInMs: delay }, "replica link to PostgreSQL lost; reconnecting");
    reconnectTimer = setTimeout(() => void connect(), delay);
    reconnectTimer.unref();
  };

  const tryLead = async (c: pg.Client) => {
    if (leader) {
      // A leader's check that its session (and so its lock) is still there.
      await c.query("SELECT 1");
      return;
    }
    const { rows } = await c.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [LEADER_LOCK_KEY]);
    if (rows[0]?.locked && client === c) {
      leader = true;
      logger.info("this replica runs the scheduler (holds the leader lock)");
    }
  };

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString: url, keepAlive: true, connectionTimeoutMillis: 10_000, application_name: LINK_APPLICATION_NAME });
    client = c;
    c.on("error", (err) => lost(c, err));
    c.on("end", () => lost(c));
    c.on("notification", onNotification);
    try {
      await c.connect();
      await c.query(`LISTEN ${CHANNEL}`);
      if (client !== c) return;
      connected = true;
      onLinkChange?.(true);
      attempt = 0;
      await tryLead(c);
      scheduleFlush();
    } catch (err) {
      lost(c, err);
    }
  };

  const flush = async () => {
    while (connected && client && (wakes.size > 0 || changes.size > 0 || invalidations.size > 0)) {
      const payloads = encode(
        replicaId,
        [...wakes],
        [...changes].map(([commandId, agentId]) => [agentId, commandId] as [string, string]),
        [...invalidations],
      );
      wakes.clear();
      changes.clear();
      invalidations.clear();
      try {
        await client.query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", [CHANNEL, payloads]);
      } catch (err) {
        logger.warn({ err }, "cannot notify the other replicas");
      }
    }
  };
  const scheduleFlush = () => {
    if (flushing || !connected) return;
    flushing = flush().finally(() => {
      flushing = undefined;
    });
  };
  // Drops the oldest pending notifications rather than growing without bound while the link is down.
  const bound = () => {
    if (wakes.size > 100_000) wakes.clear();
    if (changes.size > 100_000) changes.clear();
    if (invalidations.size > 10_000) invalidations.clear();
  };

  return {
    async start() {
      await connect();
      leaderTimer = setInterval(() => {
        const c = client;
        if (c && connected) void tryLead(c).catch((err: unknown) => lost(c, err));
      }, leaderRetryMs);
      leaderTimer.unref();
    },
    wake(agentId: string) {
      bound();
      wakes.add(agentId);
      scheduleFlush();
    },
    changed(event: CommandChanged) {
      bound();
      changes.set(event.commandId, event.agentId);
      scheduleFlush();
    },
    invalidate(cache: string) {
      bound();
      invalidations.add(cache);
      scheduleFlush();
    },
    get leader() {
      return leader;
    },
    async close() {
      closed = true;
      clearInterval(leaderTimer);
      clearTimeout(reconnectTimer);
      await flushing;
      const c = client;
      client = undefined;
      connected = false;
      leader = false;
      // Ending the session releases the lock and the LISTEN.
      if (c) await c.end().catch(() => {});
    },
  };
}

// Splits the batch into payloads under the NOTIFY size limit.
export function encode(replicaId: string, wakes: string[], changes: [string, string][], invalidations: string[] = []): string[] {
  const out: string[] = [];
  let msg: Message = { r: replicaId };
  let size = 0;
  const push = () => {
    out.push(JSON.stringify(msg));
    msg = { r: replicaId };
    size = 0;
  };
  for (const agentId of wakes) {
    if (size + agentId.length + 4 > MAX_PAYLOAD) push();
    (msg.w ??= []).push(agentId);
    size += agentId.length + 4;
  }
  for (const pair of changes) {
    const n = pair[0].length + pair[1].length + 8;
    if (size + n > MAX_PAYLOAD) push();
    (msg.e ??= []).push(pair);
    size += n;
  }
  for (const cache of invalidations) {
    if (size + cache.length + 4 > MAX_PAYLOAD) push();
    (msg.x ??= []).push(cache);
    size += cache.length + 4;
  }
  if (msg.w || msg.e || msg.x) push();
  return out;
}

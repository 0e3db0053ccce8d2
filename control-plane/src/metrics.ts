// Prometheus metrics (prom-client), one registry per control plane. The poll path only bumps
// counters; anything that needs the database (agents by health, queue depth) is read when
// /metrics is scraped, at most once per CACHE_MS, with a timeout.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type pg from "pg";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "./log.ts";
import type { PendingIndex } from "./cluster/pending.ts";
import { healthCutoffs } from "./domain/health.ts";
import type { SignatureKind } from "./signing/signer.ts";
import { countFleet, type FleetCounts } from "./store/observability.ts";
import type { Prisma } from "./store/types.ts";

const CACHE_MS = 15_000;
const QUERY_TIMEOUT_MS = 2_000;

const HEALTHS: [keyof FleetCounts, string][] = [
  ["online", "online"],
  ["offline", "offline"],
  ["stale", "stale"],
  ["neverReported", "never_reported"],
  ["decommissioned", "decommissioned"],
];

// Connect's wire names (ok, invalid_argument, ...), indexed by code.
const CODE_NAMES: string[] = ["ok"];
for (const [name, value] of Object.entries(Code)) {
  if (typeof value === "number") CODE_NAMES[value] = name.replace(/[a-z](?=[A-Z])/g, "$&_").toLowerCase();
}

export interface MetricsSources {
  db: Prisma;
  pool: pg.Pool;
  pollIntervalSeconds: () => number;
  logger: Logger;
  pending?: Pick<PendingIndex, "synced" | "size">;
  // Long-polls this replica holds open now.
  longPolls?: () => number;
}

export interface Metrics {
  readonly registry: Registry;
  // One finished call; code 0 is success.
  rpc(method: DescMethod, code: Code | 0, seconds: number): void;
  signed(kind: SignatureKind, count: number): void;
  delivered(count: number): void;
  resultsRecorded(count: number): void;
  // One poll's look at the queue: skipped (the pending index knew there was nothing), or a claim
  // query that found nothing or delivered.
  claim(result: ClaimResult): void;
  // Connects the gauges that read the database; until then they report nothing.
  attach(sources: MetricsSources): void;
  render(): Promise<string>;
  readonly contentType: string;
}

export type ClaimResult = "skipped" | "empty" | "delivered";

interface RpcLabels {
  service: string;
  method: string;
  code: string;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const rpcTotal = new Counter({
    name: "redflag_rpc_requests_total",
    help: "Finished RPCs by service, method and Connect code.",
    labelNames: ["service", "method", "code"] as const,
    registers: [registry],
  });
  const rpcSeconds = new Histogram({
    name: "redflag_rpc_duration_seconds",
    help: "RPC latency until the response (or the first message of a stream) by service, method and Connect code.",
    labelNames: ["service", "method", "code"] as const,
    // 0.075 splits the 50–100 ms decade, where a p99 target of 50 ms is decided.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const signatures = new Counter({
    name: "redflag_signatures_total",
    help: "Ed25519 signatures made by the control plane, by what was signed.",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const deliveries = new Counter({
    name: "redflag_command_deliveries_total",
    help: "Signed commands handed to agents in poll responses.",
    registers: [registry],
  });
  const results = new Counter({
    name: "redflag_command_results_total",
    help: "Command results durably recorded (acknowledged to agents).",
    registers: [registry],
  });

  const claims = new Counter({
    name: "redflag_poll_claims_total",
    help: "Polls by what they did with the queue: skipped (nothing pending, known without a query), empty (a claim query found nothing) or delivered.",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const claimLabels = { skipped: { result: "skipped" }, empty: { result: "empty" }, delivered: { result: "delivered" } };

  let sources: MetricsSources | undefined;
  let cached: { at: number; counts: FleetCounts } | undefined;
  let loading: Promise<void> | undefined;
  const refresh = async () => {
    if (!sources || (cached && Date.now() - cached.at < CACHE_MS)) return;
    const { db, pollIntervalSeconds, logger } = sources;
    loading ??= (async () => {
      const work = countFleet(db, healthCutoffs(new Date(), pollIntervalSeconds()));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${QUERY_TIMEOUT_MS} ms`)), QUERY_TIMEOUT_MS);
      });
      try {
        cached = { at: Date.now(), counts: await Promise.race([work, timeout]) };
      } catch (err) {
        // The last values stay; /readyz tells whether the database is there.
        logger.warn({ err }, "cannot read fleet metrics from the database");
        work.catch(() => {});
      } finally {
        clearTimeout(timer);
      }
    })().finally(() => (loading = undefined));
    await loading;
  };

  new Gauge({
    name: "redflag_agents",
    help: "Registered agents by health (online, offline, stale, never_reported, decommissioned); refreshed at most every 15 s.",
    labelNames: ["health"] as const,
    registers: [registry],
    async collect() {
      await refresh();
      if (!cached) return;
      for (const [key, health] of HEALTHS) this.set({ health }, cached.counts[key]);
    },
  });
  new Gauge({
    name: "redflag_command_queue_depth",
    help: "Commands queued and not yet delivered to their agent; refreshed at most every 15 s.",
    registers: [registry],
    async collect() {
      await refresh();
      if (cached) this.set(cached.counts.pending);
    },
  });
  new Gauge({
    name: "redflag_db_pool_connections",
    help: "Database pool connections: total open, idle, and callers waiting for one.",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      if (!sources) return;
      this.set({ state: "total" }, sources.pool.totalCount);
      this.set({ state: "idle" }, sources.pool.idleCount);
      this.set({ state: "waiting" }, sources.pool.waitingCount);
    },
  });

  new Gauge({
    name: "redflag_long_polls_waiting",
    help: "PollCommands calls this replica holds open, waiting for a command (heartbeat and long-poll agents).",
    registers: [registry],
    collect() {
      if (sources?.longPolls) this.set(sources.longPolls());
    },
  });
  new Gauge({
    name: "redflag_pending_index_agents",
    help: "Agents this replica's pending-command index marks as having queued commands (their polls run a claim query).",
    registers: [registry],
    collect() {
      if (sources?.pending) this.set(sources.pending.size);
    },
  });
  new Gauge({
    name: "redflag_pending_index_synced",
    help: "1 while the pending-command index is trusted; 0 while every poll runs a claim query (starting, or the replica link is down).",
    registers: [registry],
    collect() {
      if (sources?.pending) this.set(sources.pending.synced ? 1 : 0);
    },
  });

  // Label objects are made once per method and code, not per call.
  const rpcLabels = new WeakMap<DescMethod, RpcLabels[]>();
  const labelsFor = (method: DescMethod, code: number) => {
    let byCode = rpcLabels.get(method);
    if (!byCode) rpcLabels.set(method, (byCode = []));
    return (byCode[code] ??= { service: method.parent.typeName, method: method.name, code: CODE_NAMES[code] ?? String(code) });
  };
  const signatureLabels = { command: { kind: "command" }, manifest: { kind: "manifest" }, key_set: { kind: "key_set" }, agent_config: { kind: "agent_config" } };

  return {
    registry,
    contentType: registry.contentType,
    rpc(method, code, seconds) {
      const labels = labelsFor(method, code);
      rpcTotal.inc(labels);
      rpcSeconds.observe(labels, seconds);
    },
    signed(kind, count) {
      signatures.inc(signatureLabels[kind], count);
    },
    delivered(count) {
      if (count > 0) deliveries.inc(count);
    },
    resultsRecorded(count) {
      if (count > 0) results.inc(count);
    },
    claim(result) {
      claims.inc(claimLabels[result]);
    },
    attach(next) {
      sources = next;
      cached = undefined;
    },
    render: () => registry.metrics(),
  };
}

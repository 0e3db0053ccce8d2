import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AgentService, RegisterProofSchema, RenewPayloadSchema, type PollCommandsResponse } from "@redflag/gen/agent_service_pb";
import { CommandOutcome, CommandResultSchema, CommandSchema, SubsystemRunState, type Command, type PackageUpdateSchema } from "@redflag/gen/command_pb";
import { AgentConfigSchema, OsFamily, type SignedAgentConfig } from "@redflag/gen/common_pb";
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "node:net";
import { GuardedHttp2SessionManager, retryNeverProcessed } from "../agent/src/client.ts";
import { AGENT_CONFIG_TYPE, COMMAND_TYPE, pae, REGISTER_PROOF_TYPE, RENEW_PAYLOAD_TYPE } from "@redflag/common/signing/envelope";
import { keySetRevision } from "@redflag/common/signing/key-ids";
import { jittered, seededRandom, summarize, type LatencySummary } from "./stats.ts";

export type PollMode = "interval" | "heartbeat" | "long-poll";

export interface AgentPlan {
  index: number;
  startDelayMs: number;
  mode: PollMode;
  machineId: string;
  // 32-byte Ed25519 seed, derived from the run's seed.
  secretSeed: Uint8Array;
  // The agent's own generator for its jitter, so the schedule does not depend on interleaving.
  random: () => number;
}

export interface PlanOptions {
  agents: number;
  seed: number;
  startPeriodMs: number;
  longPollShare: number;
  heartbeatShare: number;
}

// Who does what and when, from the seed alone: start offsets spread uniformly over the start
// period, a share of long-pollers and heartbeat agents, and per-agent identities.
export function planAgents(o: PlanOptions): AgentPlan[] {
  const random = seededRandom(o.seed);
  const longPolls = Math.round(o.agents * o.longPollShare);
  const heartbeats = Math.min(o.agents - longPolls, Math.round(o.agents * o.heartbeatShare));
  const plans: AgentPlan[] = [];
  for (let i = 0; i < o.agents; i++) {
    const digest = (label: string) => createHash("sha256").update(`redflag-bench\n${o.seed}\n${i}\n${label}`).digest();
    plans.push({
      index: i,
      startDelayMs: Math.floor(random() * o.startPeriodMs),
      mode: "interval",
      machineId: digest("machine-id").toString("hex"),
      secretSeed: new Uint8Array(digest("agent-key")),
      random: seededRandom(digest("jitter").readUInt32BE(0)),
    });
  }
  // Modes go to a seeded shuffle of the agents, so they are not tied to start order.
  const order = plans.map((p) => p.index);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  order.forEach((agent, k) => {
    plans[agent]!.mode = k < longPolls ? "long-poll" : k < longPolls + heartbeats ? "heartbeat" : "interval";
  });
  return plans;
}

// Ed25519 through node:crypto (OpenSSL): the simulator must not be the bottleneck, and
// @noble/ed25519 verifies about 13 times slower.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function agentKey(seed: Uint8Array): { privateKey: KeyObject; publicKey: Uint8Array } {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
  const jwk = createPublicKey(privateKey).export({ format: "jwk" });
  return { privateKey, publicKey: new Uint8Array(Buffer.from(jwk.x!, "base64url")) };
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });
}

export function errorCode(err: unknown): string {
  const code = ConnectError.from(err).code;
  return Code[code] ?? String(code);
}

export interface SimStats {
  polls: number;
  longPolls: number;
  // Latency of polls that answer at once (long-polls hold by design and are left out), recorded
  // while `steady` (a simulation sets it at the end of its start period).
  pollLatencies: number[];
  steady: boolean;
  commandsReceived: number;
  resultsAcknowledged: number;
  // Commands refused: bad signature, another agent's, or a sequence not above the last one.
  rejectedCommands: number;
  registrations: number;
  renewals: number;
  errors: Map<string, number>;
  // The first message seen for each key of `errors` (200 characters at most), to tell an
  // unexpected error's cause without a server log.
  errorMessages: Map<string, string>;
}

export function newStats(): SimStats {
  return {
    polls: 0,
    longPolls: 0,
    pollLatencies: [],
    steady: true,
    commandsReceived: 0,
    resultsAcknowledged: 0,
    rejectedCommands: 0,
    registrations: 0,
    renewals: 0,
    errors: new Map(),
    errorMessages: new Map(),
  };
}

export function countError(stats: SimStats, where: string, err: unknown) {
  const key = `${where}:${errorCode(err)}`;
  stats.errors.set(key, (stats.errors.get(key) ?? 0) + 1);
  if (!stats.errorMessages.has(key)) stats.errorMessages.set(key, (err instanceof Error ? err.message : String(err)).slice(0, 200));
}

// One HTTP/2 connection (h2c or TLS), speaking the Connect protocol in binary like the agent, and
// like it sending a call the server refused unprocessed again at once.
export function agentClient(url: string, opts: { localAddress?: string } = {}): { client: Client<typeof AgentService>; close(): void } {
  const sessionManager = new GuardedHttp2SessionManager(
    url,
    { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, idleConnectionTimeoutMs: 5 * 60_000 },
    // A source address of its own (any of 127.0.0.0/8 on loopback), so per-address limits see one machine.
    opts.localAddress ? { createConnection: (authority) => connect({ host: authority.hostname, port: Number(authority.port), localAddress: opts.localAddress }) } : undefined,
  );
  const transport = createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager, useBinaryFormat: true, interceptors: [retryNeverProcessed] });
  return { client: createClient(AgentService, transport), close: () => sessionManager.abort() };
}

// PollCommands to the echo floor shaped like a simulated agent's: a fresh 16-byte nonce, a status,
// and headers as large as an agent's (an access token of `tokenLength` characters, a machine ID).
export function floorPolls(tokenLength: number) {
  const status = { agentVersion: "0.1.0-sim", configRevision: 1n, trustedKeysRevision: 1n };
  const headers = { authorization: `Bearer ${"x".repeat(tokenLength)}`, "x-machine-id": "0".repeat(64) };
  return (client: Client<typeof AgentService>, waitSeconds: number, options: { timeoutMs: number; signal?: AbortSignal }) =>
    client.pollCommands({ nonce: crypto.getRandomValues(new Uint8Array(16)), waitSeconds, status }, { headers, ...options });
}

// A simulated agent: the real agent's protocol (Register, PollCommands with nonce and status,
// signature check before decoding, ReportResults with the command's sequence, signed Renew),
// without scanners or executors: every command "succeeds" at once.
export class SimAgent {
  agentId = "";
  private accessToken = "";
  get accessTokenLength(): number {
    return this.accessToken.length;
  }
  private refreshToken = "";
  private issuedAt = new Date(0);
  private expiresAt = new Date(0);
  private configRevision = 0n;
  private trustedKeysRevision = 0n;
  private pins = new Map<string, KeyObject>();
  private lastSequence = 0n;
  private readonly key: { privateKey: KeyObject; publicKey: Uint8Array };
  readonly plan: AgentPlan;
  private client: Client<typeof AgentService>;
  private readonly stats: SimStats;
  private readonly opts: { verify: boolean; renewAtFraction: number };

  constructor(plan: AgentPlan, client: Client<typeof AgentService>, stats: SimStats, opts: { verify: boolean; renewAtFraction: number }) {
    this.plan = plan;
    this.client = client;
    this.stats = stats;
    this.opts = opts;
    this.key = agentKey(plan.secretSeed);
  }

  // Another connection (after an outage every agent connects again).
  useClient(client: Client<typeof AgentService>) {
    this.client = client;
  }

  async register(token: string, signal?: AbortSignal): Promise<void> {
    // A fresh proof of the agent's key each time, as the real agent sends: a retry after a lost
    // answer re-registers the same machine, which the control plane allows only with it.
    const proof = toBinary(
      RegisterProofSchema,
      create(RegisterProofSchema, { machineId: this.plan.machineId, agentPublicKey: this.key.publicKey, signTime: timestampFromDate(new Date()) }),
    );
    const res = await this.client.register(
      {
        registrationToken: token,
        hostname: `sim-${this.plan.index}`,
        machineId: this.plan.machineId,
        agentPublicKey: this.key.publicKey,
        os: { family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12 (bookworm)", kernel: "6.1.0", arch: "x86_64" },
        agentVersion: "0.1.0-sim",
        proof,
        proofSignature: new Uint8Array(nodeSign(null, pae(REGISTER_PROOF_TYPE, proof), this.key.privateKey)),
      },
      // The agent's deadline (agent/src/client.ts).
      { signal, timeoutMs: 30_000 },
    );
    this.agentId = res.agentId;
    this.setTokens(res.accessToken, res.refreshToken, res.accessTokenExpireTime ? timestampDate(res.accessTokenExpireTime) : new Date());
    this.pins = new Map(res.trustedKeys.map((k) => [k.keyId, publicKeyObject(k.publicKey)]));
    this.applyConfig(res.signedConfig);
    this.trustedKeysRevision = keySetRevision([...this.pins.keys()]);
    this.stats.registrations++;
  }

  // Takes the revision of a config signed by a pinned key for this agent, as the agent does.
  private applyConfig(signed: SignedAgentConfig | undefined) {
    if (!signed) return;
    if (this.opts.verify) {
      const key = this.pins.get(signed.keyId);
      if (!key || !nodeVerify(null, pae(AGENT_CONFIG_TYPE, signed.config), key, signed.signature)) return;
    }
    const config = fromBinary(AgentConfigSchema, signed.config);
    if (config.agentId === this.agentId) this.configRevision = config.revision;
  }

  private setTokens(access: string, refresh: string, expires: Date) {
    this.accessToken = access;
    this.refreshToken = refresh;
    this.issuedAt = new Date();
    this.expiresAt = expires;
  }

  private get headers() {
    return { authorization: `Bearer ${this.accessToken}`, "x-machine-id": this.plan.machineId };
  }

  // Renews when the real agent would (same rule, with a configurable fraction for tests).
  async renewIfDue(signal?: AbortSignal): Promise<boolean> {
    const now = new Date();
    const life = this.expiresAt.getTime() - this.issuedAt.getTime();
    const remaining = this.expiresAt.getTime() - now.getTime();
    // The agent's rule (agent/src/session.ts renewDue): at 80 % of the life, or when less than
    // 90 s (or half the life) is left.
    const due = now.getTime() >= this.issuedAt.getTime() + life * this.opts.renewAtFraction || remaining < Math.min(90_000, life / 2);
    if (!due) return false;
    await this.renew(signal);
    return true;
  }

  // A Renew now, signed by the agent's key.
  async renew(signal?: AbortSignal): Promise<void> {
    const now = new Date();
    const payload = toBinary(
      RenewPayloadSchema,
      create(RenewPayloadSchema, { agentId: this.agentId, refreshToken: this.refreshToken, machineId: this.plan.machineId, signTime: timestampFromDate(now) }),
    );
    const signature = new Uint8Array(nodeSign(null, pae(RENEW_PAYLOAD_TYPE, payload), this.key.privateKey));
    const res = await this.client.renew({ payload, signature }, { signal, timeoutMs: 30_000 });
    this.setTokens(res.accessToken, res.refreshToken, res.accessTokenExpireTime ? timestampDate(res.accessTokenExpireTime) : new Date());
    this.stats.renewals++;
  }

  // One poll; returns the commands it verified (and reports their results before returning).
  // `client`: another connection of this agent's (--connections-per-agent), else its own.
  async poll(waitSeconds: number, signal?: AbortSignal, client = this.client): Promise<Command[]> {
    const started = performance.now();
    const res: PollCommandsResponse = await client.pollCommands(
      {
        nonce: nonceBytes(),
        waitSeconds,
        status: {
          agentVersion: "0.1.0-sim",
          configRevision: this.configRevision,
          lastSequence: this.lastSequence,
          trustedKeysRevision: this.trustedKeysRevision,
        },
      },
      { headers: this.headers, signal, timeoutMs: waitSeconds * 1000 + 15_000 },
    );
    this.stats.polls++;
    if (waitSeconds > 0) this.stats.longPolls++;
    else if (this.stats.steady) this.stats.pollLatencies.push(performance.now() - started);
    this.applyConfig(res.signedConfig);
    if (res.commands.length === 0) return [];

    const commands: Command[] = [];
    for (const signed of res.commands) {
      if (this.opts.verify) {
        const key = this.pins.get(signed.keyId);
        if (!key || !nodeVerify(null, pae(COMMAND_TYPE, signed.command), key, signed.signature)) {
          this.stats.rejectedCommands++;
          continue;
        }
      }
      const command = fromBinary(CommandSchema, signed.command);
      if (command.agentId !== this.agentId || command.sequence <= this.lastSequence) {
        this.stats.rejectedCommands++;
        continue;
      }
      this.lastSequence = command.sequence;
      commands.push(command);
    }
    this.stats.commandsReceived += commands.length;
    const now = timestampFromDate(new Date());
    for (const c of commands) {
      this.unacknowledged.set(c.id, { commandId: c.id, outcome: CommandOutcome.SUCCEEDED, message: "simulated", startTime: now, finishTime: now, sequence: c.sequence });
    }
    if (commands.length > 0) await this.flush(signal);
    return commands;
  }

  // One scheduled scan report of the apt source, as the agent sends it; true once acknowledged.
  async reportScan(updates: MessageInitShape<typeof PackageUpdateSchema>[], signal?: AbortSignal): Promise<boolean> {
    const id = crypto.randomUUID();
    const res = await this.client.reportResults(
      { scans: [{ id, scanTime: timestampFromDate(new Date()), result: { updates, subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN }] } }] },
      { headers: this.headers, signal, timeoutMs: 60_000 },
    );
    return res.acknowledgedScanIds.includes(id);
  }

  // Results not yet acknowledged, re-sent until they are (the agent keeps them in its journal).
  private readonly unacknowledged = new Map<string, MessageInitShape<typeof CommandResultSchema>>();

  get pendingResults(): number {
    return this.unacknowledged.size;
  }

  // Reports every unacknowledged result; a failure is counted and the results kept for the next try.
  async flush(signal?: AbortSignal): Promise<void> {
    if (this.unacknowledged.size === 0) return;
    try {
      const res = await this.client.reportResults({ results: [...this.unacknowledged.values()] }, { headers: this.headers, signal, timeoutMs: 60_000 });
      for (const id of res.acknowledgedCommandIds) if (this.unacknowledged.delete(id)) this.stats.resultsAcknowledged++;
      for (const r of res.refused) this.unacknowledged.delete(r.commandId);
    } catch (err) {
      if (!signal?.aborted) countError(this.stats, "ReportResults", err);
    }
  }
}

const nonceBytes = () => {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return b;
};

// Retries only what the real agent retries (Unavailable, DeadlineExceeded, ResourceExhausted),
// with jittered exponential backoff, until `signal` ends the run.
// `anyCode`: Register retries whatever failed, as an operator or installer re-running it would.
export async function withRetry<T>(
  fn: () => Promise<T>,
  stats: SimStats,
  where: string,
  random: () => number,
  signal: AbortSignal,
  anyCode = false,
): Promise<T | undefined> {
  let delay = 500;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (signal.aborted) return undefined;
      countError(stats, where, err);
      const code = ConnectError.from(err).code;
      const retryable = code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.ResourceExhausted;
      if (!retryable && !(anyCode && code === Code.Internal)) return undefined;
      await sleep(jittered(delay, 50, random), undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return undefined;
      delay = Math.min(delay * 2, 30_000);
    }
  }
}

// Registers, waiting out rate limits and outages like the agent; throws on anything else.
export async function registerWithRetry(agent: SimAgent, token: string, stats: SimStats): Promise<void> {
  const never = new AbortController().signal;
  const ok = await withRetry(() => agent.register(token).then(() => true), stats, "Register", agent.plan.random, never, true);
  if (!ok) throw new Error(`agent ${agent.plan.index} could not register: ${formatErrors(stats.errors)}`);
}

export interface SimulationOptions extends PlanOptions {
  url: string;
  token: string;
  durationMs: number;
  intervalMs: number;
  jitterPercent: number;
  heartbeatIntervalMs: number;
  waitSeconds: number;
  verify: boolean;
  renewAtFraction: number;
  // Agents per HTTP/2 connection (1: one connection each, like real agents).
  agentsPerConnection: number;
  // HTTP/2 connections per agent (1, the default, like real agents): each extra one polls on its
  // own schedule with the agent's token, so a fleet of many connections needs fewer Registers.
  connectionsPerAgent?: number;
  // At most this many Register calls in flight (0: each agent registers when its start time
  // comes, however many are waiting).
  registerConcurrency?: number;
  // Called for each command an agent verified, with the time it arrived.
  onCommand?: (command: Command, atMs: number) => void;
  // Only the agents with an index in [from, to) of the seeded plan: one process's share when
  // several drive one fleet (`bench:sim --processes`); the whole plan when absent.
  share?: { from: number; to: number };
}

export interface SimulationResult {
  agents: number;
  registered: number;
  elapsedSeconds: number;
  // Polls per second over the measured window (after the start period).
  pollsPerSecond: number;
  polls: number;
  latency: LatencySummary;
  stats: SimStats;
}

// Runs the simulation: agents register over the start period, then poll until the duration ends.
export async function simulate(o: SimulationOptions, outer?: AbortSignal): Promise<SimulationResult> {
  const plans = planAgents(o).filter((p) => !o.share || (p.index >= o.share.from && p.index < o.share.to));
  const stats = newStats();
  const stop = new AbortController();
  const onOuter = () => stop.abort();
  outer?.addEventListener("abort", onOuter);
  const connections: ReturnType<typeof agentClient>[] = [];
  const clientFor = (i: number) => {
    const c = Math.floor(i / Math.max(1, o.agentsPerConnection));
    connections[c] ??= agentClient(o.url);
    return connections[c]!.client;
  };
  const agents = plans.map((p) => new SimAgent(p, clientFor(p.index), stats, { verify: o.verify, renewAtFraction: o.renewAtFraction }));
  const began = performance.now();
  // Measure from the end of the start period, so the rate reflects the steady state.
  let windowStart = { at: began + o.startPeriodMs, polls: -1 };
  stats.steady = o.startPeriodMs === 0;
  const windowTimer = setTimeout(() => {
    windowStart = { at: performance.now(), polls: stats.polls };
    stats.steady = true;
  }, o.startPeriodMs);
  const endTimer = setTimeout(() => stop.abort(), o.durationMs);

  // Each agent waits and calls with a signal of its own, which the run's end aborts one by one:
  // an AbortSignal's listeners are a list that every add and remove walks, so 50,000 agents
  // sharing one made each sleep and call cost about 0.6 ms of the simulator's CPU (the 100,000-
  // agent attempt registered only 40 to 150 agents a second).
  const agentStops = agents.map(() => new AbortController());
  stop.signal.addEventListener("abort", () => {
    for (const s of agentStops) s.abort();
  });
  const gate = semaphore(o.registerConcurrency ?? 0);
  const run = async (agent: SimAgent, index: number) => {
    const { plan } = agent;
    const signal = agentStops[index]!.signal;
    await sleep(plan.startDelayMs, undefined, { signal }).catch(() => undefined);
    if (signal.aborted) return;
    const release = await gate();
    const ok = await withRetry(() => agent.register(o.token, signal).then(() => true), stats, "Register", plan.random, signal, true).finally(release);
    if (!ok) return;
    const extra = Array.from({ length: Math.max(1, o.connectionsPerAgent ?? 1) - 1 }, (_, k) => {
      const connection = agentClient(o.url);
      extraConnections.push(connection);
      return pollOnExtraConnection(agent, connection.client, seededRandom(plan.random() * 2 ** 32 + k), signal);
    });
    await Promise.all([pollLoop(agent, signal), ...extra]);
  };
  // The agent's own loop: renews when due, re-sends results, polls at its interval.
  const pollLoop = async (agent: SimAgent, signal: AbortSignal) => {
    const { plan } = agent;
    while (!signal.aborted) {
      const renewed = await withRetry(() => agent.renewIfDue(signal), stats, "Renew", plan.random, signal);
      if (renewed === undefined) {
        if (signal.aborted) return;
        continue;
      }
      const wait = plan.mode === "long-poll" ? o.waitSeconds : 0;
      await agent.flush(signal);
      try {
        const commands = await agent.poll(wait, signal);
        for (const c of commands) o.onCommand?.(c, performance.now());
        // After commands, poll again at once (the real agent does too); long-pollers always do.
        if (commands.length > 0 || plan.mode === "long-poll") continue;
      } catch (err) {
        if (signal.aborted) return;
        countError(stats, "PollCommands", err);
      }
      const interval = plan.mode === "heartbeat" ? o.heartbeatIntervalMs : o.intervalMs;
      if (interval > 0) await sleep(jittered(interval, o.jitterPercent, plan.random), undefined, { signal }).catch(() => undefined);
    }
  };
  // An extra connection's loop: polls only (renewals and results stay on the agent's own), first
  // at a random point of the interval so the connections' polls spread out.
  const pollOnExtraConnection = async (agent: SimAgent, client: ReturnType<typeof agentClient>["client"], random: () => number, signal: AbortSignal) => {
    const { plan } = agent;
    const interval = plan.mode === "heartbeat" ? o.heartbeatIntervalMs : o.intervalMs;
    await sleep(random() * interval, undefined, { signal }).catch(() => undefined);
    while (!signal.aborted) {
      try {
        const commands = await agent.poll(plan.mode === "long-poll" ? o.waitSeconds : 0, signal, client);
        for (const c of commands) o.onCommand?.(c, performance.now());
        if (commands.length > 0 || plan.mode === "long-poll") continue;
      } catch (err) {
        if (signal.aborted) return;
        countError(stats, "PollCommands", err);
      }
      if (interval > 0) await sleep(jittered(interval, o.jitterPercent, random), undefined, { signal }).catch(() => undefined);
    }
  };
  const extraConnections: ReturnType<typeof agentClient>[] = [];
  try {
    await Promise.all(agents.map((agent, i) => run(agent, i)));
  } finally {
    clearTimeout(windowTimer);
    clearTimeout(endTimer);
    outer?.removeEventListener("abort", onOuter);
    for (const c of [...connections, ...extraConnections]) c?.close();
  }
  const end = performance.now();
  const windowPolls = windowStart.polls < 0 ? stats.polls : stats.polls - windowStart.polls;
  const windowSeconds = (end - (windowStart.polls < 0 ? began : windowStart.at)) / 1000;
  return {
    agents: plans.length,
    registered: stats.registrations,
    elapsedSeconds: (end - began) / 1000,
    pollsPerSecond: windowPolls / windowSeconds,
    polls: stats.polls,
    latency: summarize(stats.pollLatencies),
    stats,
  };
}

// The shares of `agents` for `processes` processes, as even as they go: [from, to) each.
export function shares(agents: number, processes: number): { from: number; to: number }[] {
  return Array.from({ length: processes }, (_, k) => ({ from: Math.floor((agents * k) / processes), to: Math.floor((agents * (k + 1)) / processes) }));
}

// One result for a fleet simulated by several processes: counts and rates add up, latency
// percentiles come from all the samples together, the run lasts as long as the longest share.
export function mergeResults(results: SimulationResult[]): SimulationResult {
  const stats = newStats();
  for (const r of results) {
    for (const key of ["polls", "longPolls", "commandsReceived", "resultsAcknowledged", "rejectedCommands", "registrations", "renewals"] as const) stats[key] += r.stats[key];
    for (const sample of r.stats.pollLatencies) stats.pollLatencies.push(sample);
    for (const [where, n] of r.stats.errors) stats.errors.set(where, (stats.errors.get(where) ?? 0) + n);
    for (const [where, message] of r.stats.errorMessages) if (!stats.errorMessages.has(where)) stats.errorMessages.set(where, message);
  }
  const sum = (f: (r: SimulationResult) => number) => results.reduce((total, r) => total + f(r), 0);
  return {
    agents: sum((r) => r.agents),
    registered: sum((r) => r.registered),
    elapsedSeconds: Math.max(0, ...results.map((r) => r.elapsedSeconds)),
    pollsPerSecond: sum((r) => r.pollsPerSecond),
    polls: sum((r) => r.polls),
    latency: summarize(stats.pollLatencies),
    stats,
  };
}

// At most `limit` holders at a time (0: no limit); acquiring resolves to the release function.
function semaphore(limit: number): () => Promise<() => void> {
  let held = 0;
  const queue: (() => void)[] = [];
  // A release hands the slot straight to the next waiter, so the count never overshoots.
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else held--;
  };
  return async () => {
    if (limit <= 0) return () => {};
    if (held < limit) held++;
    else await new Promise<void>((resolve) => queue.push(resolve));
    return release;
  };
}

// Closed loop for the throughput benchmarks: each client repeats `call` back to back.
export async function hammer(
  clients: number,
  call: (i: number) => Promise<unknown>,
  opts: { warmupMs: number; durationMs: number },
): Promise<{ requestsPerSecond: number; latency: LatencySummary; latencySamples: number[]; errors: Map<string, number> }> {
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  let measuring = false;
  let done = false;
  let count = 0;
  const loop = async (i: number) => {
    while (!done) {
      const t = performance.now();
      try {
        await call(i);
        if (measuring) {
          latencies.push(performance.now() - t);
          count++;
        }
      } catch (err) {
        const code = errorCode(err);
        if (measuring) errors.set(code, (errors.get(code) ?? 0) + 1);
      }
    }
  };
  const loops = Array.from({ length: clients }, (_, i) => loop(i));
  await sleep(opts.warmupMs);
  measuring = true;
  const start = performance.now();
  await sleep(opts.durationMs);
  measuring = false;
  const elapsed = (performance.now() - start) / 1000;
  done = true;
  await Promise.all(loops);
  return { requestsPerSecond: count / elapsed, latency: summarize(latencies), latencySamples: latencies, errors };
}

export function formatErrors(errors: Map<string, number>): string {
  return errors.size === 0 ? "none" : [...errors].map(([k, v]) => `${k} ×${v}`).join(", ");
}

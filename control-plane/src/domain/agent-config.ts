import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { SUBSYSTEMS } from "@redflag/common/sources";
import {
  type AgentConfig,
  AgentConfigSchema,
  type PackageHold,
  PackageHoldSchema,
  type SignedAgentConfig,
  type SubsystemConfig,
  SubsystemConfigSchema,
} from "@redflag/gen/common_pb";
import type { EffectiveSettings, Settings } from "../settings.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { allAgentConfigOverrides } from "../store/agents.ts";
import { allHolds } from "../store/holds.ts";
import type { Prisma } from "../store/types.ts";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { createHash } from "node:crypto";

// Package sources the agent knows, then the host metrics; each is a subsystem the operator can tune.
export { SUBSYSTEMS };

const METRIC_INTERVALS: Partial<Record<string, number>> = { system: 15 * 60, storage: 3600 };

// The effective config for agents. Its revision is derived from its content, so any change
// (here or, later, per-agent overrides) is delivered without bookkeeping.
export function buildAgentConfig(
  settings: Pick<EffectiveSettings, "pollIntervalSeconds" | "pollJitterPercent" | "commandTimeoutSeconds">,
  holds: readonly PackageHold[] = [],
  overrides: readonly SubsystemConfig[] = [],
): AgentConfig {
  const own = new Map(overrides.map((o) => [o.name, o]));
  const body = create(AgentConfigSchema, {
    holds: [...holds],
    pollIntervalSeconds: settings.pollIntervalSeconds,
    pollJitterPercent: settings.pollJitterPercent,
    commandTimeoutSeconds: settings.commandTimeoutSeconds,
    subsystems: SUBSYSTEMS.map((name) => own.get(name) ?? defaultSubsystem(name)),
  });
  const digest = createHash("sha256").update(toBinary(AgentConfigSchema, body)).digest();
  // 53 bits keeps the revision exact in JSON clients too.
  body.revision = digest.readBigUInt64BE(0) & 0x1f_ffff_ffff_ffffn;
  return body;
}

// Every source is scanned on its own schedule; metrics more often than packages.
export function defaultSubsystem(name: string): SubsystemConfig {
  return create(SubsystemConfigSchema, {
    name,
    enabled: true,
    autoRun: true,
    intervalSeconds: METRIC_INTERVALS[name] ?? 6 * 3600,
    timeoutSeconds: 15 * 60,
    circuitBreaker: { failureThreshold: 3, windowSeconds: 3600, cooldownSeconds: 30 * 60 },
  });
}

export interface AgentConfigs {
  // The config for one agent: the server's settings plus fleet-wide and its own holds.
  forAgent(agentId: string): Promise<AgentConfig>;
  // The same config as the agent receives it: bound to the agent's ID and to the time the holds
  // were read (agents refuse a config issued before the one they apply), and signed. It is
  // signed once per agent, config and signing key and then cached: a poll signs only when it
  // delivers a config the agent does not have yet, and an idle poll never does.
  signedForAgent(agentId: string, signer: CommandSigner): Promise<SignedAgentConfig>;
  // After a change to holds: the next poll of each agent gets the new config.
  invalidate(): void;
}

// Holds are read from the database at most every `refreshMs` (so replicas pick up each
// other's changes) and the configs built from them are cached, so an idle poll does not touch
// the database for its config: one config shared by every agent without holds or overrides of
// its own, and one per agent that has some (at 100,000 agents a map entry each, rebuilt after
// every read, was old-generation garbage for the garbage collector every 30 s).
export function createAgentConfigs(db: Prisma, settings: Settings, refreshMs = 30_000): AgentConfigs {
  // `readAt` is when the read began: what it returned was current then, so it is the issue time
  // of every config built from it. A later read (here or on another replica) sees at least the
  // same changes, so issue times order configs by the state they reflect, not by when they were
  // signed: a replica with a stale cache cannot sign an old config as newer.
  // `shared`: the config of every agent without holds or overrides of its own (most of a
  // fleet), built once per state; only the others get an entry in `built`.
  type State = {
    at: number;
    readAt: Timestamp;
    global: PackageHold[];
    byAgent: Map<string, PackageHold[]>;
    overrides: Map<string, SubsystemConfig[]>;
    shared?: AgentConfig;
  };
  const built = new Map<string, AgentConfig>();
  // Per agent: the config last signed for it, with which key, and the result.
  const signed = new Map<string, { config: AgentConfig; keyId: string; signed: SignedAgentConfig }>();
  // A config's serialized content, shared by every agent that gets the same object.
  const content = new WeakMap<AgentConfig, Uint8Array>();
  let fleetWide = buildAgentConfig(settings);
  // Strictly increasing on this replica, in microseconds: a read right after a change never
  // shares its issue time with the read before it.
  let lastRead = 0;
  const readTime = (): Timestamp => {
    const micros = Math.max(Date.now() * 1000, lastRead + 1);
    lastRead = micros;
    return create(TimestampSchema, { seconds: BigInt(Math.floor(micros / 1e6)), nanos: (micros % 1e6) * 1000 });
  };
  const load = async (): Promise<State> => {
    const readAt = readTime();
    const rows = await allHolds(db);
    const toProto = (h: (typeof rows)[number]) => create(PackageHoldSchema, { source: h.source, name: h.name, reason: h.reason });
    const byAgent = new Map<string, PackageHold[]>();
    for (const h of rows) if (h.agentId) byAgent.set(h.agentId, [...(byAgent.get(h.agentId) ?? []), toProto(h)]);
    const own = await allAgentConfigOverrides(db);
    const overrides = new Map(own.map((a) => [a.id, agentOverrides(a.config)]));
    return { at: Date.now(), readAt, global: rows.filter((h) => !h.agentId).map(toProto), byAgent, overrides };
  };
  // The last state read. When it is due for a refresh, polls keep using it while the refresh
  // runs, so none waits for the holds query but the first one after start or an invalidation.
  let ready: State | undefined;
  let reading: Promise<State> | undefined;
  // Bumped by invalidate(): a read that began before it must not become the state.
  let epoch = 0;
  const refresh = () => {
    if (reading) return reading;
    const started = epoch;
    const p = load()
      .then((state) => {
        if (epoch === started) {
          ready = state;
          built.clear();
          signed.clear();
          fleetWide = buildAgentConfig(settings);
        }
        return state;
      })
      .finally(() => {
        if (reading === p) reading = undefined;
      });
    reading = p;
    return p;
  };
  const current = async (): Promise<State> => {
    if (ready) {
      if (ready.at + refreshMs < Date.now()) refresh().catch(() => undefined);
      return ready;
    }
    return refresh();
  };
  const configFor = (agentId: string, state: State): AgentConfig => {
    const ownHolds = state.byAgent.get(agentId);
    const own = state.overrides.get(agentId);
    // The poll path: two lookups, nothing allocated.
    if (!ownHolds?.length && !own?.length) {
      return (state.shared ??= state.global.length === 0 ? fleetWide : buildAgentConfig(settings, state.global));
    }
    const cached = built.get(agentId);
    if (cached && state === ready) return cached;
    const cfg = buildAgentConfig(settings, [...state.global, ...(ownHolds ?? [])], own);
    if (state === ready) {
      if (built.size > 100_000) built.clear();
      built.set(agentId, cfg);
    }
    return cfg;
  };
  const configs: AgentConfigs = {
    async forAgent(agentId) {
      return configFor(agentId, await current());
    },
    async signedForAgent(agentId, signer) {
      const state = await current();
      const config = configFor(agentId, state);
      const hit = signed.get(agentId);
      if (hit && hit.config === config && hit.keyId === signer.activeKeyId) return hit.signed;
      let bytes = content.get(config);
      if (!bytes) content.set(config, (bytes = toBinary(AgentConfigSchema, config)));
      const result = signer.signAgentConfig({ agentId, issueTime: state.readAt }, bytes);
      if (state === ready) {
        if (signed.size > 100_000) signed.clear();
        signed.set(agentId, { config, keyId: signer.activeKeyId, signed: result });
      }
      return result;
    },
    invalidate() {
      epoch++;
      ready = undefined;
      reading = undefined;
      built.clear();
      signed.clear();
      fleetWide = buildAgentConfig(settings);
    },
  };
  settings.onChange(() => configs.invalidate());
  return configs;
}

// An agent's stored overrides: a serialized AgentConfig holding only the subsystems it sets.
export function agentOverrides(stored: Uint8Array | null): SubsystemConfig[] {
  if (!stored || stored.length === 0) return [];
  try {
    return fromBinary(AgentConfigSchema, stored).subsystems;
  } catch {
    return [];
  }
}

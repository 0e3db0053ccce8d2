import type { Config } from "./config.ts";
import { formatDuration, parseDuration } from "@redflag/common/config-values";
import type { Redelivery } from "./store/commands.ts";
import { readSettings } from "./store/settings.ts";
import type { Prisma } from "./store/types.ts";

// Operational settings an admin can change at run time, stored in the database. The
// environment gives the defaults; a stored value wins. Every value is checked against its
// definition before it is stored, so a running server never sees a bad one. The rest of the
// control plane reads only the effective values, typed, from `Settings` (below): never the
// environment's default of a setting, and never a setting by its key.

export type SettingType = "duration" | "integer" | "version";

export interface SettingDefinition {
  key: string;
  // Its name in Settings: durations in seconds, integers as numbers, versions as text.
  property: string;
  type: SettingType;
  description: string;
  // Bounds: seconds for durations.
  min?: number;
  max?: number;
  // The default, as text, from the environment's configuration.
  fallback(config: Config): string;
}

const day = 86_400;

export const SETTINGS = [
  { key: "poll_interval", property: "pollIntervalSeconds", type: "duration", min: 10, max: 3600, description: "How often an idle agent polls", fallback: (c) => formatDuration(c.settingDefaults.pollIntervalSeconds) },
  { key: "poll_jitter_percent", property: "pollJitterPercent", type: "integer", min: 0, max: 100, description: "Random spread of each poll interval, in percent", fallback: (c) => String(c.settingDefaults.pollJitterPercent) },
  { key: "command_timeout", property: "commandTimeoutSeconds", type: "duration", min: 30, max: day, description: "How long an agent lets a command run when the command sets no timeout", fallback: (c) => formatDuration(c.settingDefaults.commandTimeoutSeconds) },
  { key: "command_expiry", property: "commandExpirySeconds", type: "duration", min: 60, max: day, description: "How long a delivered command stays valid (its signed expiry)", fallback: (c) => formatDuration(c.settingDefaults.commandExpirySeconds) },
  { key: "result_timeout", property: "resultTimeoutSeconds", type: "duration", min: 60, max: 7 * day, description: "How long after delivery a command without a result becomes timed out", fallback: (c) => formatDuration(c.settingDefaults.resultTimeoutSeconds) },
  { key: "delivery_lease", property: "deliveryLeaseSeconds", type: "duration", min: 10, max: day, description: "How long after a delivery without a result the command may be delivered again (freshly signed) at the agent's next poll", fallback: (c) => formatDuration(c.settingDefaults.deliveryLeaseSeconds) },
  { key: "max_deliveries", property: "maxDeliveries", type: "integer", min: 1, max: 20, description: "Deliveries a command gets at most without a result (1: never again); then it times out", fallback: (c) => String(c.settingDefaults.maxDeliveries) },
  { key: "login_failures_per_user", property: "loginFailuresPerUser", type: "integer", min: 3, max: 100, description: "Failed sign-ins for one username from one address before each further one makes the next attempt wait (1 s, doubling, at most 15 minutes)", fallback: () => "10" },
  { key: "login_failures_per_address", property: "loginFailuresPerAddress", type: "integer", min: 5, max: 1000, description: "Failed sign-ins from one address before each further one makes the next attempt from there wait (1 s, doubling, at most 15 minutes)", fallback: () => "20" },
  { key: "minimum_agent_version", property: "minimumAgentVersion", type: "version", description: 'Agents older than this cannot register, and those already registered may only be upgraded: other commands for them are refused (empty: any). For example "0.2.0"', fallback: () => "" },
  { key: "agent_upgrade_timeout", property: "agentUpgradeTimeoutSeconds", type: "duration", min: 60, max: day, description: "How long after an agent received an upgrade it has to report the new version before the upgrade counts as failed", fallback: () => "15m" },
  { key: "auto_upgrade_batch", property: "autoUpgradeBatch", type: "integer", min: 0, max: 1000, description: "Automatic upgrade of agents older than the newest release for their platform: at most this many at once (0: off)", fallback: () => "0" },
  { key: "auto_upgrade_max_failures", property: "autoUpgradeMaxFailures", type: "integer", min: 0, max: 1000, description: "The automatic upgrade stops once more than this many of its upgrades to the newest releases failed or were rolled back", fallback: () => "2" },
  { key: "retention_commands", property: "retentionCommandsSeconds", type: "duration", min: day, max: 3650 * day, description: "How long finished commands, their results and the update history are kept", fallback: () => "180d" },
  { key: "retention_metrics", property: "retentionMetricsSeconds", type: "duration", min: day, max: 3650 * day, description: "How long host metric readings (CPU, memory, disks) are kept", fallback: () => "30d" },
  { key: "retention_audit", property: "retentionAuditSeconds", type: "duration", min: 30 * day, max: 3650 * day, description: "How long audit entries are kept", fallback: () => "400d" },
  { key: "retention_security_events", property: "retentionSecurityEventsSeconds", type: "duration", min: 30 * day, max: 3650 * day, description: "How long security events are kept", fallback: () => "400d" },
] as const satisfies readonly SettingDefinition[];

type Defined = (typeof SETTINGS)[number];

// The effective value of every setting, typed: one property per definition above.
export type EffectiveSettings = { readonly [D in Defined as D["property"]]: D["type"] extends "version" ? string : number };

const byKey = new Map<string, SettingDefinition>(SETTINGS.map((s) => [s.key, s]));

// A value in canonical form, or the reason it is refused.
export function normalise(key: string, raw: string): { value: string } | { error: string } {
  const def = byKey.get(key);
  if (!def) return { error: `"${key.slice(0, 64)}" is not a setting (${SETTINGS.map((s) => s.key).join(", ")})` };
  const text = raw.trim();
  switch (def.type) {
    case "duration": {
      let seconds: number;
      try {
        seconds = parseDuration(text);
      } catch (err) {
        return { error: `${key}: ${(err as Error).message}` };
      }
      if (def.min !== undefined && seconds < def.min) return { error: `${key} must be at least ${formatDuration(def.min)}` };
      if (def.max !== undefined && seconds > def.max) return { error: `${key} must be at most ${formatDuration(def.max)}` };
      return { value: formatDuration(seconds) };
    }
    case "integer": {
      if (!/^-?\d+$/.test(text)) return { error: `${key} must be a whole number` };
      const n = Number(text);
      if ((def.min !== undefined && n < def.min) || (def.max !== undefined && n > def.max)) return { error: `${key} must be from ${def.min} to ${def.max}` };
      return { value: String(n) };
    }
    case "version":
      if (text !== "" && !/^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/.test(text)) return { error: `${key} must be a version like 1.2.3, or empty` };
      return { value: text };
  }
}

// Which delivered commands without a result are handed out again now: the lease ran out, the
// result timeout has not, and they were not delivered max_deliveries times already.
export function redeliveryWindow(settings: Pick<EffectiveSettings, "deliveryLeaseSeconds" | "resultTimeoutSeconds" | "maxDeliveries">, now: Date): Redelivery {
  return {
    sentBefore: new Date(now.getTime() - settings.deliveryLeaseSeconds * 1000),
    sentAfter: new Date(now.getTime() - settings.resultTimeoutSeconds * 1000),
    maxDeliveries: settings.maxDeliveries,
  };
}

// -1, 0 or 1, comparing the numeric parts of two versions (pre-release tags sort first).
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const [core, pre] = v.split(/-(.*)/s);
    return { nums: (core ?? "").split("+")[0]!.split(".").map((n) => Number(n) || 0), pre: pre ?? "" };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i++) {
    const d = (x.nums[i] ?? 0) - (y.nums[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (x.pre === y.pre) return 0;
  if (!x.pre) return 1;
  if (!y.pre) return -1;
  return x.pre < y.pre ? -1 : 1;
}

export interface SettingValue {
  def: SettingDefinition;
  // Canonical text (normalise()): the stored value, or else the default.
  value: string;
  defaultValue: string;
  isDefault: boolean;
  updatedBy: string;
  updatedAt: Date | undefined;
}

// The one view of the runtime settings: each property of EffectiveSettings is the stored value
// if there is one, else the environment's default. Reading a property after refreshMs since the
// last load starts a reload in the background (so replicas see each other's changes) and
// answers from the values loaded so far.
export interface Settings extends EffectiveSettings {
  // Reads the stored values (at start, after a change, and every refreshMs for other replicas).
  load(): Promise<void>;
  all(): SettingValue[];
  // Runs after every load that changed something.
  onChange(listener: () => void): void;
}

type Stored = Map<string, { value: string; updatedBy: string; updatedAt: Date }>;

// Canonical text as the typed value its property holds.
function typed(def: SettingDefinition, text: string): number | string {
  switch (def.type) {
    case "duration":
      return parseDuration(text);
    case "integer":
      return Number(text);
    case "version":
      return text;
  }
}

export function createSettings(db: Prisma, config: Config, refreshMs = 30_000): Settings {
  const defaults = new Map<string, string>(SETTINGS.map((def) => [def.key, def.fallback(config)]));
  const effective = (stored: Stored): EffectiveSettings =>
    Object.freeze(Object.fromEntries(SETTINGS.map((def) => [def.property, typed(def, stored.get(def.key)?.value ?? defaults.get(def.key)!)]))) as EffectiveSettings;
  let stored: Stored = new Map();
  let values = effective(stored);
  let loadedAt = 0;
  const listeners: (() => void)[] = [];
  const current = () => {
    if (Date.now() - loadedAt > refreshMs) void settings.load().catch(() => undefined);
    return values;
  };
  const view = {
    async load() {
      const rows = await readSettings(db, SETTINGS.map((s) => s.key));
      const next: Stored = new Map();
      for (const r of rows) {
        const checked = normalise(r.key, typeof r.value === "string" ? r.value : String(r.value));
        if ("value" in checked) next.set(r.key, { value: checked.value, updatedBy: r.updatedBy, updatedAt: r.updatedAt });
      }
      const changed = JSON.stringify([...next].map(([k, v]) => [k, v.value])) !== JSON.stringify([...stored].map(([k, v]) => [k, v.value]));
      stored = next;
      values = effective(next);
      loadedAt = Date.now();
      if (changed) for (const l of listeners) l();
    },
    all: (): SettingValue[] =>
      SETTINGS.map((def) => {
        const row = stored.get(def.key);
        const defaultValue = defaults.get(def.key)!;
        return { def, value: row?.value ?? defaultValue, defaultValue, isDefault: !row, updatedBy: row?.updatedBy ?? "", updatedAt: row?.updatedAt };
      }),
    onChange: (listener: () => void) => void listeners.push(listener),
  };
  for (const def of SETTINGS) {
    Object.defineProperty(view, def.property, { enumerable: true, get: () => current()[def.property] });
  }
  const settings = view as Settings;
  return settings;
}

import type { Config } from "./config.ts";
import { formatDuration, parseDuration } from "@redflag/common/config-values";
import type { Redelivery } from "./store/commands.ts";
import type { Prisma } from "./store/types.ts";

// Operational settings an admin can change at run time, stored in the database. The
// environment gives the defaults; a stored value wins. Every value is checked against its
// definition before it is stored, so a running server never sees a bad one.

export type SettingType = "duration" | "integer" | "version";

export interface SettingDefinition {
  key: string;
  type: SettingType;
  description: string;
  // Bounds: seconds for durations.
  min?: number;
  max?: number;
  // The default, as text, from the environment's configuration.
  fallback(config: Config): string;
}

const day = 86_400;

export const SETTINGS: readonly SettingDefinition[] = [
  { key: "poll_interval", type: "duration", min: 10, max: 3600, description: "How often an idle agent polls", fallback: (c) => formatDuration(c.pollIntervalSeconds) },
  { key: "poll_jitter_percent", type: "integer", min: 0, max: 100, description: "Random spread of each poll interval, in percent", fallback: (c) => String(c.pollJitterPercent) },
  { key: "command_timeout", type: "duration", min: 30, max: day, description: "How long an agent lets a command run when the command sets no timeout", fallback: (c) => formatDuration(c.commandTimeoutSeconds) },
  { key: "command_expiry", type: "duration", min: 60, max: day, description: "How long a delivered command stays valid (its signed expiry)", fallback: (c) => formatDuration(c.commandExpirySeconds) },
  { key: "result_timeout", type: "duration", min: 60, max: 7 * day, description: "How long after delivery a command without a result becomes timed out", fallback: (c) => formatDuration(c.resultTimeoutSeconds) },
  { key: "delivery_lease", type: "duration", min: 10, max: day, description: "How long after a delivery without a result the command may be delivered again (freshly signed) at the agent's next poll", fallback: (c) => formatDuration(c.deliveryLeaseSeconds) },
  { key: "max_deliveries", type: "integer", min: 1, max: 20, description: "Deliveries a command gets at most without a result (1: never again); then it times out", fallback: (c) => String(c.maxDeliveries) },
  { key: "login_failures_per_user", type: "integer", min: 3, max: 100, description: "Failed sign-ins for one username from one address before each further one makes the next attempt wait (1 s, doubling, at most 15 minutes)", fallback: () => "10" },
  { key: "login_failures_per_address", type: "integer", min: 5, max: 1000, description: "Failed sign-ins from one address before each further one makes the next attempt from there wait (1 s, doubling, at most 15 minutes)", fallback: () => "20" },
  { key: "minimum_agent_version", type: "version", description: 'Agents older than this cannot register, and those already registered may only be upgraded: other commands for them are refused (empty: any). For example "0.2.0"', fallback: () => "" },
  { key: "agent_upgrade_timeout", type: "duration", min: 60, max: day, description: "How long after an agent received an upgrade it has to report the new version before the upgrade counts as failed", fallback: () => "15m" },
  { key: "auto_upgrade_batch", type: "integer", min: 0, max: 1000, description: "Automatic upgrade of agents older than the newest release for their platform: at most this many at once (0: off)", fallback: () => "0" },
  { key: "auto_upgrade_max_failures", type: "integer", min: 0, max: 1000, description: "The automatic upgrade stops once more than this many of its upgrades to the newest releases failed or were rolled back", fallback: () => "2" },
  { key: "retention_commands", type: "duration", min: day, max: 3650 * day, description: "How long finished commands, their results and the update history are kept", fallback: () => "180d" },
  { key: "retention_metrics", type: "duration", min: day, max: 3650 * day, description: "How long host metric readings (CPU, memory, disks) are kept", fallback: () => "30d" },
  { key: "retention_audit", type: "duration", min: 30 * day, max: 3650 * day, description: "How long audit entries are kept", fallback: () => "400d" },
  { key: "retention_security_events", type: "duration", min: 30 * day, max: 3650 * day, description: "How long security events are kept", fallback: () => "400d" },
];

const byKey = new Map(SETTINGS.map((s) => [s.key, s]));

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
export function redeliveryWindow(settings: Pick<Settings, "seconds" | "text">, now: Date): Redelivery {
  return {
    sentBefore: new Date(now.getTime() - settings.seconds("delivery_lease") * 1000),
    sentAfter: new Date(now.getTime() - settings.seconds("result_timeout") * 1000),
    maxDeliveries: Number(settings.text("max_deliveries")),
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
  value: string;
  isDefault: boolean;
  updatedBy: string;
  updatedAt: Date | undefined;
}

export interface Settings {
  // Reads the stored values (at start, after a change, and every refreshMs for other replicas).
  load(): Promise<void>;
  all(): SettingValue[];
  seconds(key: string): number;
  text(key: string): string;
  // Runs after every load that changed something.
  onChange(listener: () => void): void;
}

export function createSettings(db: Prisma, config: Config, refreshMs = 30_000): Settings {
  let stored = new Map<string, { value: string; updatedBy: string; updatedAt: Date }>();
  let loadedAt = 0;
  const listeners: (() => void)[] = [];
  const current = (key: string) => {
    const def = byKey.get(key);
    if (!def) throw new Error(`unknown setting ${key}`);
    if (Date.now() - loadedAt > refreshMs) void settings.load().catch(() => undefined);
    const row = stored.get(key);
    return { def, value: row?.value ?? def.fallback(config), row };
  };
  const settings: Settings = {
    async load() {
      const rows = await db.setting.findMany({ where: { key: { in: SETTINGS.map((s) => s.key) } } });
      const next = new Map<string, { value: string; updatedBy: string; updatedAt: Date }>();
      for (const r of rows) {
        const checked = normalise(r.key, typeof r.value === "string" ? r.value : String(r.value));
        if ("value" in checked) next.set(r.key, { value: checked.value, updatedBy: r.updatedBy, updatedAt: r.updatedAt });
      }
      const changed = JSON.stringify([...next].map(([k, v]) => [k, v.value])) !== JSON.stringify([...stored].map(([k, v]) => [k, v.value]));
      stored = next;
      loadedAt = Date.now();
      if (changed) for (const l of listeners) l();
    },
    all: () =>
      SETTINGS.map((def) => {
        const row = stored.get(def.key);
        return { def, value: row?.value ?? def.fallback(config), isDefault: !row, updatedBy: row?.updatedBy ?? "", updatedAt: row?.updatedAt };
      }),
    seconds: (key) => parseDuration(current(key).value),
    text: (key) => current(key).value,
    onChange: (listener) => void listeners.push(listener),
  };
  return settings;
}

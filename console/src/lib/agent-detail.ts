import { timestampDate } from "@bufbuild/protobuf/wkt";
import { CommandType, PackageResultState, SubsystemRunState } from "@redflag/gen/command_pb";
import { CommandCreator, CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import type { MetricSample } from "@redflag/gen/report_service_pb";
import { isSubsystem, type SubsystemName } from "@redflag/common/sources";
import { parseDuration } from "./format.ts";

// Helpers for the agent detail page that need no component: who queued a command, what the
// command history says about heartbeat, and the readings as sparkline points.

// Commands record who queued them: a name for display (the username for people, also through
// their API tokens; the key's name for the bootstrap admin key, such as "admin.key"; "system"
// for the control plane itself) and the kind of caller, which the control plane takes from the
// verified credential. The kind decides; names do not say (a person may be called "build-key").

// Commands recorded before the control plane stored the kind have it unspecified; for those
// the name is all there is, and a name ending in ".key"/"-key" is taken as a key.
const NON_PEOPLE = new Set(["", "system", "scheduler", "control-plane", "anonymous"]);
export function isPersonName(name: string): boolean {
  return !NON_PEOPLE.has(name) && !/[.\-_]key$/.test(name) && name !== "key";
}

export function isPerson(name: string, kind: CommandCreator): boolean {
  switch (kind) {
    case CommandCreator.PERSON:
    case CommandCreator.API_TOKEN:
      return true;
    case CommandCreator.ADMIN_KEY:
    case CommandCreator.SYSTEM:
      return false;
    default:
      return isPersonName(name);
  }
}

// "ana", or "the system (admin.key)" for keys and the control plane itself.
export function actorLabel(name: string, kind: CommandCreator): string {
  if (isPerson(name, kind)) return name;
  if (name === "" || name === "system") return "the system";
  return `the system (${name})`;
}

// Subsystem names as people know them; unknown ones as they are.
// Typed by the shared list: a new source without a label fails the type check.
const SUBSYSTEM_LABELS: Record<SubsystemName, string> = {
  apt: "APT",
  dnf: "DNF",
  zypper: "Zypper",
  pacman: "pacman",
  snap: "Snap",
  flatpak: "Flatpak",
  brew: "Homebrew",
  winget: "winget",
  windows_update: "Windows Update",
  docker: "Docker images",
  system: "System metrics",
  storage: "Storage",
};
export const subsystemLabel = (name: string) => (isSubsystem(name) ? SUBSYSTEM_LABELS[name] : name);

// The package sources that are not on this host, as its most recent scans found (each source
// by the latest scan that ran it, commands newest first). A source never scanned is not counted.
export function absentSources(commands: readonly CommandInfo[]): string[] {
  const latest = new Map<string, SubsystemRunState>();
  for (const c of commands) {
    if (c.type !== CommandType.SCAN_UPDATES || c.result?.detail?.case !== "scanUpdates") continue;
    for (const run of c.result.detail.value.subsystems) if (!latest.has(run.subsystem)) latest.set(run.subsystem, run.state);
  }
  return [...latest].filter(([, state]) => state === SubsystemRunState.NOT_PRESENT).map(([name]) => name).sort();
}

export type HeartbeatPhase = "on" | "off" | "turning-on" | "turning-off" | "expired" | "failed";

export interface HeartbeatState {
  phase: HeartbeatPhase;
  // The command that decided it (the latest enable or disable), if any.
  command: CommandInfo | undefined;
  // Who queued that command; "" and unspecified when there is none.
  by: string;
  byKind: CommandCreator;
  byPerson: boolean;
  until: Date | undefined;
  intervalSeconds: number;
}

const HEARTBEAT_TYPES = new Set([CommandType.ENABLE_HEARTBEAT, CommandType.DISABLE_HEARTBEAT]);
const createdMs = (c: CommandInfo) => (c.createTime ? timestampDate(c.createTime).getTime() : 0);

// Rapid polling as the command history tells it: the latest enable or disable decides, and an
// enable is on only once the agent confirmed it and until the time it reported.
export function heartbeatState(commands: readonly CommandInfo[], now = Date.now()): HeartbeatState {
  const latest = commands.filter((c) => HEARTBEAT_TYPES.has(c.type)).sort((a, b) => createdMs(b) - createdMs(a))[0];
  const by = latest?.createdBy ?? "";
  const byKind = latest?.createdByKind ?? CommandCreator.UNSPECIFIED;
  const base = { command: latest, by, byKind, byPerson: latest ? isPerson(by, byKind) : false, until: undefined, intervalSeconds: 0 };
  if (!latest) return { ...base, phase: "off" };
  const enable = latest.type === CommandType.ENABLE_HEARTBEAT;
  if (latest.state === CommandState.PENDING || latest.state === CommandState.SENT) return { ...base, phase: enable ? "turning-on" : "turning-off" };
  if (!enable) return { ...base, phase: latest.state === CommandState.SUCCEEDED ? "off" : "failed" };
  if (latest.state !== CommandState.SUCCEEDED) return { ...base, phase: "failed" };
  const detail = latest.result?.detail;
  const hb = detail?.case === "heartbeat" ? detail.value : undefined;
  const until = hb?.until ? timestampDate(hb.until) : undefined;
  const state = { ...base, until, intervalSeconds: hb?.intervalSeconds ?? 0 };
  if (!until || until.getTime() <= now) return { ...state, phase: "expired" };
  return { ...state, phase: "on" };
}

// A duration field: "10m", "6h", "90s", "2d", or plain seconds ("300"). Undefined when it is
// not one.
export function parseDurationInput(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  return parseDuration(t);
}

// Seconds as the shortest exact duration text the form accepts: 21600 → "6h", 90 → "90s".
export function durationInput(seconds: number): string {
  for (const [unit, size] of [["d", 86_400], ["h", 3600], ["m", 60]] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

export interface Point {
  time: Date;
  value: number;
}

const sampleTime = (s: MetricSample) => (s.time ? timestampDate(s.time) : new Date(0));

export const cpuPoints = (samples: readonly MetricSample[]): Point[] =>
  samples.flatMap((s) => (s.system ? [{ time: sampleTime(s), value: s.system.cpuUsagePercent }] : []));

export const memoryPoints = (samples: readonly MetricSample[]): Point[] =>
  samples.flatMap((s) =>
    s.system && s.system.memoryTotalBytes > 0n ? [{ time: sampleTime(s), value: (Number(s.system.memoryUsedBytes) / Number(s.system.memoryTotalBytes)) * 100 }] : [],
  );

// Used share of each mounted file system over time, by mount point, in the order of the latest
// reading.
export function diskPoints(samples: readonly MetricSample[]): { mount: string; points: Point[] }[] {
  const byMount = new Map<string, Point[]>();
  for (const s of samples) {
    for (const d of s.storage?.disks ?? []) {
      if (d.sizeBytes === 0n) continue;
      const list = byMount.get(d.mountPoint) ?? [];
      list.push({ time: sampleTime(s), value: (Number(d.usedBytes) / Number(d.sizeBytes)) * 100 });
      byMount.set(d.mountPoint, list);
    }
  }
  const latest = samples.findLast((s) => s.storage)?.storage?.disks.map((d) => d.mountPoint) ?? [];
  const order = [...new Set([...latest, ...byMount.keys()])];
  return order.filter((m) => byMount.has(m)).map((mount) => ({ mount, points: byMount.get(mount)! }));
}

// A package the host installed (or rolled back) recently, as its command history says: what
// a rollback can be offered for.
export interface InstalledPackage {
  source: string;
  name: string;
  architecture: string;
  fromVersion: string;
  toVersion: string;
  // When the command that installed it finished (ms), and which command it was.
  time: number;
  commandId: string;
}

// Each package installed by the finished installs, confirmations and rollbacks in `commands`,
// once (its latest change), newest first.
export function recentlyInstalled(commands: readonly CommandInfo[]): InstalledPackage[] {
  const latest = new Map<string, InstalledPackage>();
  for (const c of commands) {
    const detail = c.result?.detail;
    if (detail?.case !== "installUpdates" && detail?.case !== "confirmDependencies" && detail?.case !== "rollbackUpdate") continue;
    const time = c.finishTime ? timestampDate(c.finishTime).getTime() : c.createTime ? timestampDate(c.createTime).getTime() : 0;
    for (const p of detail.value.packages) {
      if (p.state !== PackageResultState.INSTALLED) continue;
      const key = `${p.source}\u0000${p.name}\u0000${p.architecture}`;
      const seen = latest.get(key);
      if (seen && seen.time >= time) continue;
      latest.set(key, { source: p.source, name: p.name, architecture: p.architecture, fromVersion: p.fromVersion, toVersion: p.toVersion, time, commandId: c.id });
    }
  }
  return [...latest.values()].sort((a, b) => b.time - a.time || a.name.localeCompare(b.name));
}

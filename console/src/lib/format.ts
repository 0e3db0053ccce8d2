import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { CommandType, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandCreator, CommandState } from "@redflag/gen/command_service_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { UpdateStatus } from "@redflag/gen/update_service_pb";

// Words for people, from the generated enums: COMMAND_STATE_TIMED_OUT → "timed out".
export const enumLabel = (values: Record<number, string>, v: number): string =>
  (values[v] ?? "unknown").toLowerCase().replace(/_/g, " ").replace("unspecified", "unknown");

export const healthLabel = (h: AgentHealth) => enumLabel(AgentHealth, h);
export const stateLabel = (s: CommandState) => enumLabel(CommandState, s);
export const typeLabel = (t: CommandType) => enumLabel(CommandType, t);
// Severity as people read it. Most distributions rate only security updates: the rest (Debian's
// regular updates) come without a severity, which is "not rated" rather than an alarming "unknown".
export const severityLabel = (s: UpdateSeverity) => (s === UpdateSeverity.UNKNOWN || s === UpdateSeverity.UNSPECIFIED ? "not rated" : enumLabel(UpdateSeverity, s));
export const statusLabel = (s: UpdateStatus) => enumLabel(UpdateStatus, s);
export const roleLabel = (r: Role) => enumLabel(Role, r);
const OS_FAMILIES: Record<number, string> = { [OsFamily.LINUX]: "Linux", [OsFamily.WINDOWS]: "Windows", [OsFamily.DARWIN]: "macOS" };
export const osFamilyLabel = (f: OsFamily) => OS_FAMILIES[f] ?? "unknown";
// Who queued a command, as shown after its created_by name: "ana (API token)". A session, the
// system and commands recorded before the kind was need no note.
const CREATOR_NOTES: Record<number, string> = { [CommandCreator.API_TOKEN]: " (API token)", [CommandCreator.ADMIN_KEY]: " (admin key)" };
export const creatorNote = (k: CommandCreator) => CREATOR_NOTES[k] ?? "";

// Most severe first, for sorting and for the dashboard's order.
export const SEVERITY_ORDER = [
  UpdateSeverity.CRITICAL,
  UpdateSeverity.IMPORTANT,
  UpdateSeverity.SECURITY,
  UpdateSeverity.MODERATE,
  UpdateSeverity.LOW,
  UpdateSeverity.UNKNOWN,
];

export const FINAL_STATES = new Set([
  CommandState.SUCCEEDED,
  CommandState.FAILED,
  CommandState.REJECTED,
  CommandState.TIMED_OUT,
  CommandState.CANCELLED,
]);
export const UNSUCCESSFUL_STATES = new Set([CommandState.FAILED, CommandState.REJECTED, CommandState.TIMED_OUT, CommandState.CANCELLED]);

export const toDate = (t: Timestamp | undefined): Date | undefined => (t ? timestampDate(t) : undefined);

// "just now", "3 min ago", "5 h ago", "2 days ago"; "in 4 min" for the future; "never" when unset.
export function timeAgo(t: Timestamp | Date | undefined, now = Date.now()): string {
  if (!t) return "never";
  const ms = (t instanceof Date ? t.getTime() : timestampDate(t).getTime()) - now;
  const s = Math.round(Math.abs(ms) / 1000);
  const say = (text: string) => (ms > 1000 ? `in ${text}` : `${text} ago`);
  if (s < 10) return "just now";
  if (s < 60) return say(`${s} s`);
  if (s < 3600) return say(`${Math.floor(s / 60)} min`);
  if (s < 86_400) return say(`${Math.floor(s / 3600)} h`);
  const days = Math.floor(s / 86_400);
  return say(days === 1 ? "1 day" : `${days} days`);
}

// The exact local time, for a title attribute beside timeAgo.
export const exactTime = (t: Timestamp | Date | undefined): string =>
  t ? (t instanceof Date ? t : timestampDate(t)).toLocaleString() : "";

export function formatBytes(n: bigint | number | undefined): string {
  const v = Number(n ?? 0);
  if (!v) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log2(v) / 10));
  const x = v / 2 ** (10 * i);
  return `${x >= 100 || i === 0 ? Math.round(x) : x.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number | bigint): string {
  let s = Number(seconds);
  if (s < 60) return `${s} s`;
  const parts: string[] = [];
  for (const [unit, size] of [["d", 86_400], ["h", 3600], ["min", 60]] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)} ${unit}`);
      s %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

// "90d", "12h", "30m", "45s", "2w" → seconds, the control plane's own duration syntax;
// undefined when it is not one.
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+)\s*([smhdw])\s*$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as "s" | "m" | "h" | "d" | "w"];
}

export const percent = (part: number, whole: number) => (whole > 0 ? Math.round((part / whole) * 100) : 0);
export const shortId = (id: string) => id.slice(0, 8);

import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { PackageChangeKind, PackageResultState, SubsystemRunState, type PackageChange } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { enumLabel, formatDuration } from "./format.ts";
import { plural } from "./plural.ts";

// Words and groupings for what commands report: dry-run changes, per-package results,
// subsystem runs, tool durations. Shared by the updates page, Activity and the agent page.

export const changeKindLabel = (k: PackageChangeKind) => enumLabel(PackageChangeKind, k);
export const packageResultLabel = (s: PackageResultState) => enumLabel(PackageResultState, s);
export const subsystemStateLabel = (s: SubsystemRunState) => enumLabel(SubsystemRunState, s);
// What a subsystem's run reads as beside its name: "apt scanned", not "apt ran 121 updates".
const RUN_WORDS: Record<number, string> = { [SubsystemRunState.RAN]: "scanned", [SubsystemRunState.NOT_PRESENT]: "not on this host" };
export const subsystemRunWords = (s: SubsystemRunState) => RUN_WORDS[s] ?? subsystemStateLabel(s);

export interface ChangeGroup {
  kind: PackageChangeKind;
  title: string;
  // Removals take something away from the host: shown as a danger.
  danger: boolean;
  changes: PackageChange[];
}

const GROUPS: { kind: PackageChangeKind; title: string; danger: boolean }[] = [
  { kind: PackageChangeKind.UPGRADE, title: "Upgrades", danger: false },
  { kind: PackageChangeKind.INSTALL, title: "New installs", danger: false },
  { kind: PackageChangeKind.REMOVE, title: "Removals", danger: true },
  { kind: PackageChangeKind.DOWNGRADE, title: "Downgrades", danger: false },
];

// The changes of a dry run by kind, in the order people read them; empty groups left out.
// Anything of an unknown kind comes last, so nothing the agent reported is hidden.
export function groupChanges(changes: readonly PackageChange[]): ChangeGroup[] {
  const known = new Set(GROUPS.map((g) => g.kind));
  const byName = (a: PackageChange, b: PackageChange) => a.source.localeCompare(b.source) || a.name.localeCompare(b.name);
  const groups = GROUPS.map((g) => ({ ...g, changes: changes.filter((c) => c.kind === g.kind).sort(byName) }));
  const other = changes.filter((c) => !known.has(c.kind));
  if (other.length > 0) groups.push({ kind: PackageChangeKind.UNSPECIFIED, title: "Other changes", danger: false, changes: [...other].sort(byName) });
  return groups.filter((g) => g.changes.length > 0);
}

// "1 upgrade, 2 new installs, 1 removal".
export function changeSummary(changes: readonly PackageChange[]): string {
  const words: Record<number, [string, string]> = {
    [PackageChangeKind.UPGRADE]: ["upgrade", "upgrades"],
    [PackageChangeKind.INSTALL]: ["new install", "new installs"],
    [PackageChangeKind.REMOVE]: ["removal", "removals"],
    [PackageChangeKind.DOWNGRADE]: ["downgrade", "downgrades"],
  };
  return groupChanges(changes)
    .map((g) => {
      const [one, many] = words[g.kind] ?? ["other change", "other changes"];
      return plural(g.changes.length, one, many);
    })
    .join(", ");
}

// "0.4 s", "12.3 s", "2 min 5 s" → rounded to what matters; "" when unset.
export function durationText(d: Duration | undefined): string {
  if (!d) return "";
  const ms = durationMs(d);
  if (ms < 1000) return ms <= 0 ? "0 s" : `${(ms / 1000).toFixed(ms < 100 ? 2 : 1)} s`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return formatDuration(Math.round(ms / 1000));
}

// "1 package", "3 packages": the console's one plural helper, here for the components that
// already take it from this file.
export { plural } from "./plural.ts";

// Badge tone of a command state: colour always next to the word.
export function stateTone(s: CommandState): "ok" | "bad" | "warn" | "" {
  if (s === CommandState.SUCCEEDED) return "ok";
  if (s === CommandState.FAILED || s === CommandState.REJECTED || s === CommandState.TIMED_OUT) return "bad";
  if (s === CommandState.PENDING || s === CommandState.SENT) return "warn";
  return "";
}

// URL words for command states ("timed_out") and back.
export const stateParam = (s: CommandState) => (CommandState[s] ?? "").toLowerCase();
export function parseStateParam(text: string | null): CommandState {
  if (!text) return CommandState.UNSPECIFIED;
  const v = (CommandState as unknown as Record<string, CommandState>)[text.toUpperCase().replace(/[ -]/g, "_")];
  return v === undefined ? CommandState.UNSPECIFIED : v;
}

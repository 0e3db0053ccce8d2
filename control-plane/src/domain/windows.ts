import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, type InstallUpdates, InstallUpdatesSchema } from "@redflag/gen/command_pb";
import { inTransaction } from "../store/db.ts";
import type { Prisma } from "../store/types.ts";
import {
  agentLabels,
  createWindow,
  deleteWindow,
  enabledWindows,
  getWindow,
  MAX_WINDOWS,
  updateWindow,
  type WindowInput,
  type WindowRow,
  type WindowWriteOutcome,
} from "../store/windows.ts";
import type { AuditHook } from "./audit.ts";
import { compileRecurrence, normaliseRecurrence, type Schedule } from "./recurrence.ts";

// Maintenance and blackout windows (recurrence.ts computes their occurrences). While a blackout
// window is open for an agent, no install, confirmed dry run, rollback, reboot or agent upgrade
// may be queued for it (fleet and automatic agent upgrades pass it by until it closes); an install queued while a maintenance window is open carries the window's end (or the
// start of the next blackout, when that comes first) as InstallUpdates.not_after, and the agent
// starts no package after it.

// The command kinds a blackout refuses: they change the host's packages, restart it, or replace
// the agent on it.
const CHANGES = new Set<Command["action"]["case"]>(["installUpdates", "confirmDependencies", "rollbackUpdate", "reboot", "updateAgent"]);

export interface AgentLabels {
  id: string;
  group: string;
  tags: readonly string[];
}

export interface OpenWindow {
  window: WindowRow;
  until: Date;
}

export interface AgentWindows {
  // The open maintenance window that stays open longest.
  maintenance?: OpenWindow | undefined;
  // The open blackout window that stays open longest: changes are allowed again after it.
  blackout?: OpenWindow | undefined;
  // The next blackout to open, when none is open now.
  nextBlackout?: { window: WindowRow; start: Date } | undefined;
}

// Compiled schedules, by recurrence; a window's rule is checked when it is saved.
const schedules = new Map<string, Schedule>();
export function scheduleOf(w: Pick<WindowRow, "rrule" | "dtstart" | "durationSeconds" | "timeZone">): Schedule {
  const key = `${w.rrule}\n${w.dtstart}\n${w.durationSeconds}\n${w.timeZone}`;
  let s = schedules.get(key);
  if (!s) {
    if (schedules.size >= 2 * MAX_WINDOWS) schedules.clear();
    s = compileRecurrence(w);
    schedules.set(key, s);
  }
  return s;
}

export function appliesTo(w: WindowRow, agent: AgentLabels): boolean {
  return w.allAgents || w.agentIds.includes(agent.id) || (agent.group !== "" && w.groups.includes(agent.group)) || agent.tags.some((t) => w.tags.includes(t));
}

// Which maintenance window is open for this agent at `now` and until when, whether a blackout is
// active (and until when), and else when the next one opens. Disabled windows count for nothing.
export function windowsAt(windows: readonly WindowRow[], agent: AgentLabels, now: Date): AgentWindows {
  const found: AgentWindows = {};
  for (const w of windows) {
    if (!w.enabled || !appliesTo(w, agent)) continue;
    const schedule = scheduleOf(w);
    const open = schedule.openAt(now);
    const slot = w.kind === "blackout" ? "blackout" : "maintenance";
    if (open) {
      if (!found[slot] || found[slot].until < open.until) found[slot] = { window: w, until: open.until };
    } else if (w.kind === "blackout") {
      const start = schedule.nextStart(now);
      if (start && (!found.nextBlackout || start < found.nextBlackout.start)) found.nextBlackout = { window: w, start };
    }
  }
  if (found.blackout) found.nextBlackout = undefined;
  return found;
}

// windowsAt for each of these agents, read from the database.
export async function agentWindowsAt(db: Prisma, agentIds: readonly string[], now: Date) {
  const windows = await enabledWindows(db);
  const agents = windows.length === 0 ? [] : await agentLabels(db, agentIds);
  return new Map(agents.map((a) => [a.id, { hostname: a.hostname, ...windowsAt(windows, a, now) }]));
}

const when = (d: Date, zone: string) => `${d.toISOString().replace(".000Z", "Z")} (${localIn(d, zone)} ${zone})`;
const localIn = (d: Date, zone: string) =>
  new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(d);

// What the command queue does with a command for these agents (every agent or none): a change
// while a blackout window is open for one of them is refused (FailedPrecondition) naming the
// window and when it ends; otherwise each agent's install bound (installNotAfter), for changes.
export async function windowGate(db: Prisma, agentIds: readonly string[], action: Command["action"]["case"], now: Date): Promise<Map<string, Date | undefined>> {
  if (!CHANGES.has(action) || agentIds.length === 0) return new Map();
  const at = await agentWindowsAt(db, agentIds, now);
  const blocked = [...at.values()].filter((a) => a.blackout);
  if (blocked.length > 0) {
    const first = blocked[0]!;
    const { window, until } = first.blackout!;
    const more = blocked.length > 1 ? `; ${blocked.length - 1} more of the selected agents are in a blackout too, leave them out of the selection` : "";
    throw new ConnectError(
      `agent ${first.hostname} is in blackout window "${window.name}" until ${when(until, window.timeZone)}: no install, reboot or agent upgrade can be queued for it before then${more}`,
      Code.FailedPrecondition,
    );
  }
  return new Map([...at].map(([id, w]) => [id, installNotAfter(w)]));
}

// The agents among these for which a blackout window is open at `now`: why each is left out, in
// words ("in blackout window "freeze" until …").
export async function agentsInBlackout(db: Prisma, agentIds: readonly string[], now: Date): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (agentIds.length === 0) return out;
  for (const [id, at] of await agentWindowsAt(db, agentIds, now)) {
    if (at.blackout) out.set(id, `in blackout window "${at.blackout.window.name}" until ${when(at.blackout.until, at.blackout.window.timeZone)}`);
  }
  return out;
}

// The time after which an install queued now starts no package: the end of the open maintenance
// window or the start of the next blackout, whichever comes first; undefined when neither applies.
export function installNotAfter(at: AgentWindows | undefined): Date | undefined {
  const ends = [at?.maintenance?.until, at?.nextBlackout?.start].filter((d): d is Date => d !== undefined);
  return ends.length === 0 ? undefined : new Date(Math.min(...ends.map((d) => d.getTime())));
}

// An install_updates action bounded by `notAfter`. The field is the control plane's: whatever a
// request put there is replaced (a retried command gets the window open at its retry).
export function boundInstall(value: InstallUpdates, notAfter: Date | undefined): InstallUpdates {
  return create(InstallUpdatesSchema, { packages: value.packages, sources: value.sources, notAfter: notAfter ? timestampFromDate(notAfter) : undefined });
}

// ---- changes, each with its audit entry in one transaction

function written(outcome: WindowWriteOutcome, name: string, id?: string): WindowRow {
  if ("window" in outcome) return outcome.window;
  if ("missing" in outcome) throw new ConnectError(`window ${id} does not exist`, Code.NotFound);
  if ("missingAgents" in outcome) throw new ConnectError(`agent ${outcome.missingAgents[0]} does not exist${outcome.missingAgents.length > 1 ? ` (nor ${outcome.missingAgents.length - 1} more)` : ""}`, Code.NotFound);
  if ("nameTaken" in outcome) throw new ConnectError(`a window named "${name}" already exists; pick another name or update that one`, Code.AlreadyExists);
  throw new ConnectError(`there are ${outcome.full} windows, the most allowed (${MAX_WINDOWS}); delete one first`, Code.ResourceExhausted);
}

// The recurrence is checked (InvalidArgument) before anything is written.
export async function addWindow(db: Prisma, given: WindowInput, createdBy: string, record: AuditHook<WindowRow>): Promise<WindowRow> {
  const input = { ...given, ...normaliseRecurrence(given) };
  return inTransaction(db, async (tx) => {
    const row = written(await createWindow(tx, { ...input, createdBy }), input.name);
    await record(tx, row);
    return row;
  });
}

export async function changeWindow(
  db: Prisma,
  id: string,
  given: WindowInput,
  now: Date,
  record: AuditHook<{ before: WindowRow; after: WindowRow }>,
): Promise<WindowRow> {
  const input = { ...given, ...normaliseRecurrence(given) };
  return inTransaction(db, async (tx) => {
    const before = await getWindow(tx, id);
    const after = written(await updateWindow(tx, id, input, now), input.name, id);
    await record(tx, { before: before!, after });
    return after;
  });
}

export async function removeWindow(db: Prisma, id: string, record: AuditHook<WindowRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await getWindow(tx, id);
    if (!row) throw new ConnectError(`window ${id} does not exist`, Code.NotFound);
    await deleteWindow(tx, id);
    await record(tx, row);
  });
}

import { Code, ConnectError } from "@connectrpc/connect";
import { recordAudit } from "../store/audit.ts";
import { agentsWithUntriedUpdates, enabledWindows } from "../store/windows.ts";
import type { UpdateFilter } from "../store/package-updates.ts";
import { installApproved, type InstallDeps } from "./updates.ts";
import { scheduleOf } from "./windows.ts";

// Scheduled installs: while a maintenance window with auto_install is open for an agent, the
// leader queues one install_updates of the agent's approved, not held updates that no install
// has been tried for in this opening (installApproved with the agent's filter), bounded by the
// window's end like any install queued then, created by "window:<name>" and audited with the
// window as the actor. An agent in a blackout, or below the minimum agent version, is left for
// a later run; outside an open window nothing is queued. A failed install is tried again in the
// window's next opening, not over and over in this one.

export interface ScheduledInstallLimits {
  // Agents looked at per run (over every open window); the rest on the next run.
  agents: number;
}

export const SCHEDULED_INSTALL_LIMITS: ScheduledInstallLimits = { agents: 500 };

const PAGE = 100;
const NO_AGENT = "00000000-0000-0000-0000-000000000000";

const agentFilter = (agentId: string): UpdateFilter => ({
  keys: [],
  agentIds: [agentId],
  severities: [],
  securityOnly: false,
  packageName: "",
  source: "",
  group: "",
  tag: "",
  status: "",
});

export interface ScheduledInstall {
  agentId: string;
  window: string;
  commandId: string;
  packages: number;
}

export async function installInWindows(
  deps: InstallDeps,
  now: Date,
  limits: ScheduledInstallLimits = SCHEDULED_INSTALL_LIMITS,
): Promise<{ queued: ScheduledInstall[]; skipped: { agentId: string; reason: string }[] }> {
  const queued: ScheduledInstall[] = [];
  const skipped: { agentId: string; reason: string }[] = [];
  const open = (await enabledWindows(deps.db))
    .filter((w) => w.kind === "maintenance" && w.autoInstall)
    .map((w) => ({ window: w, span: scheduleOf(w).openAt(now) }))
    .filter((o) => o.span !== undefined);
  const seen = new Set<string>();
  for (const { window, span } of open) {
    let after = NO_AGENT;
    while (seen.size < limits.agents) {
      const ids = await agentsWithUntriedUpdates(deps.db, window, span!.start, after, PAGE);
      for (const agentId of ids) {
        if (seen.has(agentId) || seen.size >= limits.agents) continue;
        seen.add(agentId);
        try {
          const { commands, packages } = await installApproved(
            { ...deps, now: () => now },
            agentFilter(agentId),
            { createdBy: `window:${window.name}`, createdByKind: "system" },
            (tx, { command, updates }) =>
              recordAudit(tx, {
                actorKind: "window",
                actorId: window.id,
                actorName: window.name,
                action: "scheduler/WindowInstall",
                target: `agent:${agentId}`,
                remoteAddr: "",
                after: { commandId: command.id, updates: updates.map((u) => `${u.source}/${u.name}=${u.availableVersion}`) },
              }),
            span!.start,
          );
          for (const c of commands) queued.push({ agentId, window: window.name, commandId: c.id, packages });
        } catch (err) {
          // A blackout, or an agent that may only be upgraded: not now.
          if (err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.NotFound)) skipped.push({ agentId, reason: err.rawMessage });
          else throw err;
        }
      }
      if (ids.length < PAGE) break;
      after = ids[ids.length - 1]!;
    }
  }
  return { queued, skipped };
}

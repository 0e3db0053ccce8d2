import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandSchema, InstallUpdatesSchema, PackageRefSchema } from "@redflag/gen/command_pb";
import type { EventBus } from "../cluster/events.ts";
import type { Settings } from "../settings.ts";
import type { CommandRow } from "../store/commands.ts";
import { storeCommand } from "./store-command.ts";
import { inTransaction } from "../store/db.ts";
import { holdsFor } from "../store/holds.ts";
import { approvedUpdates, decideUpdates, linkInstallCommand, listUpdates, updatesIn, type UpdateFilter } from "../store/package-updates.ts";
import type { Prisma } from "../store/types.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import type { CommandCreator } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { heldBy } from "./holds.ts";
import { requireSupportedVersion } from "./upgrades.ts";
import { boundInstall, windowGate } from "./windows.ts";
import { mergeIntoPending } from "./pending-commands.ts";
import { linkedInstalls } from "../store/windows.ts";

// Pending updates and what operators decide about them: approve, reject, install. A selection
// (UpdateFilter, checked by the adapter) names the updates; held packages are never approved
// or installed.

export type Decision = "approved" | "rejected";

export type DecidedUpdate = Awaited<ReturnType<typeof updatesIn>>[number];

// Sets `status` on the selected updates now in one of the `from` states, except held ones when
// approving, and records the updates it changed in the audit log: both in one transaction.
// Returns how many changed and how many a hold kept.
export async function decide(
  db: Prisma,
  filter: UpdateFilter,
  decision: { status: Decision; from: string[]; by: string },
  record: AuditHook<DecidedUpdate[]>,
): Promise<{ changed: number; held: number }> {
  return inTransaction(db, async (tx) => {
    const rows = await updatesIn(tx, filter, decision.from);
    const isHeld = heldBy(await holdsFor(tx, [...new Set(rows.map((r) => r.agentId))]));
    const chosen = decision.status === "approved" ? rows.filter((r) => !isHeld(r)) : rows;
    await decideUpdates(tx, chosen, { status: decision.status, by: decision.by, at: new Date() });
    await record(tx, chosen);
    return { changed: chosen.length, held: rows.length - chosen.length };
  });
}

// A page of updates, each with whether a hold keeps it.
export async function updatePage(db: Prisma, filter: UpdateFilter, page: { offset: number; limit: number }) {
  const found = await listUpdates(db, filter, page);
  const isHeld = heldBy(await holdsFor(db, [...new Set(found.rows.map((r) => r.agentId))]));
  return { ...found, rows: found.rows.map((r) => ({ ...r, held: isHeld(r) })) };
}

export interface InstallDeps {
  db: Prisma;
  wakeups: Pick<Wakeups, "notify">;
  events: Pick<EventBus, "publish">;
  settings: Pick<Settings, "minimumAgentVersion">;
  // The clock maintenance and blackout windows are read with.
  now?: () => Date;
}

// Queues one install_updates command per agent for its approved, not held, selected updates,
// pinned to the approved versions (the agent installs exactly what was approved). Refused for
// all when one of the agents runs below the minimum supported version: it may only be upgraded.
export type InstallQueued = { command: CommandRow; updates: Awaited<ReturnType<typeof approvedUpdates>> };

export async function installApproved(
  deps: InstallDeps,
  filter: UpdateFilter,
  creator: { createdBy: string; createdByKind: CommandCreator },
  record: AuditHook<InstallQueued>,
  // Only updates no install has been tried for since this time: none linked, or the linked one
  // finished and was queued before it (a window's scheduled install: not twice in one opening).
  untriedSince?: Date,
): Promise<{ commands: CommandRow[]; packages: number; skipped: { agentId: string; reason: string }[] }> {
  const { db } = deps;
  let rows = await approvedUpdates(db, filter);
  if (untriedSince) {
    const linked = await linkedInstalls(db, [...new Set(rows.map((r) => r.commandId).filter((id): id is string => id !== null))]);
    rows = rows.filter((r) => {
      const c = r.commandId ? linked.get(r.commandId) : undefined;
      return !c || (c.state !== "pending" && c.state !== "sent" && c.createdAt < untriedSince);
    });
  }
  const isHeld = heldBy(await holdsFor(db, [...new Set(rows.map((r) => r.agentId))]));
  const byAgent = new Map<string, typeof rows>();
  for (const r of rows) if (!isHeld(r)) byAgent.set(r.agentId, [...(byAgent.get(r.agentId) ?? []), r]);
  await requireSupportedVersion(db, deps.settings.minimumAgentVersion, [...byAgent.keys()], "installUpdates");
  // Refused for all when one agent is in a blackout window; each install bounded by its open window.
  const notAfter = await windowGate(db, [...byAgent.keys()], "installUpdates", (deps.now ?? (() => new Date()))());
  const commands: CommandRow[] = [];
  const skipped: { agentId: string; reason: string }[] = [];
  for (const [agentId, updates] of byAgent) {
    const packages = updates.map((u) => create(PackageRefSchema, { source: u.source, name: u.name, version: u.availableVersion, architecture: u.architecture }));
    const action = { case: "installUpdates" as const, value: boundInstall(create(InstallUpdatesSchema, { packages }), notAfter.get(agentId)) };
    // The command (or the install already pending for the agent, merged into: one pending
    // command of a kind per agent), the updates it installs and its audit entry commit together.
    let row: CommandRow;
    try {
      row = await inTransaction(db, async (tx) => {
        const merged = await mergeIntoPending(tx, agentId, "install_updates", action, 0);
        const row =
          merged?.row ??
          (await storeCommand(tx, {
            agentId,
            type: "install_updates",
            action: toBinary(CommandSchema, create(CommandSchema, { action })),
            timeoutSeconds: 0,
            ...creator,
          }));
        await linkInstallCommand(tx, updates, row.id);
        await record(tx, { command: row, updates });
        return row;
      });
    } catch (err) {
      // A pending install these cannot join: that agent is left out, and the answer says why.
      if (!(err instanceof ConnectError) || err.code !== Code.FailedPrecondition) throw err;
      skipped.push({ agentId, reason: err.rawMessage });
      continue;
    }
    deps.wakeups.notify(agentId);
    deps.events.publish([{ commandId: row.id, agentId }]);
    commands.push(row);
  }
  const left = new Set(skipped.map((s) => s.agentId));
  const packages = [...byAgent].filter(([agentId]) => !left.has(agentId)).reduce((n, [, u]) => n + u.length, 0);
  return { commands, packages, skipped };
}

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, CommandSchema } from "@redflag/gen/command_pb";
import { CreateCommandRequestSchema } from "@redflag/gen/command_service_pb";
import type { RoleName } from "@redflag/common/roles";
import type { EventBus } from "../cluster/events.ts";
import type { CommandCreator, CommandType as DbCommandType } from "../store/types.ts";
import { sha256 } from "../ids.ts";
import { invalid } from "./input.ts";
import type { Settings } from "../settings.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { cancelPendingCommand, createCommandOnce, getCommand, type CommandRow } from "../store/commands.ts";
import { inTransaction } from "../store/db.ts";
import type { ReleaseRow } from "../store/releases.ts";
import type { Prisma, Tx } from "../store/types.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import { prepareAction } from "./actions.ts";
import { resolveUpgrade } from "./agent-upgrade.ts";
import type { AuditHook } from "./audit.ts";
import { authorizeContent, authorizeKind } from "./command-privilege.ts";
import { mergeIntoPending } from "./pending-commands.ts";
import { commandRefusal, storeCommand } from "./store-command.ts";
import { noteUpgrade, requireSupportedVersion } from "./upgrades.ts";
import { boundInstall, windowGate } from "./windows.ts";

// The command queue: what may be queued for an agent, by whom, once per idempotency key; and
// cancelling what is still waiting. Agents take commands from it in PollCommands.

function onceOrRefused(outcome: Awaited<ReturnType<typeof createCommandOnce>>, agentId: string, key: string) {
  if ("refused" in outcome) throw commandRefusal(outcome, agentId);
  if ("conflict" in outcome) {
    throw new ConnectError(
      `idempotency_key "${key}" was already used for a different request (command ${outcome.conflict}); use a new key for a new command`,
      Code.FailedPrecondition,
    );
  }
  return outcome;
}

// oneof case (camelCase) → stored command type.
const ACTION_TYPES: Record<string, DbCommandType> = {
  scanUpdates: "scan_updates",
  collectSpecs: "collect_specs",
  installUpdates: "install_updates",
  dryRunUpdate: "dry_run_update",
  confirmDependencies: "confirm_dependencies",
  rollbackUpdate: "rollback_update",
  reboot: "reboot",
  enableHeartbeat: "enable_heartbeat",
  disableHeartbeat: "disable_heartbeat",
  updateAgent: "update_agent",
  listPackageVersions: "list_package_versions",
};

// Who queues a command, as the adapter read it from the verified credential.
export interface CommandCaller {
  role: RoleName | undefined;
  // Idempotency keys are scoped to who uses them (a person's sessions share theirs, each API
  // token and the admin key has its own), so nobody can collide with, or learn about, another
  // caller's keys.
  keyScope: string;
  creator: { createdBy: string; createdByKind: CommandCreator };
  // Records a queued command in the audit log, with the action as it was stored.
  // merged: the action went into a command of its kind already pending (row).
  record: AuditHook<{ row: CommandRow; action: Command["action"]; merged: boolean }>;
}

// A queued command; merged when the request went into a command of its kind already pending
// (domain/pending-commands.ts) instead of a new one.
export type QueuedCommand = CommandRow & { merged: boolean };

export interface CommandQueue {
  // Checks, stores and audits one command for one agent and wakes the agent's long-poll. With
  // an idempotency key, a retry of the same request returns the command already queued.
  queue(caller: CommandCaller, agentId: string, action: Command["action"], timeoutSeconds?: number, idempotencyKey?: string): Promise<QueuedCommand>;
}

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;

export function createCommandQueue(
  db: Prisma,
  wakeups: Wakeups,
  signer: CommandSigner,
  events: EventBus,
  idempotencyKeyTtlSeconds = 86_400,
  settings: Pick<Settings, "minimumAgentVersion">,
  now: () => Date = () => new Date(),
): CommandQueue {
  return {
    async queue(caller, agentId, requested, timeoutSeconds = 0, idempotencyKey = "") {
      if (idempotencyKey !== "" && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
        throw invalid("idempotency_key must be 1 to 128 of A-Z a-z 0-9 . _ : - (for example a UUID)");
      }
      const { role } = caller;
      authorizeKind(role, requested);
      // Hashed as asked, before the action is prepared (an upgrade is filled in from the registry then).
      const requestHash = sha256(toBinary(CreateCommandRequestSchema, create(CreateCommandRequestSchema, { agentId, timeoutSeconds, action: requested })));
      let action = prepareAction(requested);
      if (timeoutSeconds > 24 * 3600) throw invalid("timeout_seconds must be at most 86400");
      await authorizeContent(db, role, agentId, action);
      // Below the minimum supported version an agent may be upgraded, and nothing else.
      await requireSupportedVersion(db, settings.minimumAgentVersion, [agentId], action.case);
      // Refused in a blackout window; an install carries the end of the open maintenance window.
      const notAfter = (await windowGate(db, [agentId], action.case, now())).get(agentId);
      if (action.case === "installUpdates") action = { case: "installUpdates", value: boundInstall(action.value, notAfter) };
      let release: ReleaseRow | undefined;
      if (action.case === "updateAgent") {
        const upgrade = await resolveUpgrade(db, signer, agentId, action.value.version);
        release = upgrade.release;
        action = { case: "updateAgent", value: upgrade.action };
      }
      // Stored as a Command holding only the action; the signed header is added at delivery.
      const bytes = toBinary(CommandSchema, create(CommandSchema, { action, timeoutSeconds }));
      const idempotency = idempotencyKey
        ? { caller: caller.keyScope, key: idempotencyKey, requestHash, usedAfter: new Date(Date.now() - idempotencyKeyTtlSeconds * 1000) }
        : undefined;
      const input = { agentId, type: ACTION_TYPES[action.case!]!, action: bytes, timeoutSeconds, ...caller.creator };
      // One pending command of a kind per agent: merged into it, refused, or a new one.
      let mergedNow = false;
      const place = async (tx: Tx) => {
        const placed = (await mergeIntoPending(tx, agentId, input.type, action, timeoutSeconds)) ?? { row: await storeCommand(tx, input), merged: false };
        mergedNow = placed.merged;
        return placed;
      };
      // The command, its upgrade record (followed until the agent reports the new version:
      // ReleaseService.ListAgentUpgrades) and its audit entry commit together or not at all.
      const then = async (tx: Tx, row: CommandRow) => {
        // A merged upgrade is followed already, under the pending command.
        if (release && !mergedNow) await noteUpgrade(tx, { agentId, commandId: row.id, release, createdBy: row.createdBy });
        await caller.record(tx, { row, action, merged: mergedNow });
      };
      const { row, replayed, merged } = idempotency
        ? onceOrRefused(await createCommandOnce(db, input, idempotency, then, place), agentId, idempotencyKey)
        : {
            ...(await inTransaction(db, async (tx) => {
              const placed = await place(tx);
              await then(tx, placed.row);
              return placed;
            })),
            replayed: false,
          };
      // A retry that found its command: nothing changed, so nothing to wake, publish or audit.
      if (replayed) return { ...row, merged };
      wakeups.notify(agentId);
      events.publish([{ commandId: row.id, agentId }]);
      return { ...row, merged };
    },
  };
}

// Cancels a command that is still pending (once delivered, the agent runs it) and records it
// (as it was) in the audit log, in one transaction; returns it as it is now.
export async function cancelCommand(db: Prisma, events: EventBus, id: string, record: AuditHook<CommandRow>): Promise<CommandRow> {
  const row = await inTransaction(db, async (tx) => {
    const row = await getCommand(tx, id);
    if (!row) throw new ConnectError(`command ${id} does not exist`, Code.NotFound);
    if (!(await cancelPendingCommand(tx, id, new Date()))) {
      throw new ConnectError(`command ${id} is ${row.state.replace("_", " ")}; only a pending command can be cancelled`, Code.FailedPrecondition);
    }
    await record(tx, row);
    return row;
  });
  events.publish([{ commandId: id, agentId: row.agentId }]);
  return (await getCommand(db, id))!;
}

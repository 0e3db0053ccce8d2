import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { CommandChanged, EventBus } from "../events.ts";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type Command, CommandSchema, UpdateAgentSchema } from "@redflag/gen/command_pb";
import { type CommandInfo, CommandService, CommandState, CreateCommandRequestSchema } from "@redflag/gen/command_service_pb";
import { kPrincipal } from "../auth/context.ts";
import { sha256 } from "../ids.ts";
import { audit, commandCreator } from "./audit.ts";
import type { CommandState as DbCommandState, CommandType as DbCommandType } from "../generated/prisma/client.ts";
import { createCommand, createCommandOnce, getCommand, listCommands } from "../store/commands.ts";
import type { Prisma } from "../store/types.ts";
import type { Wakeups } from "../wakeups.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { resolveUpgrade } from "../domain/agent-upgrade.ts";
import { noteUpgrade, requireSupportedVersion } from "../domain/upgrades.ts";
import type { ReleaseRow } from "../store/releases.ts";
import type { Settings } from "../settings.ts";
import { authorizeContent, authorizeKind } from "../domain/command-privilege.ts";
import { prepareAction } from "./actions.ts";
import { COMMAND_STATES, commandToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, uuid } from "./validate.ts";

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
};

const MAX_QUEUED_EVENTS = 10_000;
const KEEPALIVE_MS = 20_000;

const STATE_FILTER = new Map<CommandState, DbCommandState>(
  Object.entries(COMMAND_STATES).map(([db, proto]) => [proto, db as DbCommandState]),
);

export interface CommandQueue {
  // Checks, stores and audits one command for one agent and wakes the agent's long-poll. With
  // an idempotency key, a retry of the same request returns the command already queued.
  queue(ctx: HandlerContext, agentId: string, action: Command["action"], timeoutSeconds?: number, idempotencyKey?: string): Promise<CommandInfo>;
}

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;

// Keys are scoped to who uses them: a person's sessions share theirs, each API token (and the
// admin key) has its own, so nobody can collide with, or learn about, another caller's keys.
function idempotencyCaller(ctx: HandlerContext): string {
  const principal = ctx.values.get(kPrincipal);
  if (!principal) return "system";
  return principal.kind === "session" && principal.userId ? `user:${principal.userId}` : `key:${principal.credentialId}`;
}

export function createCommandQueue(
  db: Prisma,
  wakeups: Wakeups,
  signer: CommandSigner,
  events: EventBus,
  idempotencyKeyTtlSeconds = 86_400,
  settings: Pick<Settings, "minimumAgentVersion">,
): CommandQueue {
  return {
    async queue(ctx, agentId, requested, timeoutSeconds = 0, idempotencyKey = "") {
      if (idempotencyKey !== "" && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
        throw invalid("idempotency_key must be 1 to 128 of A-Z a-z 0-9 . _ : - (for example a UUID)");
      }
      const role = ctx.values.get(kPrincipal)?.role;
      authorizeKind(role, requested);
      // Hashed as asked, before the action is prepared (an upgrade is filled in from the registry then).
      const requestHash = sha256(toBinary(CreateCommandRequestSchema, create(CreateCommandRequestSchema, { agentId, timeoutSeconds, action: requested })));
      let action = prepareAction(requested);
      if (timeoutSeconds > 24 * 3600) throw invalid("timeout_seconds must be at most 86400");
      await authorizeContent(db, role, agentId, action);
      // Below the minimum supported version an agent may be upgraded, and nothing else.
      await requireSupportedVersion(db, settings.minimumAgentVersion, [agentId], action.case);
      let release: ReleaseRow | undefined;
      if (action.case === "updateAgent") {
        const upgrade = await resolveUpgrade(db, signer, agentId, action.value.version);
        release = upgrade.release;
        action = { case: "updateAgent", value: upgrade.action };
      }
      // Stored as a Command holding only the action; the signed header is added at delivery.
      const bytes = toBinary(CommandSchema, create(CommandSchema, { action, timeoutSeconds }));
      const idempotency = idempotencyKey
        ? { caller: idempotencyCaller(ctx), key: idempotencyKey, requestHash, usedAfter: new Date(Date.now() - idempotencyKeyTtlSeconds * 1000) }
        : undefined;
      const input = { agentId, type: ACTION_TYPES[action.case!]!, action: bytes, timeoutSeconds, ...commandCreator(ctx) };
      const { row, replayed } = idempotency ? await createCommandOnce(db, input, idempotency) : { row: await createCommand(db, input), replayed: false };
      // A retry that found its command: nothing changed, so nothing to wake, publish or audit.
      if (replayed) return commandToProto(row);
      // Followed until the agent reports the new version (ReleaseService.ListAgentUpgrades).
      if (release) await noteUpgrade(db, { agentId, commandId: row.id, release, createdBy: row.createdBy });
      wakeups.notify(agentId);
      events.publish([{ commandId: row.id, agentId }]);
      await audit(db, ctx, {
        target: `agent:${agentId}`,
        after: { commandId: row.id, type: row.type, action: toJson(CreateCommandRequestSchema, create(CreateCommandRequestSchema, { action })) },
      });
      return commandToProto(row);
    },
  };
}

export function createCommandService(db: Prisma, commands: CommandQueue, events: EventBus): ServiceImpl<typeof CommandService> {
  return {
    async createCommand(req, ctx: HandlerContext) {
      return { command: await commands.queue(ctx, uuid("agent_id", req.agentId), req.action, req.timeoutSeconds, req.idempotencyKey) };
    },

    async listCommands(req) {
      const agentId = req.agentId ? uuid("agent_id", req.agentId) : undefined;
      let state: DbCommandState | undefined;
      if (req.state !== CommandState.UNSPECIFIED) {
        state = STATE_FILTER.get(req.state);
        if (!state) throw invalid(`state ${req.state} is not a command state`);
      }
      const { rows, next } = await listCommands(db, { agentId, state }, pageSize(req.pageSize), pageToken(req.pageToken));
      return { commands: rows.map(commandToProto), nextPageToken: nextPageToken(next) };
    },

    async getCommand(req) {
      const row = await getCommand(db, uuid("id", req.id));
      if (!row) throw new ConnectError(`command ${req.id} does not exist`, Code.NotFound);
      return { command: commandToProto(row) };
    },

    async cancelCommand(req, ctx) {
      const id = uuid("id", req.id);
      const row = await getCommand(db, id);
      if (!row) throw new ConnectError(`command ${id} does not exist`, Code.NotFound);
      // Only a command still waiting can be stopped: once delivered, the agent runs it.
      const done = await db.command.updateMany({ where: { id, state: "pending" }, data: { state: "cancelled", finishedAt: new Date() } });
      if (done.count === 0) {
        throw new ConnectError(`command ${id} is ${row.state.replace("_", " ")}; only a pending command can be cancelled`, Code.FailedPrecondition);
      }
      events.publish([{ commandId: id, agentId: row.agentId }]);
      await audit(db, ctx, { target: `agent:${row.agentId}`, before: { commandId: id, state: row.state }, after: { commandId: id, state: "cancelled" } });
      return { command: commandToProto((await getCommand(db, id))!) };
    },

    async retryCommand(req, ctx) {
      const id = uuid("id", req.id);
      const row = await getCommand(db, id);
      if (!row) throw new ConnectError(`command ${id} does not exist`, Code.NotFound);
      if (!["failed", "timed_out", "rejected", "cancelled"].includes(row.state)) {
        throw new ConnectError(`command ${id} is ${row.state.replace("_", " ")}; only a failed, timed-out, rejected or cancelled command can be retried`, Code.FailedPrecondition);
      }
      // Checked again as this caller's command. An agent upgrade is the same version again,
      // filled in afresh from the registry (the release may be gone, the signing key rotated).
      let action = fromBinary(CommandSchema, row.action).action;
      if (action.case === "updateAgent") action = { case: "updateAgent", value: create(UpdateAgentSchema, { version: action.value.version }) };
      return { command: await commands.queue(ctx, row.agentId, action, row.timeoutSeconds) };
    },

    async *watchEvents(req, ctx) {
      const agentId = req.agentId ? uuid("agent_id", req.agentId) : undefined;
      const queue: CommandChanged[] = [];
      // Changes this feed may have lost: the replica link was down, or the client read so slowly
      // that the queue filled up. The client is told ("resync") and re-reads what it shows.
      let missed = false;
      let wake: (() => void) | undefined;
      const unsubscribe = events.subscribe(
        (event) => {
          if (agentId && event.agentId !== agentId) return;
          if (queue.length < MAX_QUEUED_EVENTS) queue.push(event);
          else missed = true;
          wake?.();
        },
        () => {
          missed = true;
          wake?.();
        },
      );
      const stopped = new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
      try {
        // At once, so a client knows the feed is live before anything happens.
        yield { time: timestampFromDate(new Date()), kind: "keepalive" };
        while (!ctx.signal.aborted) {
          if (queue.length === 0 && !missed) {
            const woke = new Promise<void>((resolve) => (wake = resolve));
            let timer: NodeJS.Timeout | undefined;
            const quiet = new Promise<"keepalive">((resolve) => (timer = setTimeout(() => resolve("keepalive"), KEEPALIVE_MS)));
            const why = await Promise.race([woke.then(() => "event" as const), quiet, stopped.then(() => "stop" as const)]);
            clearTimeout(timer);
            wake = undefined;
            if (why === "stop") return;
            if (why === "keepalive") {
              yield { time: timestampFromDate(new Date()), kind: "keepalive" };
              continue;
            }
          }
          if (missed) {
            missed = false;
            yield { time: timestampFromDate(new Date()), kind: "resync" };
          }
          // Several changes of one command in a burst are sent once, as it is now.
          const batch = [...new Map(queue.splice(0).map((e) => [e.commandId, e])).values()];
          for (const event of batch) {
            const row = await getCommand(db, event.commandId);
            if (row) yield { time: timestampFromDate(new Date()), kind: "command", command: commandToProto(row) };
          }
        }
      } finally {
        unsubscribe();
      }
    },
  };
}

import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type Command, CommandSchema } from "@redflag/gen/command_pb";
import { type CommandInfo, CommandService, CommandState, CreateCommandRequestSchema } from "@redflag/gen/command_service_pb";
import { audit, callerName } from "./audit.ts";
import type { CommandState as DbCommandState, CommandType as DbCommandType } from "../generated/prisma/client.ts";
import { createCommand, getCommand, listCommands } from "../store/commands.ts";
import type { Prisma } from "../store/types.ts";
import type { Wakeups } from "../wakeups.ts";
import type { CommandSigner } from "../signing/signer.ts";
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

const STATE_FILTER = new Map<CommandState, DbCommandState>(
  Object.entries(COMMAND_STATES).map(([db, proto]) => [proto, db as DbCommandState]),
);

export interface CommandQueue {
  // Checks, stores and audits one command for one agent and wakes the agent's long-poll.
  queue(ctx: HandlerContext, agentId: string, action: Command["action"], timeoutSeconds?: number): Promise<CommandInfo>;
}

export function createCommandQueue(db: Prisma, wakeups: Wakeups, signer: CommandSigner): CommandQueue {
  return {
    async queue(ctx, agentId, requested, timeoutSeconds = 0) {
      const action = prepareAction(requested, signer);
      if (timeoutSeconds > 24 * 3600) throw invalid("timeout_seconds must be at most 86400");
      // Stored as a Command holding only the action; the signed header is added at delivery.
      const bytes = toBinary(CommandSchema, create(CommandSchema, { action, timeoutSeconds }));
      const row = await createCommand(db, { agentId, type: ACTION_TYPES[action.case!]!, action: bytes, timeoutSeconds, createdBy: callerName(ctx) });
      wakeups.notify(agentId);
      await audit(db, ctx, {
        target: `agent:${agentId}`,
        after: { commandId: row.id, type: row.type, action: toJson(CreateCommandRequestSchema, create(CreateCommandRequestSchema, { action: requested })) },
      });
      return commandToProto(row);
    },
  };
}

export function createCommandService(db: Prisma, commands: CommandQueue): ServiceImpl<typeof CommandService> {
  return {
    async createCommand(req, ctx: HandlerContext) {
      return { command: await commands.queue(ctx, uuid("agent_id", req.agentId), req.action, req.timeoutSeconds) };
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
  };
}

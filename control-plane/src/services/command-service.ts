import { create, fromBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { CommandSchema, UpdateAgentSchema } from "@redflag/gen/command_pb";
import { CommandService, CommandState } from "@redflag/gen/command_service_pb";
import { cancelCommand, type CommandQueue } from "../domain/commands.ts";
import type { CommandChanged, EventBus } from "../cluster/events.ts";
import type { CommandState as DbCommandState } from "../store/types.ts";
import { getCommand, listCommands, type CommandRow } from "../store/commands.ts";
import type { Prisma } from "../store/types.ts";
import { audit } from "./audit.ts";
import { COMMAND_STATES, commandCaller, commandToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, uuid } from "./validate.ts";

const STATE_FILTER = new Map<CommandState, DbCommandState>(
  Object.entries(COMMAND_STATES).map(([db, proto]) => [proto, db as DbCommandState]),
);

const MAX_QUEUED_EVENTS = 10_000;
const KEEPALIVE_MS = 20_000;

export function createCommandService(db: Prisma, commands: CommandQueue, events: EventBus): ServiceImpl<typeof CommandService> {
  return {
    async createCommand(req, ctx: HandlerContext) {
      const row = await commands.queue(commandCaller(ctx), uuid("agent_id", req.agentId), req.action, req.timeoutSeconds, req.idempotencyKey);
      return { command: commandToProto(row), merged: row.merged };
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
      const row = await cancelCommand(db, events, id, (tx, before) =>
        audit(tx, ctx, { target: `agent:${before.agentId}`, before: { commandId: id, state: before.state }, after: { commandId: id, state: "cancelled" } }),
      );
      return { command: commandToProto(row) };
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
      const queued = await commands.queue(commandCaller(ctx), row.agentId, action, row.timeoutSeconds);
      return { command: commandToProto(queued), merged: queued.merged };
    },

    async *watchEvents(req, ctx) {
      const agentId = req.agentId ? uuid("agent_id", req.agentId) : undefined;
      const queue: CommandChanged[] = [];
      // Changes this feed may have lost: the replica link was down, or the client read so slowly
      // that the queue filled up. The client is told ("resync") and re-reads what it shows.
      let missed = false;
      let wake: (() => void) | undefined;
      const shown = new ShownCommands();
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
          // Several changes of one command in a burst are sent once, as it is now. A change read
          // after a later one already showed (another replica's notice arrives after this
          // replica's) is not sent again: the feed never repeats a command unchanged.
          const batch = [...new Map(queue.splice(0).map((e) => [e.commandId, e])).values()];
          for (const event of batch) {
            const row = await getCommand(db, event.commandId);
            if (row && shown.changed(row)) yield { time: timestampFromDate(new Date()), kind: "command", command: commandToProto(row) };
          }
        }
      } finally {
        unsubscribe();
      }
    },
  };
}

// What a WatchEvents feed last sent of each command (at most MAX_SHOWN, the oldest forgotten
// first), so that a command read again unchanged is not sent twice.
const MAX_SHOWN = 1_000;

class ShownCommands {
  #last = new Map<string, string>();

  // True, and remembered, when the row differs from what was last sent of its command.
  changed(row: CommandRow): boolean {
    const version = [row.state, row.deliveryCount, row.sentAt?.getTime(), row.finishedAt?.getTime(), row.result ? 1 : 0].join("/");
    if (this.#last.get(row.id) === version) return false;
    this.#last.delete(row.id);
    this.#last.set(row.id, version);
    if (this.#last.size > MAX_SHOWN) this.#last.delete(this.#last.keys().next().value!);
    return true;
  }
}

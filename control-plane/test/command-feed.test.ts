// The WatchEvents feed on a real database, driven through its event bus without an HTTP server:
// notices of changes arrive in any order and any number (the replica link delivers another
// replica's late), and the feed still shows each change of a command once, as it is.
import { create } from "@bufbuild/protobuf";
import { createHandlerContext } from "@connectrpc/connect";
import { CommandService, CommandState, WatchEventsRequestSchema, type WatchEventsResponse } from "@redflag/gen/command_service_pb";
import { describe, expect, it } from "vitest";
import { createEventBus } from "../src/cluster/events.ts";
import { cancelCommand, createCommandQueue } from "../src/domain/commands.ts";
import { createCommandService } from "../src/services/command-service.ts";
import type { CommandSigner } from "../src/signing/signer.ts";
import { availableBackends, type Backend } from "./support/database.ts";
import { adminContext, auditAs, insertAgent, mediumDatabase, noWakeups, oscarQueues, scanAction } from "./support/medium.ts";

describe.each(availableBackends)("the WatchEvents feed on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  it("does not repeat a command whose change was already shown, and shows its next change", async () => {
    const bus = createEventBus();
    const queue = createCommandQueue(m.db, noWakeups, {} as CommandSigner, bus, 86_400, { minimumAgentVersion: "" });
    const service = createCommandService(m.db, queue, bus);
    const agent = await insertAgent(m.db, "feed-1");
    const ctx = createHandlerContext({
      service: CommandService,
      method: CommandService.method.watchEvents,
      protocolName: "connect",
      requestMethod: "POST",
      url: "http://test/redflag.v1.CommandService/WatchEvents",
      contextValues: adminContext("WatchEvents", CommandService).values,
    });
    const feed = service.watchEvents!(create(WatchEventsRequestSchema, { agentId: agent.id }), ctx) as AsyncGenerator<Partial<WatchEventsResponse>>;
    const next = async () => {
      for (;;) {
        const { value } = await feed.next();
        if (value?.kind === "command") return value.command!;
      }
    };
    expect((await feed.next()).value?.kind).toBe("keepalive");

    const row = await queue.queue(oscarQueues("CreateCommand"), agent.id, scanAction);
    expect(await next()).toMatchObject({ id: row.id, state: CommandState.PENDING });
    // The same command's notice again, twice, each read on its own (another replica's late
    // notice, a retried publish), then the command is cancelled: the next thing shown is the
    // cancellation.
    const shown = next();
    for (let i = 0; i < 2; i++) {
      bus.publish([{ agentId: agent.id, commandId: row.id }]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await cancelCommand(m.db, bus, row.id, auditAs("CancelCommand", CommandService, `agent:${agent.id}`));
    expect(await shown).toMatchObject({ id: row.id, state: CommandState.CANCELLED });
    ctx.abort();
    await feed.return(undefined);
  });
});

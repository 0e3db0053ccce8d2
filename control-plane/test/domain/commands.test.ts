import { Code, ConnectError } from "@connectrpc/connect";
import { CommandService } from "@redflag/gen/command_service_pb";
import { describe, expect, it } from "vitest";
import { cancelCommand, createCommandQueue } from "../../src/domain/commands.ts";
import type { EventBus } from "../../src/cluster/events.ts";
import type { CommandSigner } from "../../src/signing/signer.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, mediumDatabase, noWakeups, oscarQueues, scanAction } from "../support/medium.ts";

// No minimum supported agent version: every agent may be sent anything.
const noMinimum = { minimumAgentVersion: "" };

const published: string[] = [];
const events = { publish: (e: { commandId: string }[]) => published.push(...e.map((x) => x.commandId)) } as unknown as EventBus;

describe.each(availableBackends)("the command queue on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  it("queues once per idempotency key, refuses the key for another request, and refuses unknown agents", async () => {
    const queue = createCommandQueue(m.db, noWakeups, {} as CommandSigner, events, 86_400, noMinimum);
    const agent = await insertAgent(m.db, "app-1");
    const ctx = oscarQueues("CreateCommand");
    const first = await queue.queue(ctx, agent.id, scanAction, 0, "key-1");
    expect((await queue.queue(ctx, agent.id, scanAction, 0, "key-1")).id).toBe(first.id);
    const other = await queue.queue(ctx, agent.id, scanAction, 60, "key-1").catch((e: unknown) => e);
    expect((other as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((other as ConnectError).rawMessage).toBe(`idempotency_key "key-1" was already used for a different request (command ${first.id}); use a new key for a new command`);
    const missing = await queue.queue(ctx, "00000000-0000-4000-8000-000000000000", scanAction).catch((e: unknown) => e);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);
  });

  it("queues a command with its audit entry, or (when that cannot be written) not at all, with or without an idempotency key", async () => {
    const queue = createCommandQueue(m.db, noWakeups, {} as CommandSigner, events, 86_400, noMinimum);
    const agent = await insertAgent(m.db, "app-3");
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(queue.queue(oscarQueues("CreateCommand"), agent.id, scanAction)).rejects.toThrow(/refused by the test/);
      await expect(queue.queue(oscarQueues("CreateCommand"), agent.id, scanAction, 0, "key-3")).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(0);
    expect(await m.db.commandIdempotencyKey.count({ where: { key: "key-3" } })).toBe(0);

    // The key was not spent by the failed attempt: the retry queues the command.
    const row = await queue.queue(oscarQueues("CreateCommand"), agent.id, scanAction, 0, "key-3");
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);
    expect(await m.db.auditEntry.count({ where: { action: "redflag.v1.CommandService/CreateCommand", target: `agent:${agent.id}` } })).toBe(1);
    expect(published).toContain(row.id);
  });

  it("cancels a pending command with its audit entry, or (when that cannot be written) not at all", async () => {
    const queue = createCommandQueue(m.db, noWakeups, {} as CommandSigner, events, 86_400, noMinimum);
    const agent = await insertAgent(m.db, "app-2");
    const row = await queue.queue(oscarQueues("CreateCommand"), agent.id, scanAction);
    const record = auditAs("CancelCommand", CommandService, `agent:${agent.id}`);

    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(cancelCommand(m.db, events, row.id, record)).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect((await m.db.command.findUniqueOrThrow({ where: { id: row.id } })).state).toBe("pending");

    expect((await cancelCommand(m.db, events, row.id, record)).state).toBe("cancelled");
    expect(await m.db.auditEntry.count({ where: { action: "redflag.v1.CommandService/CancelCommand", target: `agent:${agent.id}` } })).toBe(1);
    const again = await cancelCommand(m.db, events, row.id, record).catch((e: unknown) => e);
    expect((again as ConnectError).code).toBe(Code.FailedPrecondition);
  });
});

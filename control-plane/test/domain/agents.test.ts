import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { AgentRegistry } from "../../src/auth/agent-registry.ts";
import { activeAgent, decommission, existingAgent, rebindMachineId } from "../../src/domain/agents.ts";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, insertUpdate, mediumDatabase } from "../support/medium.ts";

const invalidated: string[] = [];
const registry = { invalidate: (id: string) => invalidated.push(id) } as unknown as AgentRegistry;
const rebound = (agentId: string) => auditAs<void>("RebindMachineId", FleetService, `agent:${agentId}`);
const decommissioned = (agentId: string) => auditAs("DecommissionAgent", FleetService, `agent:${agentId}`, (cancelled: number) => ({ cancelled }));
const NEW_MACHINE = () => Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");

describe.each(availableBackends)("agents on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  const events = (agentId: string) => m.db.securityEvent.count({ where: { agentId, type: "machine_id_rebound" } });
  const audits = (agentId: string, method: string) => m.db.auditEntry.count({ where: { target: `agent:${agentId}`, action: `redflag.v1.FleetService/${method}` } });

  it("rebinds the machine ID with a security event and an audit entry", async () => {
    const agent = await insertAgent(m.db, "db-1");
    const machineId = NEW_MACHINE();
    const after = await rebindMachineId(m.db, registry, await activeAgent(m.db, agent.id), machineId, rebound(agent.id));
    expect(after.machineId).toBe(machineId);
    expect(await events(agent.id)).toBe(1);
    expect(await audits(agent.id, "RebindMachineId")).toBe(1);
    expect(invalidated).toContain(agent.id);
  });

  for (const table of ["security_events", "audit_entries"] as const) {
    it(`a rebind whose ${table === "audit_entries" ? "audit entry" : "security event"} cannot be written changes nothing`, async () => {
      const agent = await insertAgent(m.db, `db-${table}`);
      const before = await existingAgent(m.db, agent.id);
      const undo = await failInsertsInto(m.db, table);
      try {
        await expect(rebindMachineId(m.db, registry, before, NEW_MACHINE(), rebound(agent.id))).rejects.toThrow(/refused by the test/);
      } finally {
        await undo();
      }
      expect((await existingAgent(m.db, agent.id)).machineId).toBe(agent.machineId);
      expect(await events(agent.id)).toBe(0);
      expect(await audits(agent.id, "RebindMachineId")).toBe(0);
    });
  }

  it("refuses another agent's machine ID with AlreadyExists, writing nothing", async () => {
    const one = await insertAgent(m.db, "db-3");
    const other = await insertAgent(m.db, "db-4");
    const err = await rebindMachineId(m.db, registry, await existingAgent(m.db, one.id), other.machineId, rebound(one.id)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.AlreadyExists);
    expect((err as ConnectError).rawMessage).toBe("another agent is registered with this machine ID");
    expect(await events(one.id)).toBe(0);
    expect(await audits(one.id, "RebindMachineId")).toBe(0);
  });

  it("decommissions with its audit entry, or (when that cannot be written) not at all", async () => {
    const agent = await insertAgent(m.db, "db-5");
    await insertUpdate(m.db, agent.id, "curl");
    await m.db.command.create({ data: { id: crypto.randomUUID(), agentId: agent.id, type: "scan_updates", action: Buffer.alloc(0), createdBy: "oscar" } });

    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(decommission(m.db, registry, await existingAgent(m.db, agent.id), decommissioned(agent.id))).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect((await existingAgent(m.db, agent.id)).decommissionedAt).toBeNull();
    expect(await m.db.packageUpdate.count({ where: { agentId: agent.id } })).toBe(1);
    expect(await m.db.command.count({ where: { agentId: agent.id, state: "pending" } })).toBe(1);

    const { agent: after, cancelled } = await decommission(m.db, registry, await existingAgent(m.db, agent.id), decommissioned(agent.id));
    expect(after.decommissionedAt).not.toBeNull();
    expect(cancelled).toBe(1);
    expect(await m.db.packageUpdate.count({ where: { agentId: agent.id } })).toBe(0);
    expect(await audits(agent.id, "DecommissionAgent")).toBe(1);
    const err = await activeAgent(m.db, agent.id).catch((e: unknown) => e);
    expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
  });
});

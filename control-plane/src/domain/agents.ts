import { Code, ConnectError } from "@connectrpc/connect";
import type { SubsystemConfig } from "@redflag/gen/common_pb";
import type { AgentRegistry } from "../auth/agent-registry.ts";
import type { LastSeenBuffer } from "../cluster/last-seen.ts";
import {
  agentConfigOverrides,
  allowReregistration,
  decommissionAgent,
  getAgent,
  setAgentConfigOverrides,
  setAgentLabels,
  setMachineId,
  type AgentRow,
} from "../store/agents.ts";
import { inTransaction } from "../store/db.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import { agentOverrides, type AgentConfigs } from "./agent-config.ts";
import type { AuditHook } from "./audit.ts";

// What operators change about enrolled agents: labels, per-agent settings, taking one out of
// the fleet, binding it to another machine, letting a machine register again. Each change and
// its audit entry (and security event) commit together.

// The row with what this process heard but has not flushed yet.
export function withBufferedLastSeen(row: AgentRow, lastSeen: LastSeenBuffer): AgentRow {
  const buffered = lastSeen.peek(row.id);
  if (!buffered || (row.lastSeenAt && row.lastSeenAt >= buffered.at)) return row;
  return {
    ...row,
    lastSeenAt: buffered.at,
    status: buffered.status ? new Uint8Array(buffered.status) : row.status,
    rebootRequired: buffered.rebootRequired ?? row.rebootRequired,
  };
}

export async function existingAgent(db: Prisma, agentId: string): Promise<AgentRow> {
  const row = await getAgent(db, agentId);
  if (!row) throw new ConnectError(`agent ${agentId} does not exist`, Code.NotFound);
  return row;
}

// An agent that is still part of the fleet.
export async function activeAgent(db: Prisma, agentId: string): Promise<AgentRow> {
  const row = await existingAgent(db, agentId);
  if (row.decommissionedAt) throw new ConnectError(`agent ${agentId} is decommissioned`, Code.FailedPrecondition);
  return row;
}

export async function relabelAgent(db: Prisma, before: AgentRow, labels: { tags: string[]; group: string }, record: AuditHook<void>): Promise<AgentRow> {
  await inTransaction(db, async (tx) => {
    await setAgentLabels(tx, before.id, labels);
    await record(tx);
  });
  return existingAgent(db, before.id);
}

// The agent's own subsystem settings, as stored.
export async function subsystemOverrides(db: Prisma, agentId: string): Promise<SubsystemConfig[]> {
  return agentOverrides(await agentConfigOverrides(db, agentId));
}

// Replaces the agent's own subsystem settings (already checked, serialized as an AgentConfig;
// null for none); the audit entry gets the settings it had before. The next poll of the agent
// gets the new config.
export async function setSubsystemOverrides(
  db: Prisma,
  agentConfigs: AgentConfigs,
  agentId: string,
  stored: Uint8Array | null,
  record: AuditHook<SubsystemConfig[]>,
): Promise<void> {
  await inTransaction(db, async (tx) => {
    const before = agentOverrides(await agentConfigOverrides(tx, agentId));
    await setAgentConfigOverrides(tx, agentId, stored);
    await record(tx, before);
  });
  agentConfigs.invalidate();
}

// Takes the agent out of the fleet: credentials revoked, pending commands cancelled, its
// updates dropped. Returns the agent as it is now and how many commands were cancelled.
// The audit entry gets how many commands were cancelled.
export async function decommission(db: Prisma, agents: AgentRegistry, before: AgentRow, record: AuditHook<number>): Promise<{ agent: AgentRow; cancelled: number }> {
  if (before.decommissionedAt) return { agent: before, cancelled: 0 };
  const cancelled = await inTransaction(db, async (tx) => {
    const n = await decommissionAgent(tx, before.id, new Date());
    await record(tx, n);
    return n;
  });
  agents.invalidate(before.id);
  return { agent: await existingAgent(db, before.id), cancelled };
}

// Binds the agent to the machine ID its host now has (a reinstall, new hardware), raising a
// security event; the rebind, the event and the audit entry commit together or not at all.
export async function rebindMachineId(db: Prisma, agents: AgentRegistry, before: AgentRow, machineId: string, record: AuditHook<void>): Promise<AgentRow> {
  if (machineId === before.machineId) return before;
  await inTransaction(db, async (tx) => {
    if (!(await setMachineId(tx, before.id, machineId))) throw new ConnectError("another agent is registered with this machine ID", Code.AlreadyExists);
    await recordSecurityEvent(tx, {
      type: "machine_id_rebound",
      severity: "warning",
      message: `machine ID of ${before.hostname} rebound by an admin`,
      agentId: before.id,
      machineId,
      detail: { previousMachineId: before.machineId },
    });
    await record(tx);
  });
  agents.invalidate(before.id);
  return existingAgent(db, before.id);
}

// Lets one Register of this machine through until `until`: without the agent's key (a
// reinstalled host), and for a decommissioned agent (letting it back). The audit entry gets the
// deadline it replaced and the agent as it is now.
export async function allowAgentReregistration(
  db: Prisma,
  agentId: string,
  grant: { until: Date; by: string },
  record: AuditHook<{ before: Date | null; agent: AgentRow }>,
): Promise<AgentRow> {
  return inTransaction(db, async (tx) => {
    const done = await allowReregistration(tx, agentId, grant.until, grant.by);
    if (!done) throw new ConnectError(`agent ${agentId} does not exist`, Code.NotFound);
    const agent = (await getAgent(tx, agentId))!;
    await record(tx, { before: done.before, agent });
    return agent;
  });
}

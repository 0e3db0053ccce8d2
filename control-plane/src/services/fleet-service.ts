import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import type { LastSeenBuffer } from "../last-seen.ts";
import { getAgent, listAgents, type AgentRow } from "../store/agents.ts";
import type { Prisma } from "../store/types.ts";
import { agentToProto } from "./convert.ts";
import { nextPageToken, pageSize, pageToken, uuid } from "./validate.ts";

export function createFleetService(
  db: Prisma,
  lastSeen: LastSeenBuffer,
  pollIntervalSeconds: number,
): ServiceImpl<typeof FleetService> {
  // Overlay what this process heard but has not flushed yet.
  const fresh = (row: AgentRow): AgentRow => {
    const buffered = lastSeen.peek(row.id);
    if (!buffered || (row.lastSeenAt && row.lastSeenAt >= buffered.at)) return row;
    return { ...row, lastSeenAt: buffered.at, status: buffered.status ? new Uint8Array(buffered.status) : row.status };
  };
  return {
    async listAgents(req) {
      const { rows, next } = await listAgents(db, pageSize(req.pageSize), pageToken(req.pageToken));
      const now = new Date();
      return { agents: rows.map((r) => agentToProto(fresh(r), now, pollIntervalSeconds)), nextPageToken: nextPageToken(next) };
    },
    async getAgent(req) {
      const row = await getAgent(db, uuid("agent_id", req.agentId));
      if (!row) throw new ConnectError(`agent ${req.agentId} does not exist`, Code.NotFound);
      return { agent: agentToProto(fresh(row), new Date(), pollIntervalSeconds) };
    },
  };
}

import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { getAgent, listAgents } from "../store/agents.ts";
import type { Prisma } from "../store/types.ts";
import { agentToProto } from "./convert.ts";
import { nextPageToken, pageSize, pageToken, uuid } from "./validate.ts";

export function createFleetService(db: Prisma, pollIntervalSeconds: number): ServiceImpl<typeof FleetService> {
  return {
    async listAgents(req) {
      const { rows, next } = await listAgents(db, pageSize(req.pageSize), pageToken(req.pageToken));
      const now = new Date();
      return { agents: rows.map((r) => agentToProto(r, now, pollIntervalSeconds)), nextPageToken: nextPageToken(next) };
    },
    async getAgent(req) {
      const row = await getAgent(db, uuid("agent_id", req.agentId));
      if (!row) throw new ConnectError(`agent ${req.agentId} does not exist`, Code.NotFound);
      return { agent: agentToProto(row, new Date(), pollIntervalSeconds) };
    },
  };
}

import type { ConnectRouter } from "@connectrpc/connect";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { createAgentService, type AgentServiceDeps } from "./services/agent-service.ts";
import { createCommandService } from "./services/command-service.ts";
import { createFleetService } from "./services/fleet-service.ts";
import { createTokenService } from "./services/token-service.ts";

export function createRoutes(deps: AgentServiceDeps) {
  return (router: ConnectRouter) => {
    router.service(AgentService, createAgentService(deps));
    router.service(TokenService, createTokenService(deps.db));
    router.service(FleetService, createFleetService(deps.db, deps.lastSeen, deps.config.pollIntervalSeconds));
    router.service(CommandService, createCommandService(deps.db, deps.wakeups, deps.signer));
  };
}

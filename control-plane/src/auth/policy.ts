import { AgentService } from "@redflag/gen/agent_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import type { DescService } from "@bufbuild/protobuf";

export type Access = "public" | "agent" | "admin";

// Who may call what, per service/method. Anything missing is denied.
const table = new Map<string, Access>();

function allow(service: DescService, access: Access, methods?: string[]) {
  for (const method of service.methods) {
    if (!methods || methods.includes(method.name)) table.set(`${service.typeName}/${method.name}`, access);
  }
}

allow(AgentService, "public", ["Register", "Renew"]);
allow(AgentService, "agent", ["PollCommands", "ReportResults"]);
allow(TokenService, "admin");
allow(FleetService, "admin");
allow(CommandService, "admin");

export function policyFor(service: string, method: string): Access | undefined {
  return table.get(`${service}/${method}`);
}

export function policyTable(): ReadonlyMap<string, Access> {
  return table;
}

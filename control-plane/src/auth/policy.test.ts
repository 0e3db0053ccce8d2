import { AgentService } from "@redflag/gen/agent_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { describe, expect, it } from "vitest";
import { policyFor, policyTable } from "./policy.ts";

describe("policy table", () => {
  it("names every RPC of every service and nothing else", () => {
    const rpcs = [AgentService, TokenService, FleetService, CommandService].flatMap((s) =>
      s.methods.map((m) => `${s.typeName}/${m.name}`),
    );
    expect([...policyTable().keys()].sort()).toEqual(rpcs.sort());
  });

  it("lets agents only register and renew without a credential, and denies the unknown", () => {
    const open = [...policyTable()].filter(([, access]) => access === "public").map(([rpc]) => rpc);
    expect(open.sort()).toEqual(["redflag.v1.AgentService/Register", "redflag.v1.AgentService/Renew"]);
    expect(policyFor("redflag.v1.AgentService", "PollCommands")).toBe("agent");
    expect(policyFor("redflag.v1.TokenService", "CreateRegistrationToken")).toBe("admin");
    expect(policyFor("redflag.v1.Nope", "Anything")).toBeUndefined();
  });
});

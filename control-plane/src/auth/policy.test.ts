import { NotificationService } from "@redflag/gen/notification_service_pb";
import { describe, expect, it } from "vitest";
import { policyFor, policyTable } from "./policy.ts";

describe("policy table", () => {
  it("opens only registration, renewal, setup, sign-in, health and reflection to callers without credentials, and denies the unknown", () => {
    const open = [...policyTable()].filter(([, access]) => access === "public").map(([rpc]) => rpc);
    expect(open.sort()).toEqual([
      "grpc.health.v1.Health/Check",
      "grpc.health.v1.Health/Watch",
      "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      "redflag.v1.AgentService/Register",
      "redflag.v1.AgentService/Renew",
      "redflag.v1.AuthService/GetSetupState",
      "redflag.v1.AuthService/Login",
      "redflag.v1.AuthService/Setup",
    ]);
    expect(policyFor("redflag.v1.AgentService", "PollCommands")).toBe("agent");
    expect(policyFor("redflag.v1.TokenService", "CreateRegistrationToken")).toBe("admin");
    expect(policyFor("redflag.v1.CommandService", "CreateCommand")).toBe("operator");
    expect(policyFor("redflag.v1.ReleaseService", "PublishRelease")).toBe("admin");
    expect(policyFor("redflag.v1.ReleaseService", "DeleteRelease")).toBe("admin");
    expect(policyFor("redflag.v1.ReleaseService", "StartFleetUpgrade")).toBe("admin");
    expect(policyFor("redflag.v1.ReleaseService", "ListAgentUpgrades")).toBe("viewer");
    // Channels hold secrets and reach other hosts.
    for (const m of NotificationService.methods) expect(policyFor(NotificationService.typeName, m.name)).toBe("admin");
    expect(policyFor("redflag.v1.PolicyService", "CreatePolicy")).toBe("operator");
    expect(policyFor("redflag.v1.PolicyService", "PreviewPolicy")).toBe("viewer");
    expect(policyFor("redflag.v1.MaintenanceService", "CreateWindow")).toBe("operator");
    expect(policyFor("redflag.v1.MaintenanceService", "PreviewWindow")).toBe("viewer");
    expect(policyFor("redflag.v1.Nope", "Anything")).toBeUndefined();
  });
});

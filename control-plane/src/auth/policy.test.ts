import { AgentService } from "@redflag/gen/agent_service_pb";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { NotificationService } from "@redflag/gen/notification_service_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { describe, expect, it } from "vitest";
import { policyFor, policyTable } from "./policy.ts";

const ALL_SERVICES = [AgentService, AuthService, UserService, ApiTokenService, AuditService, TokenService, FleetService, CommandService, UpdateService, SecurityService, SettingsService, ReportService, ReleaseService, NotificationService, PolicyService, MaintenanceService];

describe("policy table", () => {
  it("names every RPC of every service and nothing else", () => {
    const rpcs = ALL_SERVICES.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    expect([...policyTable().keys()].sort()).toEqual(rpcs.sort());
  });

  it("opens only registration, renewal, setup and sign-in to callers without credentials, and denies the unknown", () => {
    const open = [...policyTable()].filter(([, access]) => access === "public").map(([rpc]) => rpc);
    expect(open.sort()).toEqual([
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

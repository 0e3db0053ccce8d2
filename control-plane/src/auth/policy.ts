import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { NotificationService } from "@redflag/gen/notification_service_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { Health } from "@redflag/gen/grpc/health/v1/health_pb";
import { ServerReflection as ReflectionV1 } from "@redflag/gen/grpc/reflection/v1/reflection_pb";
import { ServerReflection as ReflectionV1alpha } from "@redflag/gen/grpc/reflection/v1alpha/reflection_pb";
import type { DescService } from "@bufbuild/protobuf";
import type { RoleName } from "@redflag/common/roles";

// public: anyone. agent: a registered agent's access token and machine ID. A role: a person
// (session or API token) or the admin key with at least that role. self: a signed-in person
// through a session (not a token, not the admin key): changes to one's own credentials.
export type Access = "public" | "agent" | "self" | RoleName;

// Who may call what, per service/method. Anything missing is denied.
const table = new Map<string, Access>();

function allow(service: DescService, access: Access, methods?: string[]) {
  for (const name of methods ?? service.methods.map((m) => m.name)) {
    if (!service.methods.some((m) => m.name === name)) throw new Error(`${service.typeName} has no method ${name}`);
    table.set(`${service.typeName}/${name}`, access);
  }
}

// Probes (Kubernetes, load balancers) carry no credentials. Reflection gives the schema only,
// which is public anyway (proto/ in the repository); every RPC it describes keeps its own line.
allow(Health, "public");
allow(ReflectionV1, "public");
allow(ReflectionV1alpha, "public");

allow(AgentService, "public", ["Register", "Renew"]);
allow(AgentService, "agent", ["PollCommands", "ReportResults"]);

allow(AuthService, "public", ["GetSetupState", "Setup", "Login"]);
allow(AuthService, "viewer", ["Logout", "WhoAmI"]);
allow(AuthService, "self", ["ChangePassword", "BeginTotpEnrollment", "ConfirmTotpEnrollment", "DisableTotp"]);

allow(UserService, "admin");
// Everyone manages their own tokens; the handlers limit other people's to admins.
allow(ApiTokenService, "viewer");
allow(AuditService, "admin");
allow(SecurityService, "admin");
// Channels hold secrets and reach outside hosts; the delivery log names hosts and events.
allow(NotificationService, "admin");
allow(SettingsService, "viewer", ["ListSettings"]);
allow(SettingsService, "admin", ["UpdateSettings", "ListSettingChanges", "ExportSettings", "ImportSettings"]);

allow(TokenService, "admin");
allow(FleetService, "viewer", ["ListAgents", "GetAgent", "GetAgentConfig"]);
allow(FleetService, "operator", ["SetAgentLabels", "UpdateSubsystems", "TriggerScan", "SetHeartbeat", "RebootAgent"]);
allow(FleetService, "admin", ["DecommissionAgent", "RebindMachineId", "AllowReregistration"]);
allow(CommandService, "viewer", ["ListCommands", "GetCommand", "WatchEvents"]);
allow(CommandService, "operator", ["CreateCommand", "CancelCommand", "RetryCommand"]);
allow(UpdateService, "viewer", ["ListUpdates", "ListPackageUpdates", "ListHolds"]);
allow(UpdateService, "operator", ["ApproveUpdates", "RejectUpdates", "InstallApprovedUpdates", "SetHold", "RemoveHold"]);
// Auto-approval rules approve what an operator could approve by hand (installing stays a separate
// step), so operators keep them; what a rule would approve is update information every viewer
// already sees.
allow(PolicyService, "viewer", ["ListPolicies", "PreviewPolicy"]);
allow(PolicyService, "operator", ["CreatePolicy", "UpdatePolicy", "DeletePolicy"]);
allow(ReportService, "viewer");
// Windows only narrow when installs and reboots may happen, never widen what anyone may do, and
// the people who install and reboot (operators) are the ones who plan when: operators manage
// them, blackouts included; every change is audited. Everyone who reads the fleet sees them.
allow(MaintenanceService, "viewer", ["ListWindows", "PreviewWindow", "ListRebootPolicies"]);
allow(MaintenanceService, "operator", ["CreateWindow", "UpdateWindow", "DeleteWindow", "CreateRebootPolicy", "UpdateRebootPolicy", "DeleteRebootPolicy"]);
allow(MaintenanceService, "viewer", ["ListWindows", "PreviewWindow"]);
allow(MaintenanceService, "operator", ["CreateWindow", "UpdateWindow", "DeleteWindow"]);
// A rollout installs only approved, not held updates (as InstallApprovedUpdates does) on the
// schedule its rings set, so the people who install (operators) run it; its progress is fleet
// information every viewer already sees.
allow(RolloutService, "viewer", ["ListRollouts", "GetRollout", "PreviewRollout"]);
allow(RolloutService, "operator", ["CreateRollout", "PauseRollout", "ResumeRollout", "AbortRollout"]);
// The registry is what agents upgrade from (as root): only admins change it. What is in it is
// no secret (agents download it without credentials), so everyone who reads the fleet sees it.
// Fleet upgrades replace agents as root like update_agent: admins only; their progress is fleet
// information like the agents' versions.
allow(ReleaseService, "viewer", ["ListReleases", "ListAgentUpgrades"]);
allow(ReleaseService, "admin", ["PublishRelease", "DeleteRelease", "StartFleetUpgrade"]);

export function policyFor(service: string, method: string): Access | undefined {
  return table.get(`${service}/${method}`);
}

export function policyTable(): ReadonlyMap<string, Access> {
  return table;
}

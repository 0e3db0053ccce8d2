import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
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
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { Health } from "@redflag/gen/grpc/health/v1/health_pb";
import { ServerReflection as ReflectionV1 } from "@redflag/gen/grpc/reflection/v1/reflection_pb";
import { ServerReflection as ReflectionV1alpha } from "@redflag/gen/grpc/reflection/v1alpha/reflection_pb";
import type { PrincipalResolver } from "../auth/principals.ts";
import { createAgentService, type AgentServiceDeps } from "../services/agent-service.ts";
import { createApiTokenService } from "../services/api-token-service.ts";
import { createAuditService } from "../services/audit-service.ts";
import { createAuthService } from "../services/auth-service.ts";
import { createCommandService } from "../services/command-service.ts";
import { createCommandQueue } from "../domain/commands.ts";
import { createFleetService } from "../services/fleet-service.ts";
import { createNotificationService } from "../services/notification-service.ts";
import { createPolicyService } from "../services/policy-service.ts";
import { createMaintenanceService } from "../services/maintenance-service.ts";
import { createReleaseService } from "../services/release-service.ts";
import { createReportService } from "../services/report-service.ts";
import { createRolloutService } from "../services/rollout-service.ts";
import { createSecurityService } from "../services/security-service.ts";
import { createSettingsService } from "../services/settings-service.ts";
import type { Settings } from "../settings.ts";
import { createTokenService } from "../services/token-service.ts";
import { createUpdateService } from "../services/update-service.ts";
import { createUserService } from "../services/user-service.ts";
import { createHealthService } from "../services/health-service.ts";
import { createReflectionServices } from "../services/reflection-service.ts";
import type { Readiness } from "../store/observability.ts";

// Every service the control plane serves (routes.test.ts holds createRoutes to it): the policy
// table's test and the RPC fuzzer walk this list, so a new service cannot be left out of either.
export const RPC_SERVICES: readonly DescService[] = [
  AgentService,
  AuthService,
  UserService,
  ApiTokenService,
  AuditService,
  TokenService,
  SecurityService,
  SettingsService,
  CommandService,
  FleetService,
  UpdateService,
  PolicyService,
  ReportService,
  ReleaseService,
  NotificationService,
  MaintenanceService,
  RolloutService,
  // The standard gRPC services: health (the /readyz answer) and server reflection (the schema).
  Health,
  ReflectionV1,
  ReflectionV1alpha,
];

export interface RouteDeps extends AgentServiceDeps {
  principals: PrincipalResolver;
  masterKey: Buffer;
  settings: Settings;
  // What /readyz answers; the gRPC health service gives the same.
  readiness: () => Promise<Readiness>;
}

export function createRoutes(deps: RouteDeps) {
  return (router: ConnectRouter) => {
    router.service(AgentService, createAgentService(deps));
    router.service(AuthService, createAuthService(deps));
    router.service(UserService, createUserService(deps.db, deps.principals));
    router.service(ApiTokenService, createApiTokenService(deps.db, deps.principals));
    router.service(AuditService, createAuditService(deps.db));
    router.service(TokenService, createTokenService(deps.db, deps.config.publicUrl, deps.signer));
    router.service(SecurityService, createSecurityService(deps));
    router.service(SettingsService, createSettingsService(deps.db, deps.settings));
    const commands = createCommandQueue(deps.db, deps.wakeups, deps.signer, deps.events, deps.config.idempotencyKeyTtlSeconds, deps.settings);
    router.service(CommandService, createCommandService(deps.db, commands, deps.events));
    router.service(FleetService, createFleetService({ ...deps, commands }));
    router.service(UpdateService, createUpdateService(deps.db, deps.wakeups, deps.agentConfigs, deps.events, deps.settings));
    router.service(PolicyService, createPolicyService(deps.db));
    router.service(ReportService, createReportService(deps));
    router.service(ReleaseService, createReleaseService(deps.db, deps.signer, deps));
    router.service(NotificationService, createNotificationService(deps));
    router.service(MaintenanceService, createMaintenanceService(deps.db));
    router.service(RolloutService, createRolloutService({ db: deps.db, events: deps.events, settings: deps.settings }));
    router.service(Health, createHealthService({ readiness: deps.readiness, services: new Set(RPC_SERVICES.map((s) => s.typeName)) }));
    const reflection = createReflectionServices(RPC_SERVICES);
    router.service(ReflectionV1, reflection.v1);
    router.service(ReflectionV1alpha, reflection.v1alpha);
  };
}

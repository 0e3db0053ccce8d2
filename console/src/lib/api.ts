import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { NotificationService } from "@redflag/gen/notification_service_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { getContext, setContext } from "svelte";
import { connection } from "./connection.svelte.ts";

// Every client of the control plane's API the console uses. Pages and components take it from
// Svelte context (useApi), so component tests hand them clients on an in-memory transport.
export interface Api {
  auth: Client<typeof AuthService>;
  users: Client<typeof UserService>;
  apiTokens: Client<typeof ApiTokenService>;
  audit: Client<typeof AuditService>;
  fleet: Client<typeof FleetService>;
  reports: Client<typeof ReportService>;
  tokens: Client<typeof TokenService>;
  updates: Client<typeof UpdateService>;
  commands: Client<typeof CommandService>;
  settings: Client<typeof SettingsService>;
  security: Client<typeof SecurityService>;
  releases: Client<typeof ReleaseService>;
  policies: Client<typeof PolicyService>;
  notifications: Client<typeof NotificationService>;
  maintenance: Client<typeof MaintenanceService>;
  rollouts: Client<typeof RolloutService>;
}

export function createApi(transport: Transport): Api {
  return {
    auth: createClient(AuthService, transport),
    users: createClient(UserService, transport),
    apiTokens: createClient(ApiTokenService, transport),
    audit: createClient(AuditService, transport),
    fleet: createClient(FleetService, transport),
    reports: createClient(ReportService, transport),
    tokens: createClient(TokenService, transport),
    updates: createClient(UpdateService, transport),
    commands: createClient(CommandService, transport),
    settings: createClient(SettingsService, transport),
    security: createClient(SecurityService, transport),
    releases: createClient(ReleaseService, transport),
    policies: createClient(PolicyService, transport),
    notifications: createClient(NotificationService, transport),
    maintenance: createClient(MaintenanceService, transport),
    rollouts: createClient(RolloutService, transport),
  };
}

// A call that could not reach the server (restart, network) rather than one the server refused.
export function isUnreachable(err: unknown): boolean {
  const e = ConnectError.from(err);
  return e.code === Code.Unavailable || (e.code === Code.Unknown && e.cause instanceof TypeError);
}

// Tells the connection state whether the server answered; server-streaming calls report once
// they open, so a live feed also counts as reachable.
export const connectionInterceptor: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    connection.reached();
    return res;
  } catch (err) {
    if (isUnreachable(err) && !req.signal.aborted) connection.lost();
    else if (ConnectError.from(err).code !== Code.Canceled) connection.reached();
    throw err;
  }
};

export const API_CONTEXT = Symbol("redflag-api");
export const provideApi = (api: Api) => setContext(API_CONTEXT, api);
export function useApi(): Api {
  const api = getContext<Api | undefined>(API_CONTEXT);
  if (!api) throw new Error("useApi() outside the console layout: provideApi() was not called");
  return api;
}

// A message for people: the server's own words, or what went wrong on the way.
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  if (isUnreachable(err)) return "The control plane cannot be reached right now; it may be restarting.";
  if (e.code === Code.PermissionDenied) return `Not allowed: ${e.rawMessage}`;
  if (e.code === Code.Internal) return "The control plane hit an internal error; its log has the details.";
  return e.rawMessage;
}

export const isUnauthenticated = (err: unknown) => ConnectError.from(err).code === Code.Unauthenticated;

import { create, fromBinary, toJson } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { kPrincipal } from "../auth/context.ts";
import type { CommandCaller } from "../domain/commands.ts";
import { audit, commandCreator } from "./audit.ts";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandCreator, CommandInfoSchema, CommandState, CreateCommandRequestSchema, type CommandInfo } from "@redflag/gen/command_service_pb";
import { CommandResultSchema, CommandType } from "@redflag/gen/command_pb";
import { AgentStatusSchema, OsFamily } from "@redflag/gen/common_pb";
import { AgentHealth, AgentSchema, type Agent } from "@redflag/gen/fleet_service_pb";
import {
  RegistrationTokenSchema,
  RegistrationTokenState,
  type RegistrationToken,
} from "@redflag/gen/token_service_pb";
import type { CommandCreator as DbCommandCreator, CommandState as DbCommandState, CommandType as DbCommandType } from "../store/types.ts";
import type { AgentHealthName, AgentRow } from "../store/agents.ts";
import { agentHealth } from "../domain/health.ts";
import type { CommandRow } from "../store/commands.ts";
import type { RegistrationTokenRow } from "../store/registration-tokens.ts";
import type { UserRow } from "../store/people.ts";
import type { ApiKey as ApiKeyRow, AuditEntry as AuditRow } from "../store/types.ts";
import { type User, UserSchema } from "@redflag/gen/identity_pb";
import { type ApiToken, ApiTokenSchema } from "@redflag/gen/api_token_service_pb";
import { type AuditEntry, AuditEntrySchema } from "@redflag/gen/audit_service_pb";
import { registrationTokenState } from "../domain/registration-tokens.ts";
import { isBelow } from "../domain/upgrades.ts";
import { roleToProto } from "@redflag/common/roles";

const ts = (d: Date | null | undefined) => (d ? timestampFromDate(d) : undefined);

const TOKEN_STATES = {
  active: RegistrationTokenState.ACTIVE,
  revoked: RegistrationTokenState.REVOKED,
  expired: RegistrationTokenState.EXPIRED,
  exhausted: RegistrationTokenState.EXHAUSTED,
} as const;

export function registrationTokenToProto(row: RegistrationTokenRow, now: Date): RegistrationToken {
  const state = TOKEN_STATES[registrationTokenState(row, now)];
  return create(RegistrationTokenSchema, {
    id: row.id,
    note: row.note,
    seats: row.seats,
    usedSeats: row.usedSeats,
    createTime: ts(row.createdAt),
    expireTime: ts(row.expiresAt),
    revokeTime: ts(row.revokedAt),
    state,
    prefix: row.prefix,
  });
}

// The agents in one health state, as a query with agentHealth's thresholds; undefined for a
// value that is not a health state.
// The store's name of each health (store/agents.ts healthWhere).
export const HEALTH_NAMES = new Map<AgentHealth, AgentHealthName>([
  [AgentHealth.ONLINE, "online"],
  [AgentHealth.OFFLINE, "offline"],
  [AgentHealth.STALE, "stale"],
  [AgentHealth.NEVER_REPORTED, "never_reported"],
  [AgentHealth.DECOMMISSIONED, "decommissioned"],
]);

const FAMILIES: Record<string, OsFamily> = {
  linux: OsFamily.LINUX,
  windows: OsFamily.WINDOWS,
  darwin: OsFamily.DARWIN,
};

// `minimumVersion` is the setting minimum_agent_version: an agent below it is marked upgrade_required.
export function agentToProto(row: AgentRow, now: Date, pollIntervalSeconds: number, minimumVersion = ""): Agent {
  return create(AgentSchema, {
    upgradeRequired: !row.decommissionedAt && isBelow(row.agentVersion, minimumVersion),
    rebootRequired: row.rebootRequired,
    rebootOverdueSince: row.rebootOverdueSince ? ts(row.rebootOverdueSince) : undefined,
    updatesBySeverity: row.updates.bySeverity ?? {},
    tags: row.tags ?? [],
    group: row.group ?? "",
    id: row.id,
    hostname: row.hostname,
    machineId: row.machineId,
    os: {
      family: FAMILIES[row.osFamily] ?? OsFamily.UNSPECIFIED,
      name: row.osName,
      version: row.osVersion,
      kernel: row.kernel,
      arch: row.arch,
    },
    agentVersion: row.agentVersion,
    health: agentHealth(row, now, pollIntervalSeconds),
    registerTime: ts(row.registeredAt),
    lastSeenTime: ts(row.lastSeenAt),
    status: row.status ? fromBinary(AgentStatusSchema, row.status) : undefined,
    registrationTokenId: row.registrationTokenId ?? "",
    pendingUpdateCount: row.updates.pending,
    securityUpdateCount: row.updates.security,
    lastScanTime: ts(row.lastScanAt),
    reregistrationAllowedUntil: row.reregistrationAllowedUntil && row.reregistrationAllowedUntil > now ? ts(row.reregistrationAllowedUntil) : undefined,
  });
}

export const COMMAND_TYPES: Record<DbCommandType, CommandType> = {
  scan_updates: CommandType.SCAN_UPDATES,
  collect_specs: CommandType.COLLECT_SPECS,
  install_updates: CommandType.INSTALL_UPDATES,
  dry_run_update: CommandType.DRY_RUN_UPDATE,
  confirm_dependencies: CommandType.CONFIRM_DEPENDENCIES,
  rollback_update: CommandType.ROLLBACK_UPDATE,
  reboot: CommandType.REBOOT,
  enable_heartbeat: CommandType.ENABLE_HEARTBEAT,
  disable_heartbeat: CommandType.DISABLE_HEARTBEAT,
  update_agent: CommandType.UPDATE_AGENT,
  list_package_versions: CommandType.LIST_PACKAGE_VERSIONS,
};

export const COMMAND_STATES: Record<DbCommandState, CommandState> = {
  pending: CommandState.PENDING,
  sent: CommandState.SENT,
  succeeded: CommandState.SUCCEEDED,
  failed: CommandState.FAILED,
  rejected: CommandState.REJECTED,
  timed_out: CommandState.TIMED_OUT,
  cancelled: CommandState.CANCELLED,
};

const COMMAND_CREATORS: Record<DbCommandCreator, CommandCreator> = {
  unknown: CommandCreator.UNSPECIFIED,
  person: CommandCreator.PERSON,
  api_token: CommandCreator.API_TOKEN,
  admin_key: CommandCreator.ADMIN_KEY,
  system: CommandCreator.SYSTEM,
};

export function commandToProto(row: CommandRow): CommandInfo {
  return create(CommandInfoSchema, {
    id: row.id,
    agentId: row.agentId,
    type: COMMAND_TYPES[row.type],
    state: COMMAND_STATES[row.state],
    sequence: row.sequence ?? 0n,
    createTime: ts(row.createdAt),
    sendTime: ts(row.sentAt),
    finishTime: ts(row.finishedAt),
    createdBy: row.createdBy,
    createdByKind: COMMAND_CREATORS[row.createdByKind],
    result: row.result ? fromBinary(CommandResultSchema, row.result.result) : undefined,
    deliveryCount: row.deliveryCount,
  });
}

export function userToProto(row: UserRow): User {
  return create(UserSchema, {
    id: row.id,
    username: row.username,
    displayName: row.displayName,
    role: roleToProto(row.role),
    totpEnabled: row.totpEnabled,
    disabled: row.disabledAt !== null,
    createTime: timestampFromDate(row.createdAt),
    lastLoginTime: row.lastLoginAt ? timestampFromDate(row.lastLoginAt) : undefined,
    authSource: row.authSource,
  });
}

export function apiTokenToProto(row: ApiKeyRow & { user: UserRow | null }): ApiToken {
  return create(ApiTokenSchema, {
    id: row.id,
    name: row.name,
    userId: row.userId ?? "",
    username: row.user?.username ?? "",
    scope: roleToProto(row.scope),
    prefix: row.prefix,
    createTime: timestampFromDate(row.createdAt),
    expireTime: row.expiresAt ? timestampFromDate(row.expiresAt) : undefined,
    lastUseTime: row.lastUsedAt ? timestampFromDate(row.lastUsedAt) : undefined,
    revokeTime: row.revokedAt ? timestampFromDate(row.revokedAt) : undefined,
  });
}

export function auditToProto(row: AuditRow): AuditEntry {
  return create(AuditEntrySchema, {
    id: row.id.toString(),
    time: timestampFromDate(row.createdAt),
    actorKind: row.actorKind,
    actorId: row.actorId,
    actorName: row.actorName,
    action: row.action,
    target: row.target,
    remoteAddr: row.remoteAddr,
    beforeJson: row.before === null ? "" : JSON.stringify(row.before),
    afterJson: row.after === null ? "" : JSON.stringify(row.after),
    outcome: row.outcome,
  });
}

// The caller of an RPC that queues commands, for the command queue (domain/commands.ts): its
// role, whose idempotency keys it uses, who the command is created by, and its audit entry.
export function commandCaller(ctx: HandlerContext): CommandCaller {
  const principal = ctx.values.get(kPrincipal);
  return {
    role: principal?.role,
    keyScope: !principal ? "system" : principal.kind === "session" && principal.userId ? `user:${principal.userId}` : `key:${principal.credentialId}`,
    creator: commandCreator(ctx),
    record: (tx, { row, action, merged }) =>
      audit(tx, ctx, {
        target: `agent:${row.agentId}`,
        after: { commandId: row.id, type: row.type, action: toJson(CreateCommandRequestSchema, create(CreateCommandRequestSchema, { action })), ...(merged ? { merged: true } : {}) },
      }),
  };
}

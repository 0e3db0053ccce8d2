import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Logger } from "../log.ts";
import { isMachineId, sha256 } from "../ids.ts";
import { isConnectionError } from "../store/db.ts";
import { findApiKey, touchApiKeys } from "../store/bootstrap.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import type { AgentRegistry } from "./agent-registry.ts";
import type { AgentTokens } from "./agent-tokens.ts";
import { kAdmin, kAgent, kRemoteAddr, type AdminIdentity } from "./context.ts";
import { policyFor } from "./policy.ts";

// Outermost: gives every call a request ID, logs it, and turns anything that is not a
// ConnectError into Unavailable (database down) or a bare Internal, never leaking internals.
export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = randomUUID();
    const log = logger.child({ requestId, rpc: `${req.service.typeName}/${req.method.name}` });
    try {
      const res = await next(req);
      log.debug({ ms: Math.round(performance.now() - started) }, "rpc ok");
      return res;
    } catch (err) {
      const ms = Math.round(performance.now() - started);
      const agentId = req.contextValues.get(kAgent)?.agentId;
      if (err instanceof ConnectError) {
        log.info({ ms, agentId, code: Code[err.code], reason: err.rawMessage }, "rpc refused");
        throw err;
      }
      if (isConnectionError(err)) {
        log.warn({ ms, agentId, err }, "database unavailable");
        throw new ConnectError("the database is unavailable; try again shortly", Code.Unavailable);
      }
      log.error({ ms, agentId, err }, "rpc failed");
      throw new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    }
  };
}

export interface AuthDeps {
  db: Prisma;
  tokens: AgentTokens;
  agents: AgentRegistry;
  logger: Logger;
}

// One interceptor, deny by default: the policy table says who may call each method.
export function authInterceptor(deps: AuthDeps): Interceptor {
  const admin = adminAuthenticator(deps.db);
  return (next) => async (req) => {
    const policy = policyFor(req.service.typeName, req.method.name);
    switch (policy) {
      case "public":
        return next(req);
      case "agent":
        await authenticateAgent(deps, req.header, req.contextValues);
        return next(req);
      case "admin":
        req.contextValues.set(kAdmin, await admin(bearer(req.header)));
        return next(req);
      default:
        throw new ConnectError("this method is not available", Code.PermissionDenied);
    }
  };
}

function bearer(header: Headers): string {
  const value = header.get("authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(value);
  if (!match) throw new ConnectError("missing credentials: send authorization: Bearer <token>", Code.Unauthenticated);
  return match[1]!;
}

async function authenticateAgent(deps: AuthDeps, header: Headers, values: ContextValues) {
  const claims = await deps.tokens.verify(bearer(header), Date.now());
  const presented = header.get("x-machine-id") ?? "";
  const state = await deps.agents.get(claims.agentId);
  if (!state) throw new ConnectError("this agent is no longer registered", Code.Unauthenticated);
  if (state.credentialGeneration !== claims.generation) {
    throw new ConnectError("access token was replaced by a newer registration", Code.Unauthenticated);
  }
  if (!isMachineId(presented) || presented !== claims.machineId || presented !== state.machineId) {
    await recordSecurityEvent(deps.db, {
      type: "machine_id_mismatch",
      severity: "critical",
      message: "an agent credential was used with a machine ID other than the registered one",
      agentId: claims.agentId,
      machineId: presented.slice(0, 64),
      remoteAddr: values.get(kRemoteAddr),
      detail: { registeredMachineId: state.machineId },
    });
    throw new ConnectError("machine ID does not match the registered machine", Code.PermissionDenied);
  }
  if (state.decommissioned) throw new ConnectError("this agent has been decommissioned", Code.PermissionDenied);
  values.set(kAgent, { agentId: claims.agentId, machineId: claims.machineId });
}

// API keys are looked up by SHA-256, so comparing secrets never takes secret-dependent time.
function adminAuthenticator(db: Prisma) {
  const cache = new Map<string, { identity: AdminIdentity; until: number }>();
  const lastTouched = new Map<string, number>();
  return async (secret: string): Promise<AdminIdentity> => {
    const hash = sha256(secret);
    const key = hash.toString("base64");
    const now = Date.now();
    const hit = cache.get(key);
    if (hit && hit.until > now) return hit.identity;
    const row = await findApiKey(db, hash);
    if (!row || row.revokedAt) throw new ConnectError("API key is not valid", Code.Unauthenticated);
    const identity = { keyId: row.id, name: row.name };
    cache.set(key, { identity, until: now + 10_000 });
    if ((lastTouched.get(row.id) ?? 0) < now - 60_000) {
      lastTouched.set(row.id, now);
      await touchApiKeys(db, [row.id], new Date(now));
    }
    return identity;
  };
}

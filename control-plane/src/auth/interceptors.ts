import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Logger } from "../log.ts";
import { isMachineId } from "../ids.ts";
import { isConnectionError } from "../store/db.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import type { AgentRegistry } from "./agent-registry.ts";
import type { AgentTokens } from "./agent-tokens.ts";
import { kAgent, kPrincipal, kRemoteAddr, kUserAgent } from "./context.ts";
import { sessionFromCookie, type PrincipalResolver } from "./principals.ts";
import { atLeast } from "./roles.ts";
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
  principals: PrincipalResolver;
  logger: Logger;
}

// One interceptor, deny by default: the policy table says who may call each method.
export function authInterceptor(deps: AuthDeps): Interceptor {
  return (next) => async (req) => {
    const policy = policyFor(req.service.typeName, req.method.name);
    req.contextValues.set(kUserAgent, (req.header.get("user-agent") ?? "").slice(0, 200));
    switch (policy) {
      case "public":
        return next(req);
      case "agent":
        await authenticateAgent(deps, req.header, req.contextValues);
        return next(req);
      case undefined:
        throw new ConnectError("this method is not available", Code.PermissionDenied);
      default: {
        const principal = await deps.principals.resolve(personCredential(req.header));
        if (policy === "self") {
          if (principal.kind !== "session") {
            throw new ConnectError("only a signed-in person can change their own credentials (not an API token or the admin key)", Code.PermissionDenied);
          }
        } else if (!atLeast(principal.role, policy)) {
          throw new ConnectError(`${req.method.name} needs the ${policy} role; ${principal.name} acts as ${principal.role}`, Code.PermissionDenied);
        }
        req.contextValues.set(kPrincipal, principal);
        return next(req);
      }
    }
  };
}

// A person's credential: "authorization: Bearer …" (API token, admin key, or a session for
// scripts), else the session cookie the console gets at login.
function personCredential(header: Headers): string {
  const auth = header.get("authorization");
  if (auth) return bearer(header);
  const cookie = sessionFromCookie(header.get("cookie"));
  if (cookie) return cookie;
  throw new ConnectError("missing credentials: sign in, or send authorization: Bearer <token>", Code.Unauthenticated);
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

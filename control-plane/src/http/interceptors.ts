import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { isMachineId } from "../ids.ts";
import { isConnectionError, isDataError } from "../store/db.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import type { AgentRegistry } from "../auth/agent-registry.ts";
import type { AgentTokens } from "../auth/agent-tokens.ts";
import { kAgent, kPrincipal, kRemoteAddr, kUserAgent } from "../auth/context.ts";
import { sessionFromCookie, type PrincipalResolver } from "../auth/principals.ts";
import { atLeast } from "@redflag/common/roles";
import { policyFor } from "../auth/policy.ts";
import { currentRequest, inRequest, requestIdFrom } from "../request-context.ts";
import { asInvalidArgument, isCallerFault } from "./rpc-parse-errors.ts";

// Codes that mean the server is at fault, logged as errors; the rest are the caller's (warn).
const SERVER_FAULTS = new Set([Code.Internal, Code.Unknown, Code.DataLoss, Code.Unimplemented]);
// connect's Unimplemented for a call that breaks its protocol (no request message for a
// server stream, a second one for a unary call) or asks for a compression this server does not
// have: the caller's mistake, not a missing method.
const isProtocolError = (err: ConnectError) =>
  err.code === Code.Unimplemented && (err.rawMessage.startsWith("protocol error: ") || err.rawMessage.startsWith("unknown compression "));

// Outermost: gives every call a request ID (echoed in x-request-id), logs it, counts it in the
// metrics, and turns anything that is not a ConnectError into Unavailable (database down),
// InvalidArgument (a value the database refused) or a bare Internal, never leaking internals.
export function errorInterceptor(logger: Logger, metrics?: Metrics): Interceptor {
  return (next) => (req) => {
    const requestId = requestIdFrom(req.header.get("x-request-id"));
    return inRequest({ requestId }, () => call(next, req, requestId));
  };

  async function call(next: Parameters<Interceptor>[0], req: Parameters<Parameters<Interceptor>[0]>[0], requestId: string) {
    const started = performance.now();
    try {
      const res = await next(req);
      const ms = performance.now() - started;
      res.header.set("x-request-id", requestId);
      metrics?.rpc(req.method, 0, ms / 1000);
      if (logger.isLevelEnabled("debug")) {
        const agentId = req.contextValues.get(kAgent)?.agentId;
        logger.debug({ requestId, rpc: rpcName(req), agentId, ms: Math.round(ms) }, "rpc ok");
      }
      if (!res.stream) return res;
      // A bidirectional stream decodes its request messages while it answers: a later message
      // that is not one fails the answer's stream, and is the caller's fault as above.
      const messages = res.message;
      const fail = (err: unknown) => failure(err, req, requestId, started);
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
          } catch (err) {
            throw fail(err);
          }
        })(),
      };
    } catch (err) {
      throw failure(err, req, requestId, started);
    }
  }

  function failure(err: unknown, req: Parameters<Parameters<Interceptor>[0]>[0], requestId: string, started: number): ConnectError {
    const ms = performance.now() - started;
    const fields = {
      requestId,
      rpc: rpcName(req),
      agentId: req.contextValues.get(kAgent)?.agentId,
      remoteAddr: req.contextValues.get(kRemoteAddr) || undefined,
      ms: Math.round(ms),
    };
    let error: ConnectError;
    if (err instanceof ConnectError) {
      // A streaming call's request is decoded in here: bytes that are not the message (or do not decompress) are the caller's.
      error = isCallerFault(err) ? asInvalidArgument(err, req.method) : err;
      // A message quoting the request's text may carry an unpaired surrogate, which gRPC's
      // percent-encoding cannot write (rpc-parse-errors.ts): U+FFFD takes its place.
      if (!error.rawMessage.isWellFormed()) {
        const fixed = new ConnectError(error.rawMessage.toWellFormed(), error.code, error.metadata, undefined, error.cause);
        fixed.details.push(...error.details);
        error = fixed;
      }
      if (SERVER_FAULTS.has(error.code) && !isProtocolError(error)) logger.error({ ...fields, code: Code[error.code], err }, "rpc failed");
      else logger.warn({ ...fields, code: Code[error.code], reason: error.rawMessage }, "rpc refused");
    } else if (isConnectionError(err)) {
      logger.warn({ ...fields, code: Code[Code.Unavailable], err }, "database unavailable");
      // With a hint, as every Unavailable the control plane sends: agents wait it out, spread.
      error = new ConnectError("the database is unavailable; try again shortly", Code.Unavailable, { "retry-after": "5" });
    } else if (isDataError(err)) {
      // A value validation let through and the database refused: still the caller's input.
      logger.warn({ ...fields, code: Code[Code.InvalidArgument], err }, "rpc refused: a value the database cannot store");
      error = new ConnectError("a value in the request is out of range or cannot be stored (for example a NUL character)", Code.InvalidArgument);
    } else {
      logger.error({ ...fields, code: Code[Code.Internal], err }, "rpc failed");
      error = new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    }
    error.metadata.set("x-request-id", requestId);
    metrics?.rpc(req.method, error.code, ms / 1000);
    return error;
  }
}

const rpcName = (req: { service: { typeName: string }; method: { name: string } }) => `${req.service.typeName}/${req.method.name}`;

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
  // First: decommissioning also retires the credentials, and the agent should hear why.
  if (state.decommissioned) throw new ConnectError("this agent has been decommissioned", Code.PermissionDenied);
  if (state.credentialGeneration !== claims.generation) {
    throw new ConnectError("access token is no longer valid: replaced by a newer registration, or the agent's credentials were revoked", Code.Unauthenticated);
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
  values.set(kAgent, { agentId: claims.agentId, machineId: claims.machineId });
  const request = currentRequest();
  if (request) request.agentId = claims.agentId;
}

import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";

// What every log line written while serving one request carries: its request ID (echoed in
// x-request-id) and, once authenticated, the agent's ID. Set by the outermost interceptor for
// RPCs and by the HTTP fallback for plain routes; read by the logger's mixin.
export interface RequestContext {
  requestId: string;
  agentId?: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

// A caller's x-request-id is kept when it looks like an ID (a UUID, a proxy's trace ID).
const REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

export function requestIdFrom(incoming: string | null | undefined): string {
  return typeof incoming === "string" && REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

export function inRequest<T>(context: RequestContext, fn: () => T): T {
  return storage.run(context, fn);
}

export function currentRequest(): RequestContext | undefined {
  return storage.getStore();
}

// The logger's mixin: the fields of the request being served, if any.
export function requestLogFields(): Record<string, string> {
  const c = storage.getStore();
  if (!c) return {};
  return c.agentId ? { requestId: c.requestId, agentId: c.agentId } : { requestId: c.requestId };
}

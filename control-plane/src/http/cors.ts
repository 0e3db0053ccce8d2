import { cors as connectCors } from "@connectrpc/connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";

// Cross-origin calls from browser apps on other origins (REDFLAG_CORS_ORIGINS; off by default),
// for RPCs only: the console and the plain routes stay same-origin. Exact origins only, no
// wildcard and no credentials (cookies): callers send `authorization: Bearer …` themselves, which
// the preflight allows. The header lists are connect's own (every protocol's headers), plus the
// request ID.

const MAX_AGE_SECONDS = 7200;
const ALLOWED_HEADERS = [...connectCors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
const EXPOSED_HEADERS = [...connectCors.exposedHeaders, "X-Request-Id"].join(", ");

export interface Cors {
  // The answer to a preflight (OPTIONS) for an RPC, or undefined when it is not one.
  preflight(method: string, header: Headers, allowedMethods: readonly string[]): UniversalServerResponse | undefined;
  // The CORS headers of an answer to a request from an allowed origin.
  decorate(res: UniversalServerResponse, header: Headers): UniversalServerResponse;
}

export function createCors(origins: readonly string[]): Cors | undefined {
  if (origins.length === 0) return undefined;
  const allowed = new Set(origins);
  const originOf = (header: Headers) => {
    const origin = header.get("origin")?.toLowerCase();
    return origin && allowed.has(origin) ? origin : undefined;
  };
  return {
    preflight(method, header, allowedMethods) {
      if (method !== "OPTIONS" || !header.get("access-control-request-method")) return undefined;
      const origin = originOf(header);
      // From an origin not allowed: no CORS headers, so the browser refuses the call.
      if (!origin) return { status: 204, header: new Headers({ vary: "Origin" }) };
      return {
        status: 204,
        header: new Headers({
          "access-control-allow-origin": origin,
          "access-control-allow-methods": allowedMethods.join(", "),
          "access-control-allow-headers": ALLOWED_HEADERS,
          "access-control-max-age": String(MAX_AGE_SECONDS),
          vary: "Origin",
        }),
      };
    },
    decorate(res, header) {
      const origin = originOf(header);
      if (!origin) return res;
      const out = new Headers(res.header);
      out.set("access-control-allow-origin", origin);
      out.set("access-control-expose-headers", EXPOSED_HEADERS);
      out.append("vary", "Origin");
      return { ...res, header: out };
    },
  };
}

// Plain HTTP routes beside the RPCs: /healthz (the process answers), /readyz (the database
// answers and its schema is current) and /metrics (Prometheus).
import { createHash, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Readiness } from "../store/observability.ts";

type Request = Pick<http.IncomingMessage | http2.Http2ServerRequest, "url" | "headers" | "socket">;
interface Response {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(body: string): unknown;
}

export interface ProbeDeps {
  metrics: Metrics;
  readiness: () => Promise<Readiness>;
  // Unset: /metrics answers loopback callers only.
  metricsToken: string | undefined;
  // The caller's address (client-address.ts); unset: the connection's peer.
  clientAddress?: (req: Request) => string;
  logger: Logger;
}

export type MetricsAccess = "allowed" | "unauthenticated" | "forbidden";

const isLoopback = (addr: string | undefined) =>
  !!addr && (addr === "::1" || addr.startsWith("127.") || addr.startsWith("::ffff:127."));

const digest = (text: string) => createHash("sha256").update(text).digest();

// With a token, every caller must present it (also on loopback: a reverse proxy on this host
// would otherwise open /metrics to the world); without one, only loopback callers get in.
export function metricsAccess(remoteAddress: string | undefined, authorization: string | undefined, token: string | undefined): MetricsAccess {
  if (token === undefined) return isLoopback(remoteAddress) ? "allowed" : "forbidden";
  const match = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
  return match && timingSafeEqual(digest(match[1]!), digest(token)) ? "allowed" : "unauthenticated";
}

// Answers the probe routes; false for any other request.
export function createProbes(deps: ProbeDeps) {
  const json = (res: Response, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
    res.end(JSON.stringify(body) + "\n");
  };
  return {
    handle(req: Request, res: Response): boolean {
      const pathname = (req.url ?? "/").split("?")[0];
      switch (pathname) {
        case "/healthz":
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("ok\n");
          return true;
        case "/readyz":
          deps
            .readiness()
            .then((r) => (r.ready ? json(res, 200, { ready: true }) : json(res, 503, { ready: false, reason: r.reason })))
            .catch((err: unknown) => {
              deps.logger.warn({ err }, "readiness check failed");
              json(res, 503, { ready: false, reason: "readiness check failed" });
            });
          return true;
        case "/metrics": {
          const auth = req.headers.authorization;
          const caller = deps.clientAddress ? deps.clientAddress(req) : req.socket?.remoteAddress;
          const access = metricsAccess(caller, typeof auth === "string" ? auth : undefined, deps.metricsToken);
          if (access === "unauthenticated") {
            json(res, 401, { error: "send authorization: Bearer <REDFLAG_METRICS_TOKEN>" }, { "www-authenticate": 'Bearer realm="metrics"' });
            return true;
          }
          if (access === "forbidden") {
            json(res, 403, { error: "metrics are served to loopback callers only; set REDFLAG_METRICS_TOKEN to scrape from elsewhere" });
            return true;
          }
          deps.metrics
            .render()
            .then((body) => {
              res.writeHead(200, { "content-type": deps.metrics.contentType, "cache-control": "no-store" });
              res.end(body);
            })
            .catch((err: unknown) => {
              deps.logger.warn({ err }, "cannot render metrics");
              json(res, 500, { error: "cannot render metrics" });
            });
          return true;
        }
        default:
          return false;
      }
    },
  };
}

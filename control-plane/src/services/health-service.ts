import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "@redflag/gen/grpc/health/v1/health_pb";
import type { Readiness } from "../store/observability.ts";

// grpc.health.v1.Health, the standard gRPC health service (Kubernetes gRPC probes, load
// balancers, grpc_health_probe): SERVING exactly when /readyz says ready (the database answers and
// every migration is applied). The empty service name means the server; a served service's own
// name gets the same answer; any other name NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch).

// How often a Watch looks again; it sends only changes.
export const WATCH_INTERVAL_MS = 5_000;
const MAX_SERVICE_NAME = 256;
const READINESS_CACHE_MS = 1_000;

export interface HealthDeps {
  readiness: () => Promise<Readiness>;
  // Fully qualified names of the services served here.
  services: ReadonlySet<string>;
  watchIntervalMs?: number;
}

export function createHealthService(deps: HealthDeps): ServiceImpl<typeof Health> {
  const known = (service: string) => {
    if (service.length > MAX_SERVICE_NAME) throw new ConnectError(`service must be at most ${MAX_SERVICE_NAME} characters`, Code.InvalidArgument);
    return service === "" || deps.services.has(service);
  };
  // One readiness check a second at most, however many callers Check and Watch (they need no
  // credentials: a thousand watchers must not be a thousand database queries every interval).
  let cached: { at: number; status: Promise<Status> } | undefined;
  const status = () => {
    const now = Date.now();
    if (!cached || now - cached.at >= READINESS_CACHE_MS) {
      cached = { at: now, status: deps.readiness().then((r) => (r.ready ? Status.SERVING : Status.NOT_SERVING), () => Status.NOT_SERVING) };
    }
    return cached.status;
  };
  const answer = (s: Status) => create(HealthCheckResponseSchema, { status: s });
  return {
    async check(req) {
      if (!known(req.service)) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
      return answer(await status());
    },
    async *watch(req, ctx) {
      if (!known(req.service)) {
        // The specification keeps the call open: the service might be served later.
        yield answer(Status.SERVICE_UNKNOWN);
        await ended(ctx.signal);
        return;
      }
      let last: Status | undefined;
      while (!ctx.signal.aborted) {
        const now = await status();
        if (now !== last) yield answer(now);
        last = now;
        await sleep(deps.watchIntervalMs ?? WATCH_INTERVAL_MS, ctx.signal);
      }
    },
  };
}

function ended(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

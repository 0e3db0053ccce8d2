import { AgentService } from "@redflag/gen/agent_service_pb";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { loadConfig } from "../control-plane/src/config.ts";
import { createRpcHandlers } from "../control-plane/src/http/rpc-handler.ts";
import { startServer } from "../control-plane/src/http/server.ts";

// The floor for benchmarks 1 and 3: the same listener (h2c + HTTP/1.1 on one port), the same RPC
// plumbing (connect's handlers served on the HTTP/2 stream) and the same messages as the control
// plane, but PollCommands only waits out its wait_seconds, then answers with an empty response:
// no auth, no database, no signing, no interceptors. GET /held says how many calls are waiting,
// GET /memory its JS heap.
const port = Number(process.env.BENCH_ECHO_PORT ?? 0);
const logger = pino({ level: "silent" });
let held = 0;
// The control plane's default listener limits, so the floor pays for them too.
const limits = loadConfig({}).listener;
const rpc = createRpcHandlers({
  routes: (router) =>
    router.service(AgentService, {
      pollCommands: async (req, ctx) => {
        if (req.waitSeconds > 0) {
          held++;
          await sleep(req.waitSeconds * 1000, undefined, { signal: ctx.signal }).catch(() => {});
          held--;
        }
        return { commands: [], nextPollSeconds: 60 };
      },
    }),
  interceptors: [],
  fallback: (req, res) => {
    if (req.url === "/memory") {
      // The same figures as the control plane's /metrics, for the benchmark's report.
      const { heapUsed, heapTotal, external } = process.memoryUsage();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ heapUsed, heapTotal, external }));
      return;
    }
    const known = req.url === "/healthz" || req.url === "/held";
    res.writeHead(known ? 200 : 404, { "content-type": "text/plain" });
    res.end(req.url === "/held" ? `${held}\n` : known ? "ok\n" : "not found\n");
  },
  responseStallMs: limits.responseStallMs,
  logger,
});
const server = await startServer({ handler: rpc.request, streamHandler: rpc.stream, host: "127.0.0.1", port, tls: undefined, limits, logger });
const stop = () => void server.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

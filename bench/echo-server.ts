import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { pino } from "pino";
import { startServer } from "../control-plane/src/server.ts";

// The floor for benchmark 1: the same listener (h2c + HTTP/1.1 on one port), the same
// connect-node adapter and the same messages as the control plane, but PollCommands answers at
// once with an empty response: no auth, no database, no signing.
const port = Number(process.env.BENCH_ECHO_PORT ?? 0);
const handler = connectNodeAdapter({
  routes: (router) =>
    router.service(AgentService, {
      pollCommands: () => ({ commands: [], nextPollSeconds: 60 }),
    }),
  fallback: (req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
    res.end(req.url === "/healthz" ? "ok\n" : "not found\n");
  },
});
const server = await startServer({ handler, host: "127.0.0.1", port, tls: undefined, logger: pino({ level: "silent" }) });
const stop = () => void server.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

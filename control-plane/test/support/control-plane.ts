import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { createLogger } from "../../src/log.ts";
import { startApp, type App } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { freshDatabase, type FreshDatabase } from "./database.ts";

export interface TestControlPlane {
  app: App;
  url: string;
  dataDir: string;
  databaseUrl: string | undefined;
  adminKey: string;
  admin: {
    tokens: Client<typeof TokenService>;
    fleet: Client<typeof FleetService>;
    commands: Client<typeof CommandService>;
  };
  agentClient(headers?: Record<string, string>): Client<typeof AgentService>;
  // Stops the control plane and starts it again on the same port and database.
  restart(env?: Record<string, string>): Promise<TestControlPlane>;
  close(): Promise<void>;
}

// A real control plane on a random port with a fresh database: PGlite, or the PostgreSQL named
// by TEST_DATABASE_URL. `env` overrides REDFLAG_* settings.
// `logLines` receives the server's log lines (JSON, info and above) instead of discarding them.
export async function startTestControlPlane(
  env: Record<string, string> = {},
  reuse?: { db: FreshDatabase; port: number },
  logLines?: (line: Record<string, unknown>) => void,
): Promise<TestControlPlane> {
  const db = reuse?.db ?? (await freshDatabase());
  const config = loadConfig({
    REDFLAG_ADDR: `127.0.0.1:${reuse?.port ?? 0}`,
    REDFLAG_DATA_DIR: db.dataDir,
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    ...env,
  });
  // The product's own logger (its request fields, its redaction).
  const logger = logLines
    ? createLogger("info", { write: (line: string) => logLines(JSON.parse(line) as Record<string, unknown>) })
    : createLogger(process.env.TEST_LOG_LEVEL ?? "silent");
  const app = await startApp(config, logger);
  const url = `http://127.0.0.1:${app.server.port}`;
  const adminKey = (await readFile(path.join(db.dataDir, "admin.key"), "utf8")).trim();
  const adminTransport = createConnectTransport({
    baseUrl: url,
    httpVersion: "1.1",
    interceptors: [headerInterceptor({ authorization: `Bearer ${adminKey}` })],
  });
  return {
    app,
    url,
    dataDir: db.dataDir,
    databaseUrl: db.databaseUrl,
    adminKey,
    admin: {
      tokens: createClient(TokenService, adminTransport),
      fleet: createClient(FleetService, adminTransport),
      commands: createClient(CommandService, adminTransport),
    },
    agentClient(headers = {}) {
      return createClient(AgentService, createGrpcTransport({ baseUrl: url, interceptors: [headerInterceptor(headers)] }));
    },
    async restart(more = {}) {
      await app.close();
      return startTestControlPlane({ ...env, ...more }, { db, port: app.server.port }, logLines);
    },
    async close() {
      await app.close();
      await db.cleanup();
    },
  };
}

export function headerInterceptor(headers: Record<string, string>): Interceptor {
  return (next) => (req) => {
    for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
    return next(req);
  };
}

import { createContextValues } from "@connectrpc/connect";
import { mkdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { createAgentRegistry, type AgentRegistry } from "./auth/agent-registry.ts";
import { createAgentTokens, type AgentTokens } from "./auth/agent-tokens.ts";
import { kRemoteAddr } from "./auth/context.ts";
import { authInterceptor, errorInterceptor } from "./http/interceptors.ts";
import type { Config } from "./config.ts";
import { createLastSeenBuffer, type LastSeenBuffer } from "./cluster/last-seen.ts";
import type { Logger } from "./log.ts";
import { createRoutes } from "./http/routes.ts";
import { createScheduler, type Scheduler } from "./scheduler.ts";
import type { EventBus } from "./cluster/events.ts";
import { createRpcHandlers } from "./http/rpc-handler.ts";
import { createClientAddress } from "./http/client-address.ts";
import { startServer, type RunningServer } from "./http/server.ts";
import { readyLine } from "./ready-line.ts";
import { publishAgentReleasesDir } from "./agent-releases-dir.ts";
import { peopleCount } from "./store/people.ts";
import { fingerprintOf } from "@redflag/common/signing/key-ids";
import { loadMasterKey } from "./signing/master-key.ts";
import { createCommandSigner, type CommandSigner } from "./signing/signer.ts";
import { createPrincipalResolver, type PrincipalResolver } from "./auth/principals.ts";
import { createAgentConfigs, type AgentConfigs } from "./domain/agent-config.ts";
import { createSettings, redeliveryWindow } from "./settings.ts";
import { reloadSigningKeys } from "./domain/signing-keys.ts";
import { createOidcRoutes } from "./http/oidc.ts";
import { createConsoleFiles, sendNotFound } from "./http/console.ts";
import { createMetrics } from "./metrics.ts";
import { createProbes } from "./http/probes.ts";
import { createDownloads } from "./http/downloads.ts";
import { createInstallScripts } from "./http/install-scripts.ts";
import { readMigrations } from "./store/migrate.ts";
import { checkReadiness } from "./store/observability.ts";
import { ensureBootstrapAdminKey, ensureSecret, ensureSigningKeys } from "./store/bootstrap.ts";
import { DEFAULT_MIGRATIONS_DIR, openDatabase, type Database } from "./store/db.ts";
import { createCluster } from "./cluster/cluster.ts";
import { createPendingIndex } from "./cluster/pending.ts";
import { inRequest, requestIdFrom } from "./request-context.ts";
import { createCors } from "./http/cors.ts";
import { agentsWithPendingCommands } from "./store/commands.ts";

export interface App {
  readonly server: RunningServer;
  readonly db: Database;
  readonly signingKeyId: string;
  // The command signer: its active key changes with rotations.
  readonly signer: CommandSigner;
  // Exposed for tests and tools that need to mint or check access tokens.
  readonly tokens: AgentTokens;
  readonly lastSeen: LastSeenBuffer;
  // The live events feed; `watching` counts the open WatchEvents streams (for tests).
  readonly events: Pick<EventBus, "watching">;
  readonly scheduler: Scheduler;
  // True while this replica runs the scheduler (always with the embedded database).
  isLeader(): boolean;
  close(): Promise<void>;
}

// /readyz answers 503 when the database takes longer than this.
const READINESS_TIMEOUT_MS = 2000;

export interface StartOptions {
  // Receives the one plain line for a person once the control plane is ready (main.ts prints
  // it on stderr, apart from the JSON logs).
  announce?: (line: string) => void;
}

// A start-up problem a person fixes from one sentence (a port in use, a certificate that cannot
// be read): main.ts prints its message alone, without a stack trace.
export class StartError extends Error {
  override readonly name = "StartError";
}

type ServerOptions = Parameters<typeof startServer>[0];

// Wires the control plane: listener, database (embedded or PostgreSQL), keys, services.
export async function startApp(config: Config, logger: Logger, options: StartOptions = {}): Promise<App> {
  // The port first, so one already in use is reported at once rather than after the database
  // has started. Until everything is wired, requests are answered 503 (the process is alive:
  // /healthz says so; /readyz is not ready).
  const starting = (pathname: string, res: { writeHead(status: number, headers: Record<string, string>): unknown; end(body: string): unknown }) => {
    const alive = pathname === "/healthz";
    res.writeHead(alive ? 200 : 503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", ...(alive ? {} : { "retry-after": "5" }) });
    res.end(alive ? "ok\n" : "RedFlag is starting; try again in a few seconds\n");
  };
  let handler: ServerOptions["handler"] = (req, res) => starting((req.url ?? "/").split("?")[0]!, res);
  let streamHandler: ServerOptions["streamHandler"];
  const server = await startServer({
    handler: (req, res) => handler(req, res),
    streamHandler: (stream, headers) => streamHandler?.(stream, headers) ?? false,
    host: config.host,
    port: config.port,
    tls: config.tls,
    limits: config.listener,
    logger,
  }).catch((err: unknown) => {
    throw listenError(err, config);
  });
  try {
    return await wire(config, logger, options, server, (served) => {
      handler = served.request;
      streamHandler = served.stream;
    });
  } catch (err) {
    await server.close(0);
    throw err;
  }
}

async function wire(
  config: Config,
  logger: Logger,
  options: StartOptions,
  server: RunningServer,
  serve: (handlers: { request: ServerOptions["handler"]; stream: NonNullable<ServerOptions["streamHandler"]> }) => void,
): Promise<App> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger, embeddedCompiler: config.embeddedCompiler });
  try {
    const masterKey = await loadMasterKey(config.masterKey, config.dataDir);
    const keys = await ensureSigningKeys(db.prisma, masterKey);
    const tokenSecret = await ensureSecret(db.prisma, masterKey, "access-token-hmac");
    const renewSecret = await ensureSecret(db.prisma, masterKey, "renew-successor-hmac");
    const adminKeyFile = await writeAdminKeyIfNew(db, config.dataDir, logger);

    const settings = createSettings(db.prisma, config);
    await settings.load();
    const metrics = createMetrics();
    // With PostgreSQL the index trusts its feed once the replica link is up (feedRestored).
    const pending = createPendingIndex({
      load: () => agentsWithPendingCommands(db.prisma, redeliveryWindow(settings, new Date())),
      feedUp: !config.databaseUrl,
      onError: (err) => logger.warn({ err }, "cannot read which agents have queued commands; polls claim until the next try"),
    });
    const migrationNames = (await readMigrations(DEFAULT_MIGRATIONS_DIR)).map((m) => m.name);
    // Who a request comes from (behind a trusted reverse proxy: whom it forwards for).
    const clientAddress = createClientAddress(config.trustedProxies);
    const requestAddress = (req: { socket?: { remoteAddress?: string } | null; headers: NodeJS.Dict<string | string[]> }) =>
      clientAddress(req.socket?.remoteAddress, req.headers["x-forwarded-for"]);

    const readiness = () => checkReadiness(db.pool, migrationNames, READINESS_TIMEOUT_MS);
    const probes = createProbes({
      metrics,
      readiness,
      metricsToken: config.metricsToken,
      clientAddress: requestAddress,
      logger,
    });
    // This replica's caches; a change made here drops them on the other replicas too (below).
    const agentsHere = createAgentRegistry(db.statements);
    const principalsHere = createPrincipalResolver(db.prisma);
    const agentConfigsHere = createAgentConfigs(db.prisma, settings);
    let reloadingSettings = false;
    const dropCache = (cache: string) => {
      const all = cache === "*";
      if (all || cache === "settings") {
        reloadingSettings = true;
        void settings
          .load()
          .catch((err: unknown) => logger.warn({ err }, "cannot reload settings changed by another replica"))
          .finally(() => (reloadingSettings = false));
      }
      if (all || cache === "configs") agentConfigsHere.invalidate();
      if (all || cache === "principals") principalsHere.forget();
      if (all) agentsHere.clear();
      else if (cache.startsWith("agent:")) agentsHere.invalidate(cache.slice("agent:".length));
    };
    // Wake-ups, the events feed and cache invalidations, across replicas on PostgreSQL; and the
    // scheduler leader.
    const cluster = await createCluster({
      databaseUrl: config.databaseUrl,
      logger,
      leaderRetryMs: config.sweepIntervalMs,
      onNotify: (agentId) => pending.note(agentId),
      onLinkChange: (up) => (up ? pending.feedRestored() : pending.feedLost()),
      onInvalidate: dropCache,
    });
    settings.onChange(() => {
      if (!reloadingSettings) cluster.invalidate("settings");
    });
    metrics.attach({
      db: db.prisma,
      pool: db.pool,
      pollIntervalSeconds: () => settings.pollIntervalSeconds,
      logger,
      pending,
      longPolls: () => cluster.wakeups.waiting(),
    });
    const agents: AgentRegistry = {
      get: (agentId) => agentsHere.get(agentId),
      invalidate(agentId) {
        agentsHere.invalidate(agentId);
        cluster.invalidate(`agent:${agentId}`);
      },
      clear: () => agentsHere.clear(),
    };
    const principals: PrincipalResolver = {
      ...principalsHere,
      forget() {
        principalsHere.forget();
        cluster.invalidate("principals");
      },
    };
    const agentConfigs: AgentConfigs = {
      forAgent: (agentId) => agentConfigsHere.forAgent(agentId),
      signedForAgent: (agentId, signer) => agentConfigsHere.signedForAgent(agentId, signer),
      invalidate() {
        agentConfigsHere.invalidate();
        cluster.invalidate("configs");
      },
    };
    if (!config.databaseUrl) await pending.resync();
    const wakeups = cluster.wakeups;
    const lastSeen = createLastSeenBuffer(db.statements, config.lastSeenFlushMs, logger);
    const deps = {
      config,
      db: db.prisma,
      sql: db.statements,
      tokens: createAgentTokens(tokenSecret, config.accessTokenTtlSeconds),
      agents,
      signer: createCommandSigner(keys.active, keys.trusted, metrics.signed, keys.issueTime),
      principals,
      agentConfigs,
      settings,
      events: cluster.events,
      masterKey,
      wakeups,
      pending,
      lastSeen,
      logger,
      metrics,
      renewSecret,
      readiness,
    };
    const consoleFiles = createConsoleFiles(config.consoleDir, logger);
    const downloads = createDownloads({ db: db.prisma, logger, signer: deps.signer });
    const installScripts = createInstallScripts({ publicUrl: config.publicUrl, tls: config.tls !== undefined });
    const oidc = config.oidc
      ? createOidcRoutes({ cfg: config.oidc, config, db: db.prisma, principals: deps.principals, logger, clientAddress: requestAddress })
      : undefined;
    const rpc = createRpcHandlers({
      routes: createRoutes(deps),
      interceptors: [errorInterceptor(logger, metrics), authInterceptor(deps)],
      readMaxBytes: config.maxRequestBytes,
      responseStallMs: config.listener.responseStallMs,
      cors: createCors(config.corsOrigins),
      contextValues: (remoteAddress, forwardedFor) => createContextValues().set(kRemoteAddr, clientAddress(remoteAddress, forwardedFor)),
      logger,
      // Plain HTTP routes get a request ID too, echoed and on their log lines.
      fallback: (req, res) => {
        const incoming = req.headers["x-request-id"];
        const requestId = requestIdFrom(typeof incoming === "string" ? incoming : undefined);
        res.setHeader("x-request-id", requestId);
        inRequest({ requestId }, () => {
          if (oidc?.handle(req, res)) return;
          if (probes.handle(req, res)) return;
          if (downloads.handle(req, res)) return;
          if (installScripts.handle(req, res)) return;
          const notFound = () => sendNotFound(req, res, (req.url ?? "/").split("?")[0]!);
          consoleFiles
            .handle(req, res as never)
            .then((served) => served || notFound())
            .catch((err: unknown) => {
              logger.warn({ err }, "cannot serve a console file");
              if (!res.headersSent) notFound();
            });
        });
      },
    });
    // Read before anything below starts (the ready line says whether setup is still to do).
    const setupRequired = (await peopleCount(db.prisma)) === 0;
    serve({ request: rpc.request, stream: rpc.stream });
    const scheduler = createScheduler(db.prisma, config, logger, settings, deps.events, cluster.isLeader, {
      db: db.prisma,
      signer: deps.signer,
      wakeups,
      events: deps.events,
    }, { db: db.prisma, masterKey }, { db: db.prisma, wakeups, events: deps.events });
    // A rotation on another replica, or a grace period that ended, reaches this signer.
    const keyTimer = setInterval(
      () => void reloadSigningKeys(db.prisma, masterKey, deps.signer).catch((err: unknown) => logger.warn({ err }, "cannot reload signing keys")),
      60_000,
    );
    keyTimer.unref();
    // Builds found beside the control plane (npm start, the Docker image) join the registry
    // before it says it is ready: an install command copied at once finds them.
    if (config.agentReleasesDir) {
      await publishAgentReleasesDir({ dir: config.agentReleasesDir, db: db.prisma, logger }).catch((err: unknown) =>
        logger.warn({ err, dir: config.agentReleasesDir }, "cannot publish the agent builds found at start-up; publish them with `redflag releases publish DIR`"),
      );
    }
    options.announce?.(
      readyLine({
        publicUrl: config.publicUrl,
        host: config.host,
        port: server.port,
        tls: config.tls !== undefined,
        setupRequired,
        adminKeyFile,
      }),
    );
    logger.info(
      {
        url: server.url,
        database: db.kind,
        signingKeyId: keys.active.keyId,
        signingKeyFingerprint: fingerprintOf(keys.active.publicKey),
      },
      "redflag control plane listening",
    );
    return {
      server,
      db,
      signingKeyId: keys.active.keyId,
      signer: deps.signer,
      tokens: deps.tokens,
      lastSeen,
      events: cluster.events,
      scheduler,
      isLeader: cluster.isLeader,
      async close() {
        scheduler.stop();
        pending.stop();
        clearInterval(keyTimer);
        wakeups.close();
        await cluster.close();
        await server.close();
        await lastSeen.stop();
        await db.close();
      },
    };
  } catch (err) {
    await db.close();
    throw err;
  }
}

// Returns the key's file while the key works and the file is there.
async function writeAdminKeyIfNew(db: Database, dataDir: string, logger: Logger): Promise<string | undefined> {
  const file = path.join(dataDir, "admin.key");
  const key = await ensureBootstrapAdminKey(db.prisma);
  if (key.state === "created") {
    await writeFile(file, key.secret + "\n", { mode: 0o600 });
    logger.info({ file }, "created the admin API key; scripts read it with: redflag --api-key-file " + file);
    return file;
  } else if (key.state === "revoked") {
    logger.info({ revokedAt: key.revokedAt.toISOString() }, "the admin API key is revoked; sign in as a person or use a personal API token");
    return undefined;
  }
  logger.info({ file }, "admin API key already exists");
  return (await stat(file).then((s) => s.isFile(), () => false)) ? file : undefined;
}

// Why the listener could not start, as a person fixes it: which setting, which value, what to do.
function listenError(err: unknown, config: Config): unknown {
  const { code, path: file } = err as NodeJS.ErrnoException;
  // Only reading the certificate or key fails with a file's path.
  if (file) return new StartError(`cannot read ${file} (${code ?? "error"}); check REDFLAG_TLS_CERT and REDFLAG_TLS_KEY`, { cause: err });
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const addr = `${host}:${config.port}`;
  const other = `${host}:${config.port === 8080 ? 8081 : 8080}`;
  switch (code) {
    case "EADDRINUSE":
      return new StartError(`REDFLAG_ADDR=${addr}: port ${config.port} is already in use by another program (another RedFlag?); stop it, or set REDFLAG_ADDR to a free port, for example REDFLAG_ADDR=${other}`, { cause: err });
    case "EACCES":
      return new StartError(`REDFLAG_ADDR=${addr}: not allowed to listen on port ${config.port} (ports below 1024 need root); set REDFLAG_ADDR to a port from 1024 up, for example REDFLAG_ADDR=${host}:8080`, { cause: err });
    case "EADDRNOTAVAIL":
      return new StartError(`REDFLAG_ADDR=${addr}: ${config.host} is not an address of this machine; use one of its addresses, or 0.0.0.0 to listen on all of them`, { cause: err });
    default:
      return err;
  }
}

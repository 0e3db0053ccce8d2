// Opens the control plane's database: the PostgreSQL named by DATABASE_URL, or the embedded one in
// the data directory. Either way the rest of the code sees a pg.Pool, a PrismaClient over it, and a
// schema brought up to date by the migrations.
import { PrismaPg } from "@prisma/adapter-pg";
import path from "node:path";
import pg from "pg";
import type { Logger } from "pino";
import { PrismaClient } from "../generated/prisma/client.ts";
import { EMBEDDED_PORT, startEmbeddedPostgres } from "./embedded.ts";
import type { EmbeddedCompiler } from "../config.ts";
import { applyMigrations } from "./migrate.ts";
import { createStatements, type Statements } from "./statements.ts";
import type { Prisma, Tx } from "./types.ts";

export interface OpenDatabaseOptions {
  // Unset: the embedded database in dataDir.
  databaseUrl?: string | undefined;
  dataDir: string;
  // Default: the repository's prisma/migrations.
  migrationsDir?: string;
  logger: Logger;
  poolMax?: number;
  // The embedded database only; default "baseline".
  embeddedCompiler?: EmbeddedCompiler;
}

export interface Database {
  prisma: PrismaClient;
  pool: pg.Pool;
  // The hot path's statements on that pool (prepared on PostgreSQL).
  statements: Statements;
  kind: "embedded" | "postgres";
  close(): Promise<void>;
}

export const DEFAULT_MIGRATIONS_DIR = path.resolve(import.meta.dirname, "../../../prisma/migrations");

// The embedded server accepts this many connections; the pool keeps one free for tools.
const EMBEDDED_MAX_CONNECTIONS = 8;
const EMBEDDED_POOL_MAX = EMBEDDED_MAX_CONNECTIONS - 1;
const POSTGRES_POOL_MAX = 10;
const CONNECT_TIMEOUT_MS = 10_000;
export const SERVER_APPLICATION_NAME = "redflag-server";

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  const { logger } = opts;
  const resources: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const release of resources.reverse().splice(0)) {
      await release().catch((err: unknown) => logger.warn({ err }, "error while closing the database"));
    }
  };
  try {
    const target = await connectTarget(opts, resources);
    await checkConnection(target.pool, target.description);
    const { applied } = await applyMigrations(target.pool, opts.migrationsDir ?? DEFAULT_MIGRATIONS_DIR, logger);
    const prisma = new PrismaClient({ adapter: new PrismaPg(target.pool) });
    resources.push(() => prisma.$disconnect());
    logger.info({ database: target.description, migrationsApplied: applied.length }, "database ready");
    let closing: Promise<void> | undefined;
    const statements = createStatements(target.pool, target.kind === "postgres");
    return { prisma, pool: target.pool, statements, kind: target.kind, close: () => (closing ??= closeAll()) };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

interface Target {
  kind: Database["kind"];
  pool: pg.Pool;
  // Names the database in messages; never contains a password.
  description: string;
}

// Pushes what it opens onto `resources`, pool last, so closing runs in reverse order.
async function connectTarget(opts: OpenDatabaseOptions, resources: (() => Promise<void>)[]): Promise<Target> {
  // The name tells a DBA (and `redflag-server restore`, which will not work under a running
  // server) whose sessions these are.
  const base = { connectionTimeoutMillis: CONNECT_TIMEOUT_MS, application_name: SERVER_APPLICATION_NAME };
  let target: Target;
  if (opts.databaseUrl) {
    const pool = new pg.Pool({ ...base, connectionString: opts.databaseUrl, max: opts.poolMax ?? POSTGRES_POOL_MAX });
    target = { kind: "postgres", pool, description: describeUrl(opts.databaseUrl) };
  } else {
    const embedded = await startEmbeddedPostgres({
      dataDir: opts.dataDir,
      logger: opts.logger,
      maxConnections: EMBEDDED_MAX_CONNECTIONS,
      compiler: opts.embeddedCompiler,
    });
    resources.push(() => embedded.stop());
    const pool = new pg.Pool({
      ...base,
      host: embedded.socketDir,
      port: EMBEDDED_PORT,
      user: "postgres",
      database: "postgres",
      max: Math.min(opts.poolMax ?? EMBEDDED_POOL_MAX, EMBEDDED_POOL_MAX),
    });
    target = { kind: "embedded", pool, description: `the embedded database in ${path.resolve(opts.dataDir)}` };
  }
  // An idle client whose server goes away emits 'error' on the pool; unhandled, it kills the process.
  target.pool.on("error", (err) =>
    opts.logger.warn({ reason: reason(err), database: target.description }, "database connection lost"),
  );
  resources.push(() => target.pool.end());
  return target;
}

async function checkConnection(pool: pg.Pool, description: string) {
  try {
    await pool.query("SELECT 1");
  } catch (err) {
    throw new Error(`cannot connect to ${description}: ${reason(err)}`, { cause: err });
  }
}

// postgres://user:secret@host:5432/db?sslmode=require -> "PostgreSQL at postgres://user@host:5432/db".
function describeUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    url.password = "";
    const socketHost = url.searchParams.get("host");
    url.search = "";
    url.hash = "";
    return `PostgreSQL at ${url.toString()}${socketHost ? ` (socket directory ${socketHost})` : ""}`;
  } catch {
    return "the PostgreSQL named by DATABASE_URL";
  }
}

function reason(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; errors?: unknown } | undefined;
  // A host that resolves to several addresses fails with an AggregateError with an empty message.
  if (e && Array.isArray(e.errors) && e.errors.length > 0 && !e.message) return reason(e.errors[0]);
  const message = typeof e?.message === "string" && e.message ? e.message : String(err);
  return typeof e?.code === "string" && !message.includes(e.code) ? `${message} (${e.code})` : message;
}

// Runs fn in one transaction: the store functions it calls with tx commit or roll back together.
export const inTransaction = <T>(db: Prisma, fn: (tx: Tx) => Promise<T>): Promise<T> => db.$transaction(fn);

const UNIQUE_VIOLATION = "23505";
// SQLSTATEs meaning the server went away or turns connections away: class 08 (connection
// exception), admin/crash shutdown, cannot connect now, too many connections.
const CONNECTION_SQLSTATES = /^(08...|57P0[123]|53300)$/;
// Socket errors; ENOENT only counts when connecting (a Unix socket that is gone).
const CONNECTION_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN"]);
// Prisma: P1001 cannot reach the server, P1002 timed out, P1017 the server closed the connection,
// P2024 timed out waiting for a connection from the pool, P2028 a transaction that could not
// start in time or expired before it committed (a saturated pool under a burst): nothing was
// committed, so the caller may retry.
const CONNECTION_PRISMA_CODES = new Set(["P1001", "P1002", "P1017", "P2024", "P2028"]);
const CONNECTION_ADAPTER_KINDS = new Set(["DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections"]);
// pg's own errors carry no code.
const CONNECTION_MESSAGES = /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect)/;

// A unique constraint refused the write: Prisma P2002, or SQLSTATE 23505 from pg or a raw query.
export function isUniqueViolation(err: unknown): boolean {
  return someInChain(
    err,
    (e) =>
      e.code === "P2002" ||
      e.code === UNIQUE_VIOLATION ||
      e.originalCode === UNIQUE_VIOLATION ||
      e.kind === "UniqueConstraintViolation",
  );
}

// The database is unreachable or dropped the connection: worth retrying later, not a bug.
export function isConnectionError(err: unknown): boolean {
  return someInChain(err, (e) => {
    const code = typeof e.code === "string" ? e.code : typeof e.originalCode === "string" ? e.originalCode : "";
    return (
      CONNECTION_PRISMA_CODES.has(code) ||
      CONNECTION_SQLSTATES.test(code) ||
      CONNECTION_ERRNOS.has(code) ||
      (code === "ENOENT" && e.syscall === "connect") ||
      (typeof e.kind === "string" && CONNECTION_ADAPTER_KINDS.has(e.kind)) ||
      (typeof e.message === "string" && CONNECTION_MESSAGES.test(e.message))
    );
  });
}

// PostgreSQL refused a value (SQLSTATE class 22, "data exception": out of range, not valid UTF-8
// or containing NUL, …) or Prisma did before sending it. The value came from a request that
// validation let through: the caller's mistake, not a fault of the server.
export function isDataError(err: unknown): boolean {
  return someInChain(err, (e) => {
    const code = typeof e.code === "string" ? e.code : typeof e.originalCode === "string" ? e.originalCode : "";
    return /^22[0-9A-Z]{3}$/.test(code) || code === "P2020" || code === "P2033";
  });
}

interface ErrorLike {
  code?: unknown;
  originalCode?: unknown;
  kind?: unknown;
  syscall?: unknown;
  message?: unknown;
  cause?: unknown;
  meta?: { driverAdapterError?: unknown };
  errors?: unknown;
}

// Prisma wraps the driver's error as meta.driverAdapterError whose cause holds the SQLSTATE
// (originalCode) and a kind; pg and socket errors come bare or as an AggregateError.
function someInChain(err: unknown, test: (e: ErrorLike) => boolean): boolean {
  const seen = new Set<unknown>();
  const queue: unknown[] = [err];
  while (queue.length > 0) {
    const e = queue.shift();
    if (typeof e !== "object" || e === null || seen.has(e)) continue;
    seen.add(e);
    const like = e as ErrorLike;
    if (test(like)) return true;
    queue.push(like.cause, like.meta?.driverAdapterError);
    if (Array.isArray(like.errors)) queue.push(...like.errors);
  }
  return false;
}

// The embedded database: PGlite (PostgreSQL in WebAssembly) on <dataDir>/pgdata, served over the
// Postgres wire protocol on a Unix socket in <dataDir>/run, so the rest of the control plane uses
// it exactly like a PostgreSQL server. The socket has no authentication; the 0700 directories
// are what keep other local users out.
import { fork } from "node:child_process";
import { chmod, lstat, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { EmbeddedWorkerData, FromWorker, ToWorker } from "./embedded-worker.ts";
import { tryLock, type DataDirLock } from "./lock-file.ts";
import type { EmbeddedCompiler } from "../config.ts";

export interface EmbeddedPostgresOptions {
  dataDir: string;
  logger: Logger;
  // Socket connections the server accepts; the pool connecting to it must stay below this.
  maxConnections?: number;
  // Default <dataDir>/pgdata. A restore builds the database beside it, then swaps it in.
  pgdata?: string;
  // The caller holds the data directory's lock (lockDataDir) and keeps it past stop().
  locked?: DataDirLock;
  // How V8 runs PGlite (DATABASE_NODE_FLAGS); default "baseline".
  compiler?: EmbeddedCompiler | undefined;
}

export interface EmbeddedPostgres {
  // Directory holding the socket `.s.PGSQL.5432`: pg's `host`, with `port: 5432`.
  readonly socketDir: string;
  stop(): Promise<void>;
}

export const EMBEDDED_PORT = 5432;
const SOCKET_NAME = `.s.PGSQL.${EMBEDDED_PORT}`;
// sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = 103;
const STOP_TIMEOUT_MS = 30_000;

// Memory (issue 18, item 7). PostgreSQL's shared memory lives in PGlite's WebAssembly memory and
// is written through at start, so every MB of shared_buffers is a MB of resident memory for as
// long as the server runs, and WebAssembly memory never shrinks. initdb sizes it for a server
// (128MB); the control plane's database is tens of MB and PostgreSQL reads the pages it does not
// hold from the operating system's page cache, so 16MB (2,048 pages) keeps the hot tables in
// memory at an eighth of the cost (docs/benchmarks.md, section 5). initdb gets them too.
// embedded-worker.ts passes them on PostgreSQL's command line, which overrides postgresql.conf,
// so they apply to databases created before as well.
export const EMBEDDED_SETTINGS: Readonly<Record<string, string>> = { shared_buffers: "16MB" };

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(opts.dataDir);
  const runDir = path.join(dataDir, "run");
  const socketPath = path.join(runDir, SOCKET_NAME);
  checkSocketPath(socketPath);
  await ensurePrivateDir(dataDir);
  await ensurePrivateDir(runDir);
  const pgdata = opts.pgdata ?? path.join(dataDir, "pgdata");
  await ensurePrivateDir(pgdata);
  const lock = opts.locked ? { release: async () => {} } : await lockDataDir(dataDir);
  try {
    // We hold the lock, so a socket file here was left by a process that died.
    await rm(socketPath, { force: true });
    const started = performance.now();
    const data = { pgdata, socketPath, maxConnections: opts.maxConnections ?? 8, settings: EMBEDDED_SETTINGS };
    const flags = DATABASE_NODE_FLAGS[opts.compiler ?? "baseline"];
    if (!(await exists(path.join(pgdata, "PG_VERSION")))) await createDatabase({ ...data, mode: "init" }, flags, opts.logger);
    const worker = await startWorker({ ...data, mode: "serve" }, flags, opts.logger);
    await keepPrivate(runDir);
    await keepPrivate(pgdata);
    opts.logger.info({ dataDir, ms: Math.round(performance.now() - started) }, "embedded database started");
    let stopping: Promise<void> | undefined;
    return {
      socketDir: runDir,
      stop: () =>
        (stopping ??= (async () => {
          try {
            await worker.stop();
          } finally {
            await rm(socketPath, { force: true });
            await lock.release();
          }
        })()),
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}

function checkSocketPath(socketPath: string) {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new Error(
      `the embedded database socket path ${socketPath} is ${bytes} bytes long, more than Unix sockets allow ` +
        `(${MAX_SOCKET_PATH_BYTES}); choose a shorter data directory`,
    );
  }
}

// chmod as well as mkdir: mkdir leaves an existing directory's mode alone, and umask narrows it.
async function ensurePrivateDir(dir: string) {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

// PGlite writes the files of a new database (initdb's output) with mode 0666, and a Unix socket
// gets 0777 less the umask. The 0700 directories above already keep other users out; this takes
// the group and other bits off everything below as well, for a data directory that is copied,
// backed up or has its top directory's mode loosened. Files PostgreSQL creates later are 0600.
async function keepPrivate(dir: string) {
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isSymbolicLink()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const mode = (await lstat(file).catch(() => undefined))?.mode;
    // A file PostgreSQL removed meanwhile (a recycled WAL segment) needs nothing.
    if (mode !== undefined && (mode & 0o077) !== 0) await chmod(file, mode & 0o700).catch(ignoreMissing);
  }
}

function ignoreMissing(err: unknown) {
  if (errorCode(err) !== "ENOENT") throw err;
}

export type { DataDirLock } from "./lock-file.ts";

// One process per data directory: run/lock holds the owner's pid (lock-file.ts).
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const runDir = path.join(path.resolve(dataDir), "run");
  await ensurePrivateDir(runDir);
  const lockFile = path.join(runDir, "lock");
  const taken = await tryLock(lockFile);
  if ("release" in taken) return taken;
  const who = taken.holder === process.pid ? `this process (${taken.holder})` : `process ${taken.holder}`;
  throw new Error(`data directory ${dataDir} is in use by ${who}; if no RedFlag server is running there, remove ${lockFile}`);
}

interface RunningWorker {
  stop(): Promise<void>;
  // The process's exit code (1 when a signal ended it), once it has exited.
  exited: Promise<number>;
}

// The database runs in a process of its own (embedded-worker.ts), for its memory (issue 18, item
// 7). V8 recompiles PostgreSQL's parser, one 105 KB WebAssembly function, with its optimizing
// compiler once it is hot, and that takes about 600 MB for a few seconds: more than the rest of
// the control plane together. No V8 flag keeps one function out of that compiler, and flags are
// per process, so by default ("baseline") the database's process runs all of PGlite in V8's
// baseline compiler (--liftoff-only) while the control plane's keeps the optimizing one for its
// own WebAssembly (Prisma's query compiler). That costs the database's heavier work about a
// third of its speed (docs/benchmarks.md, section 5); "optimizing" (REDFLAG_EMBEDDED_COMPILER)
// lets V8 optimize PGlite too, for a host with the memory to spare. A process of its own also
// hands back all of its memory when it ends, which a first start needs (createDatabase).
const DATABASE_NODE_FLAGS: Readonly<Record<EmbeddedCompiler, readonly string[]>> = {
  baseline: ["--liftoff-only", "--max-semi-space-size=2"],
  optimizing: ["--max-semi-space-size=2"],
};

// initdb in a process of its own that exits before the database is served: PGlite grows its
// WebAssembly memory while creating the database and never gives it back, so the server would
// carry that memory for as long as it runs (a first start idled 110 MB above a restart).
async function createDatabase(data: EmbeddedWorkerData, flags: readonly string[], logger: Logger) {
  const started = performance.now();
  const worker = await startWorker(data, flags, logger);
  const code = await worker.exited;
  if (code !== 0) throw new Error(`the embedded database could not be created: its process exited with code ${code}`);
  logger.info({ pgdata: data.pgdata, ms: Math.round(performance.now() - started) }, "embedded database created");
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (err) {
    if (errorCode(err) === "ENOENT") return false;
    throw err;
  }
}

// Resolves once the socket accepts connections; rejects with the process's own error otherwise.
// The process ends with this one: it exits when its IPC channel closes, however this process ended.
function startWorker(data: EmbeddedWorkerData, flags: readonly string[], logger: Logger): Promise<RunningWorker> {
  const child = fork(fileURLToPath(new URL("./embedded-worker.ts", import.meta.url)), [JSON.stringify(data)], {
    execArgv: [...flags],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    serialization: "json",
    // glibc gives every thread that allocates a malloc arena of its own, which keeps what it
    // once held; two are enough for one thread doing the work (20 MB less, measured). A value
    // the operator set wins.
    env: { MALLOC_ARENA_MAX: "2", ...process.env },
  });
  let phase: "starting" | "running" | "stopping" | "exited" = "starting";
  let startError: Error | undefined;
  const exited = new Promise<number>((resolve) => child.once("exit", (code) => resolve(code ?? 1)));

  child.on("error", (err) => {
    if (phase === "starting") startError ??= err;
    else logger.error({ err }, "the embedded database failed");
  });

  const stop = async () => {
    if (phase !== "running") return;
    phase = "stopping";
    child.send({ type: "stop" } satisfies ToWorker);
    const timer = setTimeout(() => {
      logger.warn("the embedded database did not stop in time; killing it");
      child.kill("SIGKILL");
    }, STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
    logger.info("embedded database stopped");
  };

  return new Promise((resolve, reject) => {
    child.on("message", (message: FromWorker) => {
      if (message.type === "log") {
        logger[message.level]({ err: message.err }, message.msg);
      } else if (message.type === "failed" && phase === "starting") {
        startError = Object.assign(new Error(message.err.message), { stack: message.err.stack });
      } else if (message.type === "ready" && phase === "starting") {
        phase = "running";
        resolve({ stop, exited });
      }
    });
    void exited.then((code) => {
      if (phase === "starting") {
        const reason = startError?.message ?? `its process exited with code ${code}`;
        reject(new Error(`the embedded database could not start: ${reason}`, { cause: startError }));
      } else if (phase === "running" && data.mode === "serve") {
        logger.error({ code }, "the embedded database stopped unexpectedly");
      }
      phase = "exited";
    });
  });
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

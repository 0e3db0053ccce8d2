// The embedded database: PGlite (PostgreSQL in WebAssembly) on <dataDir>/pgdata, served over the
// Postgres wire protocol on a Unix socket in <dataDir>/run, so the rest of the control plane uses
// it exactly like a PostgreSQL server. The socket has no authentication; the 0700 directories
// are what keep other local users out.
import { chmod, link, lstat, mkdir, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { EmbeddedWorkerData, FromWorker, ToWorker } from "./embedded-worker.ts";

export interface EmbeddedPostgresOptions {
  dataDir: string;
  logger: Logger;
  // Socket connections the server accepts; the pool connecting to it must stay below this.
  maxConnections?: number;
  // Default <dataDir>/pgdata. A restore builds the database beside it, then swaps it in.
  pgdata?: string;
  // The caller holds the data directory's lock (lockDataDir) and keeps it past stop().
  locked?: DataDirLock;
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
// hold from the operating system's page cache, so 32MB keeps the hot tables in memory at a
// quarter of the cost (bench:commands measured no loss; docs/benchmarks.md).
// embedded-worker.ts passes them on PostgreSQL's command line, which overrides postgresql.conf,
// so they apply to databases created before as well.
export const EMBEDDED_SETTINGS: Readonly<Record<string, string>> = { shared_buffers: "32MB" };

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
    if (!(await exists(path.join(pgdata, "PG_VERSION")))) await createDatabase({ ...data, mode: "init" }, opts.logger);
    const worker = await startWorker({ ...data, mode: "serve" }, opts.logger);
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

export interface DataDirLock {
  release(): Promise<void>;
}

// One process per data directory: a lock file holding the owner's pid, created atomically with
// its content (link(2) fails if the name exists). A lock whose process is gone is stale.
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const runDir = path.join(path.resolve(dataDir), "run");
  await ensurePrivateDir(runDir);
  const lockFile = path.join(runDir, "lock");
  const mine = `${process.pid}\n`;
  const temp = `${lockFile}.${process.pid}`;
  await writeFile(temp, mine, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await tryLink(temp, lockFile)) return { release: () => releaseLock(lockFile, mine) };
      const holder = await readLockHolder(lockFile);
      if (holder !== undefined && isRunning(holder)) {
        const who = holder === process.pid ? `this process (${holder})` : `process ${holder}`;
        throw new Error(
          `data directory ${dataDir} is in use by ${who}; ` +
            `if no RedFlag server is running there, remove ${lockFile}`,
        );
      }
      await rm(lockFile, { force: true });
    }
    throw new Error(`could not lock data directory ${dataDir}: ${lockFile} keeps reappearing`);
  } finally {
    await rm(temp, { force: true });
  }
}

async function tryLink(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if (errorCode(err) === "EEXIST") return false;
    throw err;
  }
}

// undefined: no lock file (any more) or one without a pid, which only a crash can leave.
async function readLockHolder(lockFile: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(lockFile, "utf8");
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return errorCode(err) === "EPERM";
  }
}

async function releaseLock(lockFile: string, mine: string) {
  try {
    if ((await readFile(lockFile, "utf8")) === mine) await unlink(lockFile);
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
  }
}

interface RunningWorker {
  stop(): Promise<void>;
  // The worker's exit code, once it has exited.
  exited: Promise<number>;
}

// initdb in a worker of its own that exits before the database is served: the thread's PGlite
// instances grow their WebAssembly memory while creating the database and never give it back, so
// the control plane would carry that memory for as long as it runs (issue 18, item 7: a first
// start idled 110 MB above a restart). Ending the thread frees all of it.
async function createDatabase(data: EmbeddedWorkerData, logger: Logger) {
  const started = performance.now();
  const worker = await startWorker(data, logger);
  const code = await worker.exited;
  if (code !== 0) throw new Error(`the embedded database could not be created: its worker exited with code ${code}`);
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

// Resolves once the socket accepts connections; rejects with the worker's own error otherwise.
function startWorker(data: EmbeddedWorkerData, logger: Logger): Promise<RunningWorker> {
  const worker = new Worker(new URL("./embedded-worker.ts", import.meta.url), {
    name: "redflag-embedded-postgres",
    workerData: data,
  });
  let phase: "starting" | "running" | "stopping" | "exited" = "starting";
  let startError: Error | undefined;
  const exited = new Promise<number>((resolve) => worker.once("exit", resolve));

  worker.on("error", (err) => {
    if (phase === "starting") startError = err;
    else logger.error({ err }, "the embedded database failed");
  });

  const stop = async () => {
    if (phase !== "running") return;
    phase = "stopping";
    worker.postMessage({ type: "stop" } satisfies ToWorker);
    const timer = setTimeout(() => {
      logger.warn("the embedded database did not stop in time; terminating it");
      void worker.terminate();
    }, STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
    logger.info("embedded database stopped");
  };

  return new Promise((resolve, reject) => {
    worker.on("message", (message: FromWorker) => {
      if (message.type === "log") {
        logger[message.level]({ err: message.err }, message.msg);
      } else if (message.type === "ready" && phase === "starting") {
        phase = "running";
        resolve({ stop, exited });
      }
    });
    void exited.then((code) => {
      if (phase === "starting") {
        const reason = startError?.message ?? `its worker exited with code ${code}`;
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

// Runs PGlite and serves it over the Postgres wire protocol in a process of its own: PGlite
// executes every message synchronously on the thread that owns it, so that must not be the
// server's event loop, and the process runs with Node flags of its own (embedded.ts says why).
// Started by embedded.ts with fork(), the worker data as its one argument; talks to it only
// through the messages below, and ends when that channel closes.
//
// PGlite is one Postgres backend, so all socket connections share one session. pglite-socket's
// PGLiteSocketServer interleaves the connections at message granularity: one connection's Parse
// and Bind can land on either side of another's, so a Bind runs someone else's statement
// (reproduced with three pg clients: "bind message supplies 1 parameters, but prepared statement
// "" requires 2"). So this file keeps pglite-socket's per-connection handler, which frames the
// messages, and schedules them itself: a connection has the backend from its first message until
// the backend reports ReadyForQuery outside a transaction block.
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketHandler, type PGLiteSocketHandlerOptions } from "@electric-sql/pglite-socket";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { tryLock, type HeldLock } from "./lock-file.ts";

export interface EmbeddedWorkerData {
  // "init": create the database in pgdata (initdb), shut down cleanly and exit; "serve": open it
  // and serve it on socketPath until told to stop.
  mode: "init" | "serve";
  pgdata: string;
  socketPath: string;
  maxConnections: number;
  // PostgreSQL settings (GUCs) for the server, given on its command line.
  settings: Readonly<Record<string, string>>;
}

// PGlite's own start parameters and the settings embedded.ts chose, which override postgresql.conf.
function startParams(settings: Readonly<Record<string, string>>): string[] {
  return [...PGlite.defaultStartParams, ...settingArgs(settings)];
}

// Also given to initdb (its -c, PostgreSQL 16 and later), whose servers would otherwise fill
// 128MB of shared buffers while they create the database; it writes them to postgresql.conf too.
function settingArgs(settings: Readonly<Record<string, string>>): string[] {
  return Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]);
}

// Parent to worker.
export type ToWorker = { type: "stop" };

// Worker to parent.
export type FromWorker =
  | { type: "ready" }
  // Could not start; the process exits next.
  | { type: "failed"; err: { message: string; stack?: string | undefined } }
  | { type: "log"; level: "warn" | "error"; msg: string; err?: { message: string; stack?: string | undefined } };

interface Pending {
  handlerId: number;
  // undefined: the connection is gone; end whatever it left open.
  message: Uint8Array | undefined;
  onData: (data: Uint8Array) => void;
  resolve: (bytes: number) => void;
  reject: (err: unknown) => void;
}

const READY_FOR_QUERY = 0x5a; // 'Z'
const IDLE = 0x49; // 'I': ReadyForQuery status outside a transaction block
// Backend messages that may arrive between any others (notices, notifications, parameter changes).
const ASYNC_MESSAGES = new Set([0x4e, 0x41, 0x53]); // 'N', 'A', 'S'
const SYNC = Uint8Array.of(0x53, 0, 0, 0, 4);

// Follows the framing of the backend's output, one stream across all messages, and keeps the
// status byte of a ReadyForQuery that was the last message so far: the end of an exchange.
class ReplyTracker {
  status: number | undefined;
  #header: number[] = [];
  #type = 0;
  #left = 0;

  feed(chunk: Uint8Array) {
    let i = 0;
    while (i < chunk.length) {
      if (this.#left > 0) {
        if (this.#type === READY_FOR_QUERY) this.status = chunk[i];
        const n = Math.min(this.#left, chunk.length - i);
        i += n;
        this.#left -= n;
        continue;
      }
      this.#header.push(chunk[i++]!);
      if (this.#header.length < 5) continue;
      const [type, a, b, c, d] = this.#header as [number, number, number, number, number];
      this.#header = [];
      this.#type = type;
      this.#left = ((a << 24) | (b << 16) | (c << 8) | d) - 4;
      if (type !== READY_FOR_QUERY && !ASYNC_MESSAGES.has(type)) this.status = undefined;
    }
  }
}

// The queue pglite-socket's handler feeds (the interface of its QueryQueueManager).
class ExchangeScheduler {
  #db: PGlite;
  #reply = new ReplyTracker();
  #queue: Pending[] = [];
  // The connection whose exchange or transaction block is open; only its messages may run.
  #owner: number | undefined;
  #draining = false;

  #onFailure: (err: unknown) => void;

  constructor(db: PGlite, onFailure: (err: unknown) => void) {
    this.#db = db;
    this.#onFailure = onFailure;
  }

  enqueue(handlerId: number, message: Uint8Array | undefined, onData: (data: Uint8Array) => void): Promise<number> {
    // A message of a connection already cleaned up (its bytes were still being handled when it
    // closed) must not run: it would make a dead connection the backend's owner, half an
    // exchange nobody finishes, and every other connection would wait behind it for ever.
    if (message !== undefined && this.#gone.has(handlerId)) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      this.#queue.push({ handlerId, message, onData, resolve, reject });
      void this.#drain();
    });
  }

  getQueueLength(): number {
    return this.#queue.length;
  }

  // Drops the messages of a connection that is gone, but not the cleanup queued for it.
  clearQueueForHandler(handlerId: number) {
    this.#forget(handlerId);
    const dropped = (p: Pending) => p.handlerId === handlerId && p.message !== undefined;
    for (const p of this.#queue.filter(dropped)) p.reject(new Error("connection closed"));
    this.#queue = this.#queue.filter((p) => !dropped(p));
  }

  // Called when the connection is gone. Queued behind its last message, which may still be running.
  async clearTransactionIfNeeded(handlerId: number) {
    this.#forget(handlerId);
    await this.enqueue(handlerId, undefined, () => {});
  }

  // Connections that are gone, the most recent 10,000: handler IDs only grow, and a late message
  // comes moments after its connection closed, not 10,000 connections later.
  #gone = new Set<number>();
  #forget(handlerId: number) {
    this.#gone.add(handlerId);
    if (this.#gone.size > 10_000) this.#gone.delete(this.#gone.values().next().value!);
  }

  async #drain() {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let next = this.#takeNext(); next; next = this.#takeNext()) await this.#serve(next);
    } finally {
      this.#draining = false;
    }
  }

  #takeNext(): Pending | undefined {
    const i = this.#owner === undefined ? 0 : this.#queue.findIndex((p) => p.handlerId === this.#owner);
    return i < 0 ? undefined : this.#queue.splice(i, 1)[0];
  }

  async #serve(p: Pending) {
    let bytes = 0;
    try {
      const status = await this.#db.runExclusive(async () => {
        if (p.message === undefined) return this.#settle();
        return this.#run(p.message, (data) => {
          bytes += data.length;
          p.onData(data);
        });
      });
      this.#owner = status === IDLE ? undefined : p.handlerId;
      p.resolve(bytes);
    } catch (err) {
      // PGlite itself failed, not the SQL (that is an ErrorResponse): the handler drops the connection.
      this.#owner = undefined;
      this.#onFailure(err);
      p.reject(err);
    }
  }

  // Ends an unfinished extended-protocol exchange (Sync) and rolls back an open transaction block,
  // so the next connection finds the backend idle. Both are no-ops on an idle backend.
  async #settle(): Promise<number | undefined> {
    const status = await this.#run(SYNC);
    return status === IDLE ? status : this.#run(simpleQuery("ROLLBACK"));
  }

  // Runs one frontend message; returns the ReadyForQuery status if the reply ended with one.
  async #run(message: Uint8Array, onData?: (data: Uint8Array) => void): Promise<number | undefined> {
    this.#reply.status = undefined;
    await this.#db.execProtocolRawStream(message, {
      onRawData: (data) => {
        this.#reply.feed(data);
        onData?.(data);
      },
    });
    return this.#reply.status;
  }
}

function simpleQuery(sql: string): Uint8Array {
  const text = Buffer.from(`${sql}\0`);
  const message = Buffer.alloc(5 + text.length);
  message.write("Q", 0);
  message.writeInt32BE(4 + text.length, 1);
  text.copy(message, 5);
  return message;
}

// What Postgres answers a connection over the limit, so clients see SQLSTATE 53300.
function tooManyConnections(): Buffer {
  const fields = Buffer.from("SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0");
  const message = Buffer.alloc(5 + fields.length);
  message.write("E", 0);
  message.writeInt32BE(4 + fields.length, 1);
  fields.copy(message, 5);
  return message;
}

function describe(err: unknown): { message: string; stack?: string | undefined } {
  return err instanceof Error ? { message: err.message, stack: err.stack } : { message: String(err) };
}

if (!process.send) throw new Error("embedded-worker.ts must be started by embedded.ts (fork, with an IPC channel)");
// Resolves once the message is handed to the channel (or the channel is gone).
const send = (message: FromWorker) =>
  new Promise<void>((resolve) => {
    if (!process.connected) return resolve();
    process.send!(message, undefined, {}, () => resolve());
  });
const { mode, pgdata, socketPath, maxConnections, settings } = JSON.parse(process.argv[2] ?? "") as EmbeddedWorkerData;
process.title = "redflag-embedded-postgres";
// Ctrl-C in a terminal and systemd's stop reach every process of the group: the control plane
// stops this one itself, after its own requests are done (or it dies, and the channel closes).
process.on("SIGINT", () => {});
process.on("SIGTERM", () => {});

// The database files belong to one process at a time. The data directory's lock is the control
// plane's; this one covers the gap after a control plane dies while its database process is
// still ending (a long query runs to its end first), so a new one waits instead of opening the
// same files twice.
const LOCK_WAIT_MS = 30_000;
let lock: HeldLock | undefined;
let ending = false;
// The control plane is gone (it crashed or was killed): end at once, as the thread this used to
// be would have with it. PostgreSQL's write-ahead log makes that safe.
process.on("disconnect", () => {
  if (ending) return;
  lock?.releaseNow();
  process.exit(1);
});

async function exit(code: number): Promise<never> {
  ending = true;
  await lock?.release();
  process.exit(code);
}

try {
  lock = await lockDatabase();
  const db = await PGlite.create(pgdata, { startParams: startParams(settings), initDbStartParams: settingArgs(settings) });
  if (mode === "init") {
    // initdb ran in a second PGlite instance of this process, which leaves WebAssembly memory and
    // copies behind that nothing can shrink; ending the process hands them back, and the
    // database is served from a fresh one.
    await db.close();
    await send({ type: "ready" });
    await exit(0);
  } else {
    await serve(db);
  }
} catch (err) {
  await send({ type: "failed", err: describe(err) });
  await exit(1);
}

async function lockDatabase(): Promise<HeldLock> {
  const lockFile = path.join(path.dirname(socketPath), `${path.basename(pgdata)}.lock`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const taken = await tryLock(lockFile);
    if ("release" in taken) return taken;
    if (Date.now() > deadline) {
      throw new Error(
        `the database in ${pgdata} is still open in process ${taken.holder} after ${LOCK_WAIT_MS / 1000} s of waiting ` +
          `(a database process that outlived its control plane); stop that process, then start again`,
      );
    }
    await sleep(100);
  }
}

async function serve(db: PGlite) {
  // The handler only calls the QueryQueueManager methods ExchangeScheduler implements.
  const queryQueue = new ExchangeScheduler(db, (err) =>
    send({ type: "log", level: "error", msg: "the embedded database failed to run a query", err: describe(err) }),
  ) as unknown as PGLiteSocketHandlerOptions["queryQueue"];
  const handlers = new Set<PGLiteSocketHandler>();
  // Every accepted socket, also those turned away: server.close() waits for all of them.
  const sockets = new Set<net.Socket>();

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    if (handlers.size >= maxConnections) {
      socket.end(tooManyConnections());
      return;
    }
    const handler = new PGLiteSocketHandler({ queryQueue, closeOnDetach: true });
    handlers.add(handler);
    const forget = () => handlers.delete(handler);
    handler.addEventListener("close", forget);
    handler.addEventListener("error", forget);
    handler.attach(socket).catch((err: unknown) => {
      forget();
      socket.destroy();
      send({ type: "log", level: "warn", msg: "embedded database connection failed", err: describe(err) });
    });
  });
  server.on("error", (err) => send({ type: "log", level: "error", msg: "embedded database socket error", err: describe(err) }));

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    await db.close();
    throw err;
  }

  process.on("message", (message: ToWorker) => {
    if (message.type === "stop") void stop();
  });
  await send({ type: "ready" });

  async function stop() {
    let code = 0;
    try {
      const closed = new Promise((resolve) => server.close(resolve));
      // Detaching rolls back what a connection left open, before PGlite shuts down.
      await Promise.allSettled([...handlers].map((h) => h.detach(true)));
      for (const socket of sockets) socket.destroy();
      await closed;
      // A clean shutdown (checkpoint): the next start needs no recovery.
      await db.close();
    } catch (err) {
      code = 1;
      await send({ type: "log", level: "error", msg: "embedded database did not shut down cleanly", err: describe(err) });
    } finally {
      await exit(code);
    }
  }
}

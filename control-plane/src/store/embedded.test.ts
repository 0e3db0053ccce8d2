import { spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isConnectionError } from "./db.ts";
import { EMBEDDED_SETTINGS, startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded.ts";
import { isRunning } from "./lock-file.ts";

const silent = pino({ level: "silent" });
const tempDir = () => mkdtemp(path.join(os.tmpdir(), "rf-"));
const connectTo = (server: EmbeddedPostgres) =>
  new pg.Client({ host: server.socketDir, port: 5432, user: "postgres", database: "postgres" });

describe("embedded database", () => {
  let dataDir: string;
  let server: EmbeddedPostgres;
  let pool: pg.Pool;

  beforeAll(async () => {
    dataDir = await tempDir();
    // Too open on purpose: start-up must tighten directories that already exist.
    await mkdir(path.join(dataDir, "run"));
    await chmod(dataDir, 0o755);
    await chmod(path.join(dataDir, "run"), 0o777);
    server = await startEmbeddedPostgres({ dataDir, logger: silent, maxConnections: 4 });
    pool = new pg.Pool({ host: server.socketDir, port: 5432, user: "postgres", database: "postgres", max: 2 });
    // Idle connections break when the server stops; that is what the restart test expects.
    pool.on("error", () => {});
    await pool.query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)");
  });

  afterAll(async () => {
    await pool?.end();
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("keeps the data and run directories private to its user", async () => {
    for (const dir of [dataDir, path.join(dataDir, "run"), path.join(dataDir, "pgdata")]) {
      expect(((await stat(dir)).mode & 0o777).toString(8)).toBe("700");
    }
    expect(server.socketDir).toBe(path.join(dataDir, "run"));
  });

  // PGlite wrote initdb's files with mode 0666: a copy or a loosened directory exposed them.
  it("leaves nothing below the data directory readable or writable by other users", async () => {
    const open: string[] = [];
    for (const entry of await readdir(dataDir, { recursive: true, withFileTypes: true })) {
      const file = path.join(entry.parentPath, entry.name);
      const mode = (await lstat(file)).mode;
      if (!entry.isSymbolicLink() && (mode & 0o077) !== 0) open.push(`${(mode & 0o777).toString(8)} ${path.relative(dataDir, file)}`);
    }
    expect(open).toEqual([]);
  });

  // The memory settings of embedded-worker.ts (issue 18, item 7) reach the server that serves the
  // socket: shared_buffers is fixed at start, so SHOW tells what PostgreSQL runs with.
  it("runs PostgreSQL with the embedded memory settings", async () => {
    for (const [name, value] of Object.entries(EMBEDDED_SETTINGS)) {
      const { rows } = await pool.query<Record<string, string>>(`SHOW ${name}`);
      expect(rows[0]![name]).toBe(value);
    }
  });

  // Ctrl-C in a terminal reaches every process of the group, and systemd's stop every process of
  // the service: the control plane stops its database itself, after its own last requests.
  it("keeps serving when an interrupt or terminate signal reaches the database's process", async () => {
    const [database] = await databaseProcesses(process.pid);
    expect(database).toBeDefined();
    process.kill(database!, "SIGINT");
    process.kill(database!, "SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { rows } = await pool.query("SELECT 1 AS one");
    expect(rows).toEqual([{ one: 1 }]);
    expect(await databaseProcesses(process.pid)).toEqual([database]);
  });

  it("refuses a second start on the same data directory", async () => {
    await expect(startEmbeddedPostgres({ dataDir, logger: silent })).rejects.toThrow(
      `data directory ${dataDir} is in use by this process (${process.pid})`,
    );
  });

  it("never mixes the statements of concurrent connections", async () => {
    // The same load on pglite-socket's PGLiteSocketServer failed with "bind message supplies 1
    // parameters, but prepared statement "" requires 2": the clients' messages interleaved.
    const clients = [connectTo(server), connectTo(server), connectTo(server)];
    await Promise.all(clients.map((c) => c.connect()));
    const [a, b, c] = clients as [pg.Client, pg.Client, pg.Client];
    const mismatches: string[] = [];
    const check = (label: string, got: unknown, want: unknown) => {
      if (got !== want) mismatches.push(`${label}: ${String(got)} != ${String(want)}`);
    };
    try {
      await Promise.all([
        (async () => {
          for (let i = 0; i < 300; i++) check("a", (await a.query("SELECT $1::int AS v", [i])).rows[0].v, i);
        })(),
        (async () => {
          for (let i = 0; i < 300; i++) {
            check("b", (await b.query("SELECT $2::text AS s, $1::int AS x", [7, `${i}`])).rows[0].s, `${i}`);
          }
        })(),
        (async () => {
          for (let i = 0; i < 300; i++) {
            await c.query("BEGIN");
            check("c", (await c.query(`SELECT ${i} AS v`)).rows[0].v, i);
            await c.query("COMMIT");
          }
        })(),
      ]);
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }
    expect(mismatches).toEqual([]);
  });

  it("rolls back what a vanished connection left open and serves the others", async () => {
    const wire = await rawConnection(server);
    await wire.exchange(query("BEGIN; INSERT INTO notes VALUES (1, 'uncommitted')"));
    // Half an extended-protocol exchange (no Sync), then the connection drops.
    wire.socket.write(parse("SELECT 1"));
    wire.socket.destroy();

    const { rows } = await pool.query("SELECT count(*)::int AS n FROM notes WHERE id = 1");
    expect(rows[0].n).toBe(0);
    await pool.query("INSERT INTO notes VALUES (1, 'committed')");
  });

  it("turns away connections over its limit with SQLSTATE 53300", async () => {
    const clients = [connectTo(server), connectTo(server), connectTo(server), connectTo(server)];
    const results = await Promise.allSettled(clients.map((c) => c.connect()));
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    // The pool holds at most one connection here; four more exceed the limit of four.
    const refused = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]).toMatchObject({ code: "53300", message: "sorry, too many clients already" });
    expect(isConnectionError(refused[0])).toBe(true);
  });

  it("keeps the data across stop and start, and clients see the stop as a connection error", async () => {
    await pool.query("INSERT INTO notes VALUES (2, 'before the restart')");
    await server.stop();
    await server.stop();

    const whileStopped = await pool.query("SELECT 1").catch((err: unknown) => err);
    expect(isConnectionError(whileStopped)).toBe(true);

    // Started again with V8's optimizing compiler allowed (REDFLAG_EMBEDDED_COMPILER=optimizing).
    server = await startEmbeddedPostgres({ dataDir, logger: silent, maxConnections: 4, compiler: "optimizing" });
    const { rows } = await pool.query<{ body: string }>("SELECT body FROM notes ORDER BY id");
    expect(rows.map((r) => r.body)).toEqual(["committed", "before the restart"]);
  });
});

describe("embedded database data directory lock", () => {
  it("refuses a directory another process uses, and takes it over once that process died", async () => {
    const dataDir = await tempDir();
    try {
      const holder = await startHolderProcess(dataDir);
      await expect(startEmbeddedPostgres({ dataDir, logger: silent })).rejects.toThrow(
        `data directory ${dataDir} is in use by process ${holder.pid}`,
      );

      // The database runs in a process of the holder's own, which ends with it however it ends.
      const [database] = await databaseProcesses(holder.pid!);
      expect(database).toBeDefined();
      holder.kill("SIGKILL");
      await once(holder, "exit");
      await expect.poll(() => isRunning(database!), { timeout: 10_000 }).toBe(false);

      // The dead process left its lock file and socket behind; its committed row survives.
      const server = await startEmbeddedPostgres({ dataDir, logger: silent });
      const client = connectTo(server);
      try {
        await client.connect();
        expect((await client.query("SELECT v FROM crash_test")).rows).toEqual([{ v: "committed before the crash" }]);
      } finally {
        await client.end();
        await server.stop();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("a database process that outlived its control plane", () => {
  it("is waited for: the database's files are never open in two processes", async () => {
    const dataDir = await tempDir();
    try {
      const first = await startEmbeddedPostgres({ dataDir, logger: silent });
      await first.stop();
      // What a control plane that died leaves while its database process still runs a last long
      // query: that process's lock on the files (here a stand-in process that ends in 1.5 s).
      const stillEnding = spawn(process.execPath, ["-e", "setTimeout(() => {}, 1500)"]);
      const ended = once(stillEnding, "exit").then(() => performance.now());
      await writeFile(path.join(dataDir, "run", "pgdata.lock"), `${stillEnding.pid}\n`, { mode: 0o600 });
      const server = await startEmbeddedPostgres({ dataDir, logger: silent });
      const started = performance.now();
      try {
        expect(started).toBeGreaterThanOrEqual(await ended);
        const client = connectTo(server);
        await client.connect();
        expect((await client.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
        await client.end();
      } finally {
        await server.stop();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("embedded database start-up failures", () => {
  it("refuses a data directory too deep for a Unix socket path", async () => {
    const dataDir = path.join(os.tmpdir(), "x".repeat(100));
    await expect(startEmbeddedPostgres({ dataDir, logger: silent })).rejects.toThrow(
      /the embedded database socket path .* is \d+ bytes long, more than Unix sockets allow .*; choose a shorter data directory/,
    );
  });

  it("reports what stopped the database from starting", async () => {
    const dataDir = await tempDir();
    try {
      await mkdir(path.join(dataDir, "pgdata"));
      await writeFile(path.join(dataDir, "pgdata", "PG_VERSION"), "9\n");
      await expect(startEmbeddedPostgres({ dataDir, logger: silent })).rejects.toThrow(
        /^the embedded database could not start: /,
      );
      // The failed start released the lock.
      await expect(stat(path.join(dataDir, "run", "lock"))).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

// The embedded database processes started by pid (the one it serves, once it is running).
async function databaseProcesses(pid: number): Promise<number[]> {
  const found: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const children = (await readFile(`/proc/${pid}/task/${task}/children`, "utf8").catch(() => "")).split(/\s+/).filter(Boolean);
    for (const child of children) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, "utf8").catch(() => "");
      if (cmdline.includes("embedded-worker.ts") || cmdline.startsWith("redflag-embedded-postgres")) found.push(Number(child));
    }
  }
  return found;
}

// Another Node process that opens the embedded database on dataDir, commits a row and waits.
async function startHolderProcess(dataDir: string) {
  const require = createRequire(import.meta.url);
  const url = (file: string) => JSON.stringify(pathToFileURL(file).href);
  // CommonJS with an async body: --input-type=module would be inherited by the database's worker.
  const script = `(async () => {
    const { startEmbeddedPostgres } = await import(${url(path.join(import.meta.dirname, "embedded.ts"))});
    const { default: pg } = await import(${url(require.resolve("pg"))});
    const { pino } = await import(${url(require.resolve("pino"))});
    const server = await startEmbeddedPostgres({ dataDir: ${JSON.stringify(dataDir)}, logger: pino({ level: "silent" }) });
    const client = new pg.Client({ host: server.socketDir, port: 5432, user: "postgres", database: "postgres" });
    await client.connect();
    await client.query("CREATE TABLE crash_test (v TEXT); INSERT INTO crash_test VALUES ('committed before the crash')");
    process.stdout.write("ready\\n");
    setInterval(() => {}, 60_000);
  })().catch((err) => { console.error(err); process.exit(1); });`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  child.stdout.setEncoding("utf8");
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (output.includes("ready\n")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`the holder process exited with code ${code}: ${output}`)));
  });
  return child;
}

// A bare wire-protocol connection, to do what well-behaved clients never do.
async function rawConnection(server: EmbeddedPostgres) {
  const socket = net.connect(path.join(server.socketDir, ".s.PGSQL.5432"));
  await once(socket, "connect");
  let received = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
  // Resolves with the ReadyForQuery status once the reply to `message` is complete.
  const exchange = async (message: Buffer) => {
    received = Buffer.alloc(0);
    socket.write(message);
    for (;;) {
      const tail = received.subarray(-6);
      if (tail.length === 6 && tail[0] === 0x5a && tail.readInt32BE(1) === 5) return String.fromCharCode(tail[5]!);
      await once(socket, "data");
    }
  };
  await exchange(startup("postgres", "postgres"));
  return { socket, exchange };
}

function message(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0);
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

const query = (sql: string) => message("Q", Buffer.from(`${sql}\0`));
const parse = (sql: string) => message("P", Buffer.concat([Buffer.from(`\0${sql}\0`), Buffer.alloc(2)]));

function startup(user: string, database: string): Buffer {
  const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), Buffer.from(`user\0${user}\0database\0${database}\0\0`)]);
  const length = Buffer.alloc(4);
  length.writeInt32BE(body.length + 4);
  return Buffer.concat([length, body]);
}

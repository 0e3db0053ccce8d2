// `redflag-server backup FILE` and `redflag-server restore FILE`: the whole control plane in one
// file (every table, the master key that opens the sealed signing keys and secrets, the
// bootstrap admin key file), encrypted with a passphrase in the age format (age-encryption.org),
// so `age -d` opens it too. Both run on the server's host with the server's own REDFLAG_*
// settings and never over the API: the file holds the signing keys, and whoever holds those can
// sign commands for every agent, which no API role may grant.
//
// Inside, one JSON text per line: a header object, then per table ["table", name], one row per
// line as PostgreSQL's row_to_json wrote it, ["end", name, rows], and ["done", tables, rows].
// Tables come in foreign-key order, so a restore inserts them as they come.
import { Decrypter, Encrypter } from "age-encryption";
import { timingSafeEqual } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import pino, { type Logger } from "pino";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { inTransactionOn, reachable, loadOrderChecked, readSnapshot, insertRows, recordRestore, recordToolEvent, resetSequences, serverSessions, firstTableWithRows, dropSchemaObjects, setSchemaAside, activeSigningKey } from "./store/backup.ts";
import { opensSigningKey } from "./store/bootstrap.ts";
import { DEFAULT_MIGRATIONS_DIR } from "./store/db.ts";
import { EMBEDDED_PORT, lockDataDir, startEmbeddedPostgres, type EmbeddedPostgres } from "./store/embedded.ts";
import { applyMigrations, readMigrations } from "./store/migrate.ts";

export const BACKUP_FORMAT = "redflag-backup";
export const BACKUP_VERSION = 1;
// A passphrase shorter than this is refused when backing up: the file is open to offline guessing.
export const MIN_PASSPHRASE_LENGTH = 12;
// The longest line a restore accepts: a 512 KiB release chunk is about 1 MiB of hex.
const MAX_LINE_CHARS = 64 * 1024 * 1024;
// Rows per INSERT on restore, and text per INSERT.
const LOAD_ROWS = 5000;
const LOAD_CHARS = 4 * 1024 * 1024;
const WRITE_CHUNK = 256 * 1024;
const FILES = ["admin.key"] as const;

// A failure said in one sentence, with what to do; printed without a stack trace.
export class BackupError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BackupError";
  }
}

export interface BackupHeader {
  format: typeof BACKUP_FORMAT;
  version: number;
  taken_at: string;
  database: string;
  migrations: string[];
  tables: string[];
  master_key: string;
  files: Partial<Record<(typeof FILES)[number], string>>;
}

export interface BackupSummary {
  takenAt: Date;
  database: string;
  tables: number;
  rows: number;
}

interface Source {
  pool: pg.Pool;
  description: string;
  close(): Promise<void>;
}

// The tools' own log: warnings only, on stderr (stdout may be the backup itself).
const toolLogger = (): Logger => pino({ level: "warn", base: undefined }, pino.destination(2));

function configFrom(env: NodeJS.ProcessEnv): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) throw new BackupError(err.problems.join("; "));
    throw err;
  }
}

async function masterKeyOf(config: Config): Promise<Buffer> {
  if (config.masterKey) return config.masterKey;
  const file = path.join(config.dataDir, "master.key");
  const text = await readFile(file, "utf8").catch(() => undefined);
  const key = text === undefined ? undefined : Buffer.from(text.trim(), "base64");
  if (!key || key.length !== 32) {
    throw new BackupError(`no master key here: REDFLAG_MASTER_KEY is unset and ${file} ${text === undefined ? "does not exist" : "does not hold a 32-byte base64 key"}; run the backup with the server's own settings`);
  }
  return key;
}

// The database the server uses: PostgreSQL, or the embedded one, read beside a running server
// through its socket or, when none runs, opened here.
async function openSource(config: Config, logger: Logger): Promise<Source> {
  if (config.databaseUrl) {
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 1, application_name: "redflag-backup", connectionTimeoutMillis: 10_000 });
    pool.on("error", () => {});
    await reachable(pool).catch(async (err: unknown) => {
      await pool.end();
      throw new BackupError(`cannot connect to the database named by DATABASE_URL: ${(err as Error).message}`);
    });
    return { pool, description: "PostgreSQL", close: () => pool.end() };
  }
  const socketPool = () => {
    const pool = new pg.Pool({ host: path.join(config.dataDir, "run"), port: EMBEDDED_PORT, user: "postgres", database: "postgres", max: 1, connectionTimeoutMillis: 10_000 });
    pool.on("error", () => {});
    return pool;
  };
  const running = socketPool();
  try {
    await reachable(running);
    return { pool: running, description: "the embedded database (read beside the running server)", close: () => running.end() };
  } catch {
    await running.end();
  }
  let embedded: EmbeddedPostgres;
  try {
    embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, logger, maxConnections: 2 });
  } catch (err) {
    throw new BackupError(`cannot open the embedded database in ${config.dataDir}: ${(err as Error).message}`);
  }
  const pool = socketPool();
  return {
    pool,
    description: "the embedded database",
    close: async () => {
      await pool.end();
      await embedded.stop();
    },
  };
}

// Lines of text as chunks of bytes, a few hundred KiB at a time.
function toByteStream(lines: AsyncGenerator<string>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let text = "";
      while (text.length < WRITE_CHUNK) {
        const next = await lines.next();
        if (next.done) {
          if (text) controller.enqueue(encoder.encode(text));
          controller.close();
          return;
        }
        text += `${next.value}\n`;
      }
      controller.enqueue(encoder.encode(text));
    },
    async cancel() {
      await lines.return(undefined);
    },
  });
}

// JSON has no raw line breaks inside strings; a json column may keep some as whitespace.
const oneLine = (row: string) => (row.includes("\n") || row.includes("\r") ? row.replace(/[\r\n]/g, " ") : row);

async function* backupLines(client: pg.ClientBase, extras: { masterKey: Buffer; files: BackupHeader["files"]; database: string }, summary: BackupSummary): AsyncGenerator<string> {
  let header: BackupHeader | undefined;
  for await (const item of readSnapshot(client)) {
    switch (item.kind) {
      case "header": {
        const active = await activeSigningKey(client);
        if (active && !opensSigningKey(extras.masterKey, active.id, active.sealed)) {
          throw new BackupError("this master key does not open the database's signing key: run the backup with the server's own REDFLAG_MASTER_KEY or data directory");
        }
        header = {
          format: BACKUP_FORMAT,
          version: BACKUP_VERSION,
          taken_at: item.header.takenAt.toISOString(),
          database: `${extras.database}, PostgreSQL ${item.header.postgresVersion}`,
          migrations: item.header.migrations,
          tables: item.header.tables,
          master_key: extras.masterKey.toString("base64"),
          files: extras.files,
        };
        summary.takenAt = item.header.takenAt;
        summary.database = header.database;
        if (header.migrations.length === 0) throw new BackupError("the database has no RedFlag schema yet: start the control plane once before backing it up");
        yield JSON.stringify(header);
        break;
      }
      case "table":
        yield JSON.stringify(["table", item.table]);
        break;
      case "rows":
        yield item.rows.map(oneLine).join("\n");
        summary.rows += item.rows.length;
        break;
      case "end":
        summary.tables++;
        yield JSON.stringify(["end", item.table, item.rows]);
        break;
    }
  }
  yield JSON.stringify(["done", summary.tables, summary.rows]);
}

export interface BackupOptions {
  env: NodeJS.ProcessEnv;
  // A file path, or "-" for stdout.
  out: string;
  passphrase: string;
  stdout?: Writable;
}

export async function backup(opts: BackupOptions): Promise<BackupSummary> {
  if (opts.passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new BackupError(`the passphrase is ${opts.passphrase.length} characters long; use at least ${MIN_PASSPHRASE_LENGTH} (four or five random words)`);
  }
  const config = configFrom(opts.env);
  if (!config.databaseUrl && (await readdir(path.join(config.dataDir, "pgdata")).catch(() => [])).length === 0) {
    throw new BackupError(`there is no database in ${config.dataDir} to back up: set REDFLAG_DATA_DIR (or DATABASE_URL) as the server has it`);
  }
  const masterKey = await masterKeyOf(config);
  const files: BackupHeader["files"] = {};
  for (const name of FILES) {
    const text = await readFile(path.join(config.dataDir, name), "utf8").catch(() => undefined);
    if (text !== undefined) files[name] = text;
  }
  const toStdout = opts.out === "-";
  const target = path.resolve(opts.out);
  if (!toStdout && (await stat(target).catch(() => undefined))) {
    throw new BackupError(`${opts.out} already exists; choose a new file name (a backup never overwrites one)`);
  }
  const logger = toolLogger();
  const source = await openSource(config, logger);
  const summary: BackupSummary = { takenAt: new Date(0), database: "", tables: 0, rows: 0 };
  const partial = `${target}.partial`;
  try {
    const client = await source.pool.connect();
    try {
      const encrypter = new Encrypter();
      encrypter.setPassphrase(opts.passphrase);
      const cipher = await encrypter.encrypt(toByteStream(backupLines(client, { masterKey, files, database: source.description }, summary)));
      const sink = toStdout ? (opts.stdout ?? process.stdout) : createWriteStream(partial, { mode: 0o600, flags: "wx" });
      await pipeline(Readable.fromWeb(cipher as import("node:stream/web").ReadableStream<Uint8Array>), sink, { end: !toStdout });
      if (!toStdout) await rename(partial, target);
    } finally {
      client.release();
    }
    // Taking the keys away is worth a line in the security log (and its notification).
    await recordToolEvent(source.pool, {
      type: "backup_taken",
      severity: "info",
      message: `a backup of the database and its keys was taken on the server's host (snapshot of ${summary.takenAt.toISOString()}, ${summary.rows} rows)`,
      detail: { tables: summary.tables, rows: summary.rows },
    }).catch((err: unknown) => logger.warn({ err }, "the backup is complete, but recording it in the security log failed"));
    return summary;
  } catch (err) {
    if (!toStdout) await rm(partial, { force: true });
    throw err;
  } finally {
    await source.close();
  }
}

// ---- Restore ----

async function* textLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let pending = "";
  for await (const chunk of decrypted(stream)) {
    pending += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n", start)) {
      yield pending.slice(start, end);
      start = end + 1;
    }
    pending = pending.slice(start);
    if (pending.length > MAX_LINE_CHARS) throw damaged(`a line is longer than ${MAX_LINE_CHARS} characters`);
  }
  pending += decoder.decode();
  if (pending) throw damaged("its last line is unfinished");
}

// The plaintext as it is decrypted; a chunk that does not authenticate, or a file cut short, is
// a damaged backup (age checks every 64 KiB chunk and marks the last one).
async function* decrypted(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (err) {
        throw damaged(`it does not decrypt to its end (${(err as Error).message})`);
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    reader.releaseLock();
  }
}

const damaged = (why: string) => new BackupError(`the backup is damaged: ${why}`);

interface OpenedBackup {
  header: BackupHeader;
  lines: AsyncGenerator<string>;
}

async function openBackup(file: string, passphrase: string): Promise<OpenedBackup> {
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile()) throw new BackupError(`${file} is not a file`);
  const decrypter = new Decrypter();
  decrypter.addPassphrase(passphrase);
  let plain: ReadableStream<Uint8Array>;
  try {
    plain = await decrypter.decrypt(Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>);
  } catch (err) {
    const message = (err as Error).message;
    if (/passphrase|incorrect|no identity matched|failed to decrypt/i.test(message)) throw new BackupError(`the passphrase does not open ${file}`);
    throw new BackupError(`${file} is not a RedFlag backup (not an age file with a passphrase): ${message}`);
  }
  const lines = textLines(plain);
  const first = await lines.next().catch((err: unknown) => {
    throw err instanceof BackupError ? err : new BackupError(`the passphrase does not open ${file}, or the file is damaged: ${(err as Error).message}`);
  });
  if (first.done) throw damaged("it is empty");
  return { header: parseHeader(first.value), lines };
}

function parseHeader(line: string): BackupHeader {
  let h: Partial<BackupHeader>;
  try {
    h = JSON.parse(line) as Partial<BackupHeader>;
  } catch {
    throw new BackupError("this file is not a RedFlag backup: its first line is not a backup header");
  }
  if (h.format !== BACKUP_FORMAT) throw new BackupError("this file is not a RedFlag backup: its header names another format");
  if (h.version !== BACKUP_VERSION) throw new BackupError(`this backup has format version ${String(h.version)}; this RedFlag reads version ${BACKUP_VERSION}: restore it with the version that made it or a newer one`);
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === "string");
  if (typeof h.taken_at !== "string" || typeof h.database !== "string" || !strings(h.migrations) || !strings(h.tables) || typeof h.master_key !== "string" || typeof h.files !== "object" || h.files === null) {
    throw damaged("its header lacks a field");
  }
  if (Buffer.from(h.master_key, "base64").length !== 32) throw damaged("its master key is not 32 bytes");
  if (Object.values(h.files).some((v) => typeof v !== "string")) throw damaged("a file in its header is not text");
  return h as BackupHeader;
}

interface Loader {
  rows(table: string, rows: string[]): Promise<void>;
}

// Follows the backup's structure to its end, handing rows over in batches; throws on anything
// out of place, so a load that finished saw every table whole.
async function walk(header: BackupHeader, lines: AsyncGenerator<string>, loader: Loader): Promise<{ tables: number; rows: number }> {
  let table: string | undefined;
  let next = 0;
  let count = 0;
  let total = 0;
  let batch: string[] = [];
  let chars = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    await loader.rows(table!, batch);
    batch = [];
    chars = 0;
  };
  for await (const line of lines) {
    if (line.startsWith("{")) {
      if (table === undefined) throw damaged("a row stands outside any table");
      batch.push(line);
      chars += line.length;
      count++;
      if (batch.length >= LOAD_ROWS || chars >= LOAD_CHARS) await flush();
      continue;
    }
    let mark: unknown;
    try {
      mark = JSON.parse(line);
    } catch {
      throw damaged("a line is not JSON");
    }
    if (!Array.isArray(mark)) throw damaged("a line is neither a row nor a marker");
    if (mark[0] === "table" && table === undefined && mark[1] === header.tables[next]) {
      table = header.tables[next++]!;
      count = 0;
    } else if (mark[0] === "end" && table !== undefined && mark[1] === table) {
      if (mark[2] !== count) throw damaged(`table ${table} should have ${String(mark[2])} rows and has ${count}`);
      await flush();
      total += count;
      table = undefined;
    } else if (mark[0] === "done" && table === undefined && next === header.tables.length) {
      if (mark[1] !== next || mark[2] !== total) throw damaged("its totals do not match its tables");
      return { tables: next, rows: total };
    } else throw damaged(`a marker is out of place (${line.slice(0, 80)})`);
  }
  throw damaged("it ends before its last table");
}

export interface RestoreOptions {
  env: NodeJS.ProcessEnv;
  file: string;
  passphrase: string;
  // Restore over a database that holds data, keeping that data aside.
  replace?: boolean;
  now?: () => Date;
  migrationsDir?: string;
}

export interface RestoreSummary {
  takenAt: Date;
  tables: number;
  rows: number;
  // Where the data that was replaced now is (--replace).
  setAside: string[];
  masterKeyFile: string | undefined;
}

export async function restore(opts: RestoreOptions): Promise<RestoreSummary> {
  const config = configFrom(opts.env);
  const now = (opts.now ?? (() => new Date()))();
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  const migrationsDir = opts.migrationsDir ?? DEFAULT_MIGRATIONS_DIR;
  const opened = await openBackup(opts.file, opts.passphrase);
  const { header } = opened;
  const known = (await readMigrations(migrationsDir)).map((m) => m.name);
  const unknown = header.migrations.find((m, i) => known[i] !== m);
  if (unknown !== undefined) {
    throw new BackupError(`this backup was taken by a RedFlag whose migration ${unknown} this version does not have: restore it with that version or a newer one`);
  }
  const masterKey = Buffer.from(header.master_key, "base64");
  if (config.masterKey && !timingSafeEqual(config.masterKey, masterKey)) {
    throw new BackupError("REDFLAG_MASTER_KEY holds another key than the one this backup's secrets are sealed with: unset it for the restore, which writes the backup's key to the data directory's master.key, then set REDFLAG_MASTER_KEY from that file");
  }
  const keyFile = path.join(config.dataDir, "master.key");
  const existingKey = await readFile(keyFile, "utf8").then((t) => Buffer.from(t.trim(), "base64"), () => undefined);
  const keyDiffers = !config.masterKey && existingKey !== undefined && (existingKey.length !== 32 || !timingSafeEqual(existingKey, masterKey));
  if (keyDiffers && !opts.replace) {
    throw new BackupError(`${keyFile} holds another key than this backup's; pass --replace to keep it aside as master.key.replaced-${stamp} and restore in its place`);
  }
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const logger = toolLogger();
  const setAside: string[] = [];
  const target = { header, masterKey, migrationsDir, logger, stamp, replace: opts.replace ?? false, file: opts.file, passphrase: opts.passphrase };
  const counts = config.databaseUrl
    ? await restorePostgres(config.databaseUrl, opened, target, setAside)
    : await restoreEmbedded(config.dataDir, opened, target, setAside, async () => {
        await placeFiles(config, header, keyDiffers, stamp, setAside);
      });
  if (config.databaseUrl) await placeFiles(config, header, keyDiffers, stamp, setAside);
  return { takenAt: new Date(header.taken_at), ...counts, setAside, masterKeyFile: config.masterKey ? undefined : keyFile };
}

// The master key (unless REDFLAG_MASTER_KEY provides it) and the admin key file; what was there
// before is kept aside.
async function placeFiles(config: Config, header: BackupHeader, keyDiffers: boolean, stamp: string, setAside: string[]) {
  if (!config.masterKey) {
    const keyFile = path.join(config.dataDir, "master.key");
    if (keyDiffers) {
      await rename(keyFile, `${keyFile}.replaced-${stamp}`);
      setAside.push(`${keyFile}.replaced-${stamp}`);
    }
    await writeFile(keyFile, `${header.master_key}\n`, { mode: 0o600 });
  }
  for (const name of FILES) {
    const file = path.join(config.dataDir, name);
    const existing = await readFile(file, "utf8").catch(() => undefined);
    const wanted = header.files[name];
    if (existing === wanted) continue;
    if (existing !== undefined) {
      await rename(file, `${file}.replaced-${stamp}`);
      setAside.push(`${file}.replaced-${stamp}`);
    }
    if (wanted !== undefined) await writeFile(file, wanted, { mode: 0o600 });
  }
}

interface RestoreTarget {
  header: BackupHeader;
  masterKey: Buffer;
  migrationsDir: string;
  logger: Logger;
  stamp: string;
  replace: boolean;
  file: string;
  passphrase: string;
}

async function restorePostgres(url: string, opened: OpenedBackup, t: RestoreTarget, setAside: string[]) {
  const pool = new pg.Pool({ connectionString: url, max: 1, application_name: "redflag-restore", connectionTimeoutMillis: 10_000 });
  pool.on("error", () => {});
  try {
    const client = await pool.connect().catch((err: unknown) => {
      throw new BackupError(`cannot connect to the database named by DATABASE_URL: ${(err as Error).message}`);
    });
    try {
      const sessions = await serverSessions(client);
      if (sessions.length > 0) {
        const from = [...new Set(sessions.map((s) => s.clientAddr ?? "a local socket"))].join(", ");
        throw new BackupError(`${sessions.length} connections of running RedFlag servers are open on this database (from ${from}); stop every control plane replica, then restore`);
      }
      const occupied = await firstTableWithRows(client);
      if (occupied !== undefined) {
        if (!t.replace) {
          throw new BackupError(`the database already holds RedFlag data (table ${occupied} has rows); restore into an empty database, or pass --replace to keep the current data aside in a schema of its own and restore in its place`);
        }
        // Read the whole backup once before anything changes: a damaged file changes nothing.
        const check = await openBackup(t.file, t.passphrase);
        await walk(check.header, check.lines, { rows: async () => {} });
        setAside.push(`schema ${await setSchemaAside(client, t.stamp)}`);
      } else await dropSchemaObjects(client);
    } finally {
      client.release();
    }
    await applyMigrations(pool, t.migrationsDir, t.logger, { through: t.header.migrations.at(-1)! });
    return await load(pool, opened, t);
  } finally {
    await pool.end();
  }
}

async function restoreEmbedded(dataDir: string, opened: OpenedBackup, t: RestoreTarget, setAside: string[], placeFiles: () => Promise<void>) {
  let lock;
  try {
    lock = await lockDataDir(dataDir);
  } catch (err) {
    throw new BackupError(`${(err as Error).message}; stop the control plane before restoring`);
  }
  const pgdata = path.join(path.resolve(dataDir), "pgdata");
  const staging = `${pgdata}.restoring`;
  try {
    const existing = (await readdir(pgdata).catch(() => [])).length > 0;
    if (existing && !t.replace) {
      throw new BackupError(`${dataDir} already holds a database; pass --replace to keep it aside as pgdata.replaced-${t.stamp} and restore in its place, or choose an empty REDFLAG_DATA_DIR`);
    }
    await rm(staging, { recursive: true, force: true });
    const embedded = await startEmbeddedPostgres({ dataDir, logger: t.logger, maxConnections: 2, pgdata: staging, locked: lock });
    let counts;
    try {
      const pool = new pg.Pool({ host: embedded.socketDir, port: EMBEDDED_PORT, user: "postgres", database: "postgres", max: 1 });
      pool.on("error", () => {});
      try {
        await applyMigrations(pool, t.migrationsDir, t.logger, { through: t.header.migrations.at(-1)! });
        counts = await load(pool, opened, t);
      } finally {
        await pool.end();
      }
    } finally {
      await embedded.stop();
    }
    await placeFiles();
    if (existing) {
      await rename(pgdata, `${pgdata}.replaced-${t.stamp}`);
      setAside.push(`${pgdata}.replaced-${t.stamp}`);
    } else await rm(pgdata, { recursive: true, force: true });
    await rename(staging, pgdata);
    return counts;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  } finally {
    await lock.release();
  }
}

// Every row in one transaction, then the sequences; the restored signing key must open with the
// backup's master key before anything commits.
async function load(pool: pg.Pool, opened: OpenedBackup, t: RestoreTarget) {
  const client = await pool.connect();
  let counts;
  try {
    const order = await loadOrderChecked(client, t.header.tables);
    if (order) throw damaged(order);
    counts = await inTransactionOn(client, async () => {
      const loaded = await walk(t.header, opened.lines, {
        rows: async (table, rows) => {
          await insertRows(client, table, rows);
        },
      });
      await resetSequences(client);
      await recordRestore(client, new Date(t.header.taken_at));
      const active = await activeSigningKey(client);
      if (active && !opensSigningKey(t.masterKey, active.id, active.sealed)) throw damaged("its master key does not open its own signing key");
      return loaded;
    });
  } finally {
    client.release();
  }
  await recordToolEvent(pool, {
    type: "backup_restored",
    severity: "warning",
    message: `the database was restored from a backup taken at ${t.header.taken_at}; what happened after that moment is not in it`,
    detail: { takenAt: t.header.taken_at, rows: counts.rows },
  }).catch((err: unknown) => t.logger.warn({ err }, "the restore is complete, but recording it in the security log failed"));
  return counts;
}

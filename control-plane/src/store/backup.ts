// What `redflag-server backup` and `restore` ask of the database, on a connection of their own.
// Rows travel as PostgreSQL's own JSON text of each row (row_to_json) and come back through
// json_populate_recordset, so every column type (bytea, timestamps, arrays, jsonb, enums, bigint)
// round-trips exactly and no row is ever decoded in JavaScript.
import { PrismaPg } from "@prisma/adapter-pg";
import type pg from "pg";
import { PrismaClient } from "../generated/prisma/client.ts";
import { recordSecurityEvent, type SecurityEventInput } from "./security-events.ts";

// Prisma's bookkeeping: a restore applies the migrations itself, so their history is not copied.
export const MIGRATIONS_TABLE = "_prisma_migrations";
// Rows per FETCH adapt to the rows' width so one batch holds about this much text: agent release
// chunks are 1 MiB of hex each, audit entries a few hundred bytes.
const BATCH_BYTES = 4 * 1024 * 1024;
const MAX_FETCH = 10_000;

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;

export interface SnapshotHeader {
  takenAt: Date;
  postgresVersion: string;
  migrations: string[];
  tables: string[];
}

export type SnapshotItem =
  | { kind: "header"; header: SnapshotHeader }
  | { kind: "table"; table: string }
  | { kind: "rows"; table: string; rows: string[] }
  | { kind: "end"; table: string; rows: number };

// Every table of the public schema as of one moment: one REPEATABLE READ READ ONLY transaction,
// so writes committed while it reads (agents keep polling) are either wholly in or wholly out.
// Ending the iteration early rolls the transaction back.
export async function* readSnapshot(client: pg.ClientBase): AsyncGenerator<SnapshotItem> {
  await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  let done = false;
  try {
    // The first statement fixes the snapshot; now() is its time.
    const meta = await client.query<{ version: string; now: Date }>("SELECT current_setting('server_version') AS version, now() AS now");
    const migrations = await appliedMigrations(client);
    const tables = await loadOrder(client);
    yield { kind: "header", header: { takenAt: meta.rows[0]!.now, postgresVersion: meta.rows[0]!.version, migrations, tables } };
    for (const table of tables) {
      yield { kind: "table", table };
      await client.query(`DECLARE backup_rows NO SCROLL CURSOR FOR SELECT row_to_json(t)::text AS r FROM ${ident(table)} t`);
      let fetch = 16;
      let count = 0;
      for (;;) {
        const res = await client.query<{ r: string }>(`FETCH ${fetch} FROM backup_rows`);
        if (res.rows.length === 0) break;
        const rows = res.rows.map((row) => row.r);
        count += rows.length;
        yield { kind: "rows", table, rows };
        if (rows.length < fetch) break;
        const bytes = rows.reduce((n, r) => n + r.length, 0);
        if (bytes < BATCH_BYTES / 4) fetch = Math.min(fetch * 4, MAX_FETCH);
        else if (bytes > BATCH_BYTES) fetch = Math.max(1, Math.floor(fetch / 4));
      }
      await client.query("CLOSE backup_rows");
      yield { kind: "end", table, rows: count };
    }
    await client.query("COMMIT");
    done = true;
  } finally {
    if (!done) await client.query("ROLLBACK").catch(() => {});
  }
}

// Migrations applied, in the order Prisma applies them (by name).
export async function appliedMigrations(client: pg.ClientBase): Promise<string[]> {
  const exists = await client.query<{ t: string | null }>("SELECT to_regclass($1)::text AS t", [`public.${MIGRATIONS_TABLE}`]);
  if (!exists.rows[0]!.t) return [];
  const { rows } = await client.query<{ name: string }>(
    `SELECT migration_name AS name FROM ${ident(MIGRATIONS_TABLE)} WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name`,
  );
  return rows.map((r) => r.name);
}

// The tables that hold the control plane's data, by name.
export async function dataTables(client: pg.ClientBase): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> $1 ORDER BY c.relname`,
    [MIGRATIONS_TABLE],
  );
  return rows.map((r) => r.name);
}

// The first table that holds a row, or undefined when the database holds no data (never used,
// or only migrated).
export async function firstTableWithRows(client: pg.ClientBase): Promise<string | undefined> {
  for (const table of await dataTables(client)) {
    const { rows } = await client.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${ident(table)}) AS any`);
    if (rows[0]!.any) return table;
  }
  return undefined;
}

// Sessions of RedFlag servers (and their replica links) on this database, other than this one.
export async function serverSessions(client: pg.ClientBase): Promise<{ applicationName: string; clientAddr: string | null }[]> {
  const { rows } = await client.query<{ application_name: string; client_addr: string | null }>(
    `SELECT application_name, client_addr::text FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND (application_name = 'redflag-server' OR application_name = 'redflag-replica-link')`,
  );
  return rows.map((r) => ({ applicationName: r.application_name, clientAddr: r.client_addr }));
}

// An empty database's RedFlag objects go (tables, enum types), so the migrations can build the
// backup's schema from the start. Only ever called on a database that holds no rows.
export async function dropSchemaObjects(client: pg.ClientBase): Promise<void> {
  const tables = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')`,
  );
  const types = await client.query<{ name: string }>(
    `SELECT t.typname AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e'`,
  );
  await inTransactionOn(client, async () => {
    for (const { name } of tables.rows) await client.query(`DROP TABLE IF EXISTS ${ident(name)} CASCADE`);
    for (const { name } of types.rows) await client.query(`DROP TYPE IF EXISTS ${ident(name)} CASCADE`);
  });
}

// Keeps a database's current data aside, whole, in a schema of its own, and gives the migrations
// an empty public schema. Returns that schema's name.
export async function setSchemaAside(client: pg.ClientBase, suffix: string): Promise<string> {
  const aside = `redflag_replaced_${suffix}`;
  await inTransactionOn(client, async () => {
    await client.query(`ALTER SCHEMA public RENAME TO ${ident(aside)}`);
    await client.query("CREATE SCHEMA public");
  });
  return aside;
}

async function foreignKeys(client: pg.ClientBase): Promise<{ child: string; parent: string }[]> {
  const { rows } = await client.query<{ child: string; parent: string }>(
    `SELECT c.relname AS child, p.relname AS parent FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE k.contype = 'f' AND n.nspname = 'public' AND c.oid <> p.oid`,
  );
  return rows;
}

// Tables in an order that inserts every row after the rows its foreign keys point to.
export async function loadOrder(client: pg.ClientBase): Promise<string[]> {
  const tables = await dataTables(client);
  const rows = await foreignKeys(client);
  const parents = new Map<string, Set<string>>(tables.map((t) => [t, new Set()]));
  for (const { child, parent } of rows) parents.get(child)?.add(parent);
  const order: string[] = [];
  const placed = new Set<string>();
  while (order.length < tables.length) {
    const ready = tables.filter((t) => !placed.has(t) && [...parents.get(t)!].every((p) => placed.has(p) || !parents.has(p)));
    if (ready.length === 0) throw new Error(`the tables' foreign keys form a cycle among ${tables.filter((t) => !placed.has(t)).join(", ")}`);
    for (const t of ready) {
      placed.add(t);
      order.push(t);
    }
  }
  return order;
}

// Why `tables` is not a load order for this database's schema (other tables, or a table before
// one its foreign keys point to), or undefined when it is.
export async function loadOrderChecked(client: pg.ClientBase, tables: readonly string[]): Promise<string | undefined> {
  const here = await dataTables(client);
  const missing = here.filter((t) => !tables.includes(t));
  const extra = tables.filter((t) => !here.includes(t));
  if (missing.length > 0 || extra.length > 0 || new Set(tables).size !== tables.length) {
    return `its tables (${extra.join(", ") || "none extra"}; missing ${missing.join(", ") || "none"}) are not those of its migrations`;
  }
  const position = new Map(tables.map((t, i) => [t, i]));
  const wrong = (await foreignKeys(client)).find((k) => position.get(k.parent)! > position.get(k.child)!);
  return wrong ? `table ${wrong.child} comes before ${wrong.parent}, which it refers to` : undefined;
}

// The active signing key as stored (sealed), to check the master key opens it.
export async function activeSigningKey(client: pg.ClientBase): Promise<{ id: string; sealed: Uint8Array } | undefined> {
  const { rows } = await client.query<{ id: string; private_key_enc: Buffer }>(`SELECT id, private_key_enc FROM signing_keys WHERE active ORDER BY created_at DESC LIMIT 1`);
  return rows[0] ? { id: rows[0].id, sealed: new Uint8Array(rows[0].private_key_enc) } : undefined;
}

// Inserts rows given as the JSON text row_to_json made of them, in one statement.
export async function insertRows(client: pg.ClientBase, table: string, rows: readonly string[]): Promise<number> {
  if (rows.length === 0) return 0;
  const res = await client.query(`INSERT INTO ${ident(table)} SELECT * FROM json_populate_recordset(NULL::${ident(table)}, $1::json)`, [`[${rows.join(",")}]`]);
  return res.rowCount ?? 0;
}

// Moves every serial column's sequence past the largest value restored, so new rows do not
// collide with restored ones.
export async function resetSequences(client: pg.ClientBase): Promise<void> {
  const { rows } = await client.query<{ table: string; column: string; seq: string }>(
    `SELECT c.relname AS table, a.attname AS column, pg_get_serial_sequence(quote_ident(c.relname), a.attname) AS seq
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
      WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        AND pg_get_serial_sequence(quote_ident(c.relname), a.attname) IS NOT NULL`,
  );
  for (const r of rows) {
    await client.query(`SELECT setval($1, COALESCE((SELECT max(${ident(r.column)}) FROM ${ident(r.table)}), 1), (SELECT max(${ident(r.column)}) FROM ${ident(r.table)}) IS NOT NULL)`, [r.seq]);
  }
}

// Marks the restore in the restored database itself (see the restores table in schema.prisma).
export async function recordRestore(client: pg.ClientBase, backupTakenAt: Date): Promise<void> {
  await client.query("INSERT INTO restores (restored_at, backup_taken_at) VALUES (now(), $1)", [backupTakenAt]);
}

// A tool's entry in the security log, on the tool's own pool.
export async function recordToolEvent(pool: pg.Pool, event: SecurityEventInput): Promise<void> {
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  try {
    await recordSecurityEvent(prisma, event);
  } finally {
    await prisma.$disconnect();
  }
}

// Runs fn in one transaction on this connection.
export async function inTransactionOn<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query("BEGIN");
  try {
    const result = await fn();
    await client.query("COMMIT");
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

// Whether the database answers at all.
export async function reachable(pool: pg.Pool): Promise<void> {
  await pool.query("SELECT 1");
}

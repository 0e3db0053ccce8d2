import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { pino, type Logger } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "../../test/support/database.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded.ts";
import { applyMigrations, migrationChecksum } from "./migrate.ts";

const silent = pino({ level: "silent" });

// Logs as parsed objects, to check what an operator would see.
function capturingLogger(): { logger: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

describe.each(availableBackends)("applyMigrations on %s", (backend: Backend) => {
  let db: FreshDatabase;
  let embedded: EmbeddedPostgres | undefined;
  let connect: () => pg.Pool;
  let pool: pg.Pool;
  let dir: string;
  const extraPools: pg.Pool[] = [];

  beforeAll(async () => {
    db = await freshDatabase({ backend });
    // Teardown drops the database with FORCE: a client still closing sees its connection
    // terminated, which is expected here and must not surface as an uncaught error.
    const quiet = (p: pg.Pool) => p.on("error", () => {});
    if (db.databaseUrl) {
      const connectionString = db.databaseUrl;
      connect = () => quiet(new pg.Pool({ connectionString, max: 2 }));
    } else {
      const server = await startEmbeddedPostgres({ dataDir: db.dataDir, logger: silent });
      embedded = server;
      connect = () => quiet(new pg.Pool({ host: server.socketDir, port: 5432, user: "postgres", database: "postgres", max: 2 }));
    }
    pool = connect();
  });

  afterAll(async () => {
    await Promise.all([pool, ...extraPools].map((p) => p.end()));
    await embedded?.stop();
    await db.cleanup();
  });

  beforeEach(async () => {
    await pool.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    dir = await mkdtemp(path.join(os.tmpdir(), "rf-migrations-"));
    return () => rm(dir, { recursive: true, force: true });
  });

  const write = async (name: string, sql: string) => {
    await mkdir(path.join(dir, name), { recursive: true });
    await writeFile(path.join(dir, name, "migration.sql"), sql);
  };
  const records = async () =>
    (
      await pool.query<{
        id: string;
        migration_name: string;
        checksum: string;
        finished_at: Date | null;
        logs: string | null;
        rolled_back_at: Date | null;
        started_at: Date;
        applied_steps_count: number;
      }>(`SELECT * FROM "_prisma_migrations" ORDER BY migration_name, started_at`)
    ).rows;
  const tableExists = async (name: string) =>
    (await pool.query<{ t: string | null }>("SELECT to_regclass($1)::text AS t", [name])).rows[0]?.t !== null;

  it("applies migrations in name order and records them as Prisma does", async () => {
    // Written in reverse so directory order cannot hide a missing sort.
    await write("20240102000000_add_column", "ALTER TABLE widgets ADD COLUMN size INTEGER;\n");
    const first = "CREATE TABLE widgets (id INTEGER PRIMARY KEY);\n";
    await write("20240101000000_init", first);
    await writeFile(path.join(dir, "migration_lock.toml"), 'provider = "postgresql"\n');

    expect(await applyMigrations(pool, dir, silent)).toEqual({
      applied: ["20240101000000_init", "20240102000000_add_column"],
    });

    const rows = await records();
    expect(rows.map((r) => r.migration_name)).toEqual(["20240101000000_init", "20240102000000_add_column"]);
    const [init] = rows;
    expect(init).toMatchObject({ checksum: migrationChecksum(first), logs: null, rolled_back_at: null, applied_steps_count: 1 });
    expect(init!.checksum).toMatch(/^[0-9a-f]{64}$/);
    expect(init!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(init!.finished_at!.getTime()).toBeGreaterThanOrEqual(init!.started_at.getTime());
    await pool.query("INSERT INTO widgets (id, size) VALUES (1, 2)");
  });

  it("applies nothing the second time and only new migrations later", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual(["1_a"]);
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual([]);
    await write("2_b", "CREATE TABLE b (id INTEGER);");
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual(["2_b"]);
    expect(await records()).toHaveLength(2);
  });

  it("refuses to start when an applied migration was changed, and applies nothing", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    await applyMigrations(pool, dir, silent);
    await write("1_a", "CREATE TABLE a (id BIGINT);");
    await write("2_b", "CREATE TABLE b (id INTEGER);");

    await expect(applyMigrations(pool, dir, silent)).rejects.toThrow(
      /migration 1_a was changed after it was applied: the checksum of its migration\.sql differs/,
    );
    expect(await tableExists("b")).toBe(false);
  });

  it("accepts an applied migration whose line endings git converted", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);\nCREATE TABLE b (id INTEGER);\n");
    await applyMigrations(pool, dir, silent);
    await write("1_a", "CREATE TABLE a (id INTEGER);\r\nCREATE TABLE b (id INTEGER);\r\n");
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual([]);
  });

  it("refuses to start after a failed attempt recorded by Prisma, until it is resolved", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    await applyMigrations(pool, dir, silent);
    await write("2_b", "CREATE TABLE b (id INTEGER);");
    // What `prisma migrate deploy` leaves behind when a migration fails.
    await pool.query(
      `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, logs, applied_steps_count)
       VALUES ('00000000-0000-0000-0000-000000000002', $1, '2_b', 'boom', 0)`,
      [migrationChecksum("CREATE TABLE b (id INTEGER);")],
    );
    await expect(applyMigrations(pool, dir, silent)).rejects.toThrow(
      /migration 2_b failed in an earlier attempt.*prisma migrate resolve --rolled-back 2_b/,
    );

    // `prisma migrate resolve --rolled-back 2_b` sets rolled_back_at; then it is applied afresh.
    await pool.query(`UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = '2_b'`);
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual(["2_b"]);
    expect(await tableExists("b")).toBe(true);
  });

  it("rolls a failing migration back completely and records nothing for it", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    await write("2_b", "CREATE TABLE b (id INTEGER);\nSELECT no_such_function();\n");
    await write("3_c", "CREATE TABLE c (id INTEGER);");

    await expect(applyMigrations(pool, dir, silent)).rejects.toThrow(
      /migration 2_b failed and was rolled back: function no_such_function\(\) does not exist/,
    );
    expect(await tableExists("a")).toBe(true);
    expect(await tableExists("b")).toBe(false);
    expect(await tableExists("c")).toBe(false);
    expect((await records()).map((r) => r.migration_name)).toEqual(["1_a"]);

    await write("2_b", "CREATE TABLE b (id INTEGER);\n");
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual(["2_b", "3_c"]);
  });

  it("applies each migration exactly once when several processes start together", async () => {
    for (let i = 1; i <= 4; i++) {
      await write(`${i}_m`, `CREATE TABLE m${i} (id INTEGER); SELECT pg_sleep(0.05);`);
    }
    const pools = [connect(), connect(), connect()];
    extraPools.push(...pools);

    const { logger, lines } = capturingLogger();

    const results = await Promise.all(pools.map((p) => applyMigrations(p, dir, logger)));

    const applied = results.flatMap((r) => r.applied).sort();
    expect(applied).toEqual(["1_m", "2_m", "3_m", "4_m"]);
    expect(await records()).toHaveLength(4);
    // The embedded database's connections share one session, where the advisory lock is re-entrant.
    if (backend === "postgres") {
      expect(lines).toContainEqual(expect.objectContaining({ msg: "another process is applying migrations; waiting for it" }));
    }
  });

  it("warns about, but accepts, applied migrations it does not know", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    await write("2_b", "CREATE TABLE b (id INTEGER);");
    await applyMigrations(pool, dir, silent);
    await rm(path.join(dir, "2_b"), { recursive: true });

    const { logger, lines } = capturingLogger();
    expect((await applyMigrations(pool, dir, logger)).applied).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 40, migration: "2_b" }));
  });

  it("names a migration folder without migration.sql", async () => {
    await write("1_a", "CREATE TABLE a (id INTEGER);");
    await mkdir(path.join(dir, "2_empty"));
    await expect(applyMigrations(pool, dir, silent)).rejects.toThrow(/migration 2_empty has no readable migration\.sql/);
    expect(await tableExists("a")).toBe(false);
  });

  it("names a missing migrations directory", async () => {
    const missing = path.join(dir, "nope");
    await expect(applyMigrations(pool, missing, silent)).rejects.toThrow(`cannot read the migrations directory ${missing}`);
  });
});

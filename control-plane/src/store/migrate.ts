// Applies prisma/migrations/*/migration.sql at start-up and records them in _prisma_migrations the
// way Prisma Migrate does, so `prisma migrate status` and `prisma migrate deploy` agree with us.
import { createHash, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import type { Logger } from "pino";

// Prisma Migrate's own lock key: a `prisma migrate deploy` and a starting replica exclude each other.
const MIGRATION_LOCK_KEY = 72707369;

// Prisma's DDL for its bookkeeping table (schema-engine, postgres flavour).
const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

export interface MigrationFile {
  name: string;
  sql: string;
}

interface AppliedRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

export class MigrationError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

export async function applyMigrations(
  pool: pg.Pool,
  migrationsDir: string,
  logger: Logger,
  // A restore builds the schema its backup was taken with: the migrations up to this one.
  options: { through?: string } = {},
): Promise<{ applied: string[] }> {
  const all = await readMigrations(migrationsDir);
  const through = options.through;
  const migrations = through === undefined ? all : all.filter((m) => m.name <= through);
  const client = await pool.connect();
  let reusable = false;
  try {
    await acquireLock(client, logger);
    let applied: string[];
    try {
      applied = await applyPending(client, migrations, logger);
    } finally {
      reusable = await releaseLock(client);
    }
    return { applied };
  } finally {
    client.release(!reusable);
  }
}

async function applyPending(client: pg.PoolClient, migrations: MigrationFile[], logger: Logger): Promise<string[]> {
  await client.query(CREATE_MIGRATIONS_TABLE);
  checkHistory(migrations, await appliedRows(client), logger);
  const applied: string[] = [];
  for (const migration of migrations) {
    if (await applyOne(client, migration, logger)) applied.push(migration.name);
  }
  return applied;
}

// Migration folders in name order, as Prisma orders them.
export async function readMigrations(migrationsDir: string): Promise<MigrationFile[]> {
  let entries;
  try {
    entries = await readdir(migrationsDir, { withFileTypes: true });
  } catch (err) {
    throw new MigrationError(`cannot read the migrations directory ${migrationsDir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  return Promise.all(
    names.map(async (name) => {
      const file = path.join(migrationsDir, name, "migration.sql");
      try {
        return { name, sql: await readFile(file, "utf8") };
      } catch (err) {
        throw new MigrationError(`migration ${name} has no readable migration.sql (${file})`, { cause: err });
      }
    }),
  );
}

// sha256 hex of the script, as Prisma stores it.
export function migrationChecksum(sql: string): string {
  return createHash("sha256").update(sql, "utf8").digest("hex");
}

// Prisma also accepts the file with its line endings converted, since git may convert them.
function checksumMatches(sql: string, checksum: string): boolean {
  const lf = sql.replaceAll("\r\n", "\n");
  return [sql, lf, lf.replaceAll("\n", "\r\n")].some((variant) => migrationChecksum(variant) === checksum);
}

async function acquireLock(client: pg.PoolClient, logger: Logger) {
  const { rows } = await client.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [
    MIGRATION_LOCK_KEY,
  ]);
  if (rows[0]?.locked) return;
  logger.info("another process is applying migrations; waiting for it");
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
}

// false: the connection is broken (the server drops the lock with the session); do not reuse it.
async function releaseLock(client: pg.PoolClient): Promise<boolean> {
  try {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
    return true;
  } catch {
    return false;
  }
}

async function appliedRows(client: pg.PoolClient): Promise<AppliedRow[]> {
  const { rows } = await client.query<AppliedRow>(
    `SELECT migration_name, checksum, finished_at, rolled_back_at
       FROM "_prisma_migrations" ORDER BY started_at`,
  );
  return rows;
}

// Refuses to build on a history that is not what the files say.
function checkHistory(migrations: MigrationFile[], rows: AppliedRow[], logger: Logger) {
  const files = new Map(migrations.map((m) => [m.name, m]));
  for (const row of rows) {
    if (row.rolled_back_at) continue;
    if (!row.finished_at) {
      throw new MigrationError(
        `migration ${row.migration_name} failed in an earlier attempt and is recorded as unfinished in ` +
          `_prisma_migrations; repair the database, then mark it with ` +
          `\`prisma migrate resolve --rolled-back ${row.migration_name}\` (or --applied) before starting again`,
      );
    }
    const file = files.get(row.migration_name);
    if (!file) {
      logger.warn(
        { migration: row.migration_name },
        "the database has a migration this version does not know; was it downgraded?",
      );
    } else if (!checksumMatches(file.sql, row.checksum)) {
      throw new MigrationError(
        `migration ${row.migration_name} was changed after it was applied: the checksum of its migration.sql ` +
          `differs from the one recorded in _prisma_migrations; restore the original file and put the change ` +
          `in a new migration`,
      );
    }
  }
}

// One transaction per migration, recorded inside it: either the schema change and its record
// both exist or neither does. The second look at the table matters on the embedded database,
// whose connections share one session, so the advisory lock does not exclude them.
async function applyOne(client: pg.PoolClient, migration: MigrationFile, logger: Logger): Promise<boolean> {
  await client.query("BEGIN");
  try {
    const done = await client.query(
      `SELECT 1 FROM "_prisma_migrations"
        WHERE migration_name = $1 AND finished_at IS NOT NULL AND rolled_back_at IS NULL`,
      [migration.name],
    );
    if (done.rowCount) {
      await client.query("ROLLBACK");
      return false;
    }
    const started = new Date();
    await client.query(migration.sql);
    await client.query(
      `INSERT INTO "_prisma_migrations"
         (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
       VALUES ($1, $2, clock_timestamp(), $3, NULL, NULL, $4, 1)`,
      [randomUUID(), migrationChecksum(migration.sql), migration.name, started],
    );
    await client.query("COMMIT");
    logger.info({ migration: migration.name, ms: Date.now() - started.getTime() }, "applied migration");
    return true;
  } catch (err) {
    // The migration's own error is the one to report; if ROLLBACK fails too, so does the unlock,
    // and the connection is discarded.
    await client.query("ROLLBACK").catch(() => {});
    throw new MigrationError(`migration ${migration.name} failed and was rolled back: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

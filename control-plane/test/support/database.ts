import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";

export type Backend = "embedded" | "postgres";

export interface FreshDatabase {
  // Unset: use the embedded database in dataDir.
  databaseUrl: string | undefined;
  dataDir: string;
  cleanup(): Promise<void>;
}

// The backends this run can test: always the embedded one, plus PostgreSQL when
// TEST_DATABASE_URL names a server (CI sets it).
export const availableBackends: Backend[] = process.env.TEST_DATABASE_URL ? ["embedded", "postgres"] : ["embedded"];

// A fresh, empty database and a fresh data directory. By default the PostgreSQL named by
// TEST_DATABASE_URL (a new database on that server, dropped again by cleanup), else embedded.
export async function freshDatabase(opts: { backend?: Backend } = {}): Promise<FreshDatabase> {
  const serverUrl = process.env.TEST_DATABASE_URL;
  const backend = opts.backend ?? (serverUrl ? "postgres" : "embedded");
  // Short: the embedded database's Unix socket lives below it, and socket paths are limited.
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "rf-"));
  const removeDataDir = () => rm(dataDir, { recursive: true, force: true });
  if (backend === "embedded") return { databaseUrl: undefined, dataDir, cleanup: removeDataDir };
  if (!serverUrl) throw new Error("TEST_DATABASE_URL is not set, so there is no PostgreSQL to test against");

  const db = await scratchPostgres(serverUrl, "redflag_t");
  return {
    databaseUrl: db.url,
    dataDir,
    async cleanup() {
      await db.drop();
      await removeDataDir();
    },
  };
}

// A new, empty database on the PostgreSQL server `serverUrl`, named `<prefix>_<random>`, and
// how to drop it again (also while something is still connected). The tests' fresh databases
// and the benchmarks' (bench/servers.ts) are made this one way.
export async function scratchPostgres(serverUrl: string, prefix: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  await onServer(serverUrl, `CREATE DATABASE "${name}"`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => onServer(serverUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

async function onServer(serverUrl: string, sql: string) {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

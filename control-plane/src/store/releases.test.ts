import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "../../test/support/database.ts";
import { DEFAULT_MIGRATIONS_DIR } from "./db.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "./embedded.ts";
import { applyMigrations } from "./migrate.ts";

const REGISTRY_MIGRATION = "20261205080814_add_agent_releases";
const silent = pino({ level: "silent" });

// An update_agent queued before the registry existed carries a URL and manifest its sender
// chose, and an operator could queue one: the migration that adds the registry cancels those
// still waiting, so no agent ever receives one.
describe.each(availableBackends)("the registry migration on %s", (backend: Backend) => {
  let db: FreshDatabase;
  let embedded: EmbeddedPostgres | undefined;
  let pool: pg.Pool;
  let dir: string;

  beforeAll(async () => {
    db = await freshDatabase({ backend });
    if (db.databaseUrl) {
      pool = new pg.Pool({ connectionString: db.databaseUrl, max: 2 });
    } else {
      const server = await startEmbeddedPostgres({ dataDir: db.dataDir, logger: silent });
      embedded = server;
      pool = new pg.Pool({ host: server.socketDir, port: 5432, user: "postgres", database: "postgres", max: 2 });
    }
    pool.on("error", () => {});
    dir = await mkdtemp(path.join(os.tmpdir(), "rf-registry-migration-"));
  });
  afterAll(async () => {
    await pool?.end();
    await embedded?.stop();
    await db?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("cancels pending agent upgrades queued before it, and nothing else", async () => {
    const before = (await readdir(DEFAULT_MIGRATIONS_DIR, { withFileTypes: true })).filter((e) => e.isDirectory() && e.name < REGISTRY_MIGRATION);
    for (const m of before) await cp(path.join(DEFAULT_MIGRATIONS_DIR, m.name), path.join(dir, m.name), { recursive: true });
    await applyMigrations(pool, dir, silent);

    const agent = "5b0e8f0a-1f4e-4c55-9a43-0c2f6b1d7e01";
    await pool.query(
      `INSERT INTO agents (id, hostname, machine_id, public_key, os_family, os_name, os_version, kernel, arch, agent_version, registered_at, updated_at)
       VALUES ($1, 'web-1', $2, '\\x00', 'linux', 'Debian', '12', '6.1', 'x86_64', '0.1.0', now(), now())`,
      [agent, "a".repeat(64)],
    );
    const command = (id: string, type: string, state: string) =>
      pool.query(`INSERT INTO commands (id, agent_id, type, state, action, created_by) VALUES ($1, $2, $3::command_type, $4::command_state, '\\x', 'oscar')`, [id, agent, type, state]);
    await command("00000000-0000-4000-8000-000000000001", "update_agent", "pending");
    await command("00000000-0000-4000-8000-000000000002", "update_agent", "succeeded");
    await command("00000000-0000-4000-8000-000000000003", "scan_updates", "pending");

    await cp(path.join(DEFAULT_MIGRATIONS_DIR, REGISTRY_MIGRATION), path.join(dir, REGISTRY_MIGRATION), { recursive: true });
    expect((await applyMigrations(pool, dir, silent)).applied).toEqual([REGISTRY_MIGRATION]);
    const rows = (await pool.query<{ id: string; state: string; finished: boolean }>("SELECT id::text, state::text, finished_at IS NOT NULL AS finished FROM commands ORDER BY id")).rows;
    expect(rows).toEqual([
      { id: "00000000-0000-4000-8000-000000000001", state: "cancelled", finished: true },
      { id: "00000000-0000-4000-8000-000000000002", state: "succeeded", finished: false },
      { id: "00000000-0000-4000-8000-000000000003", state: "pending", finished: false },
    ]);
  });
});

import pg from "pg";
import { appliedMigrations } from "./backup.ts";

// What `redflag-server doctor` asks a PostgreSQL database, on a connection of its own (never the
// running server's pool): its version, its clock, the migrations it has applied, and the
// signing keys' ages.
export interface DatabaseFacts {
  versionNum: number;
  version: string;
  now: Date;
  applied: string[];
  // null: the table does not exist yet (nothing was ever started on this database)
  activeKey: { id: string; sealed: Uint8Array; createdAt: Date } | null | undefined;
}

export async function databaseFacts(url: string, timeoutMs: number): Promise<DatabaseFacts> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs, application_name: "redflag-doctor" });
  await client.connect();
  try {
    const v = await client.query<{ num: string; version: string; now: Date }>("SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version, now() AS now");
    const exists = await client.query<{ keys: string | null }>("SELECT to_regclass('public.signing_keys')::text AS keys");
    const applied = await appliedMigrations(client);
    const row = exists.rows[0]!.keys
      ? (await client.query<{ id: string; private_key_enc: Buffer; created_at: Date }>(`SELECT id, private_key_enc, created_at FROM "signing_keys" WHERE active ORDER BY created_at DESC LIMIT 1`)).rows[0]
      : null;
    const activeKey = row === null ? null : row ? { id: row.id, sealed: new Uint8Array(row.private_key_enc), createdAt: row.created_at } : undefined;
    return { versionNum: Number(v.rows[0]!.num), version: v.rows[0]!.version, now: v.rows[0]!.now, applied, activeKey };
  } finally {
    await client.end().catch(() => {});
  }
}

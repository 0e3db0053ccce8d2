import { Encrypter } from "age-encryption";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readMigrations } from "../src/store/migrate.ts";
import { DEFAULT_MIGRATIONS_DIR } from "../src/store/db.ts";
import { run } from "../../test/support/processes.ts";

// `redflag-server backup` and `restore` refuse what they cannot do in one sentence, with the
// exit code scripts expect (2: the command line; 1: the work), and a refused restore leaves the
// data directory as it was. The round trip and a damaged file are test/backup-restore.test.ts.
const PASSPHRASE = "correct horse battery staple";

describe("redflag-server backup and restore refusals", () => {
  let work: string;
  let dataDir: string;
  const server = (args: string[], env: Record<string, string> = {}) =>
    run(["control-plane/src/main.ts", ...args], { env: { REDFLAG_DATA_DIR: dataDir, REDFLAG_BACKUP_PASSPHRASE: PASSPHRASE, ...env }, timeoutMs: 60_000 });
  // A backup file as `backup` writes one, with the lines given.
  const backupFile = async (name: string, lines: string[]) => {
    const e = new Encrypter();
    e.setPassphrase(PASSPHRASE);
    e.setScryptWorkFactor(10);
    const file = path.join(work, name);
    await writeFile(file, await e.encrypt(lines.map((l) => `${l}\n`).join("")));
    return file;
  };
  const header = async (over: Record<string, unknown> = {}) =>
    JSON.stringify({
      format: "redflag-backup",
      version: 1,
      taken_at: new Date().toISOString(),
      database: "test",
      migrations: (await readMigrations(DEFAULT_MIGRATIONS_DIR)).map((m) => m.name),
      tables: ["settings"],
      master_key: randomBytes(32).toString("base64"),
      files: {},
      ...over,
    });

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "rf-backup-cli-"));
    dataDir = path.join(work, "data");
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("explains its command line", async () => {
    const help = await server(["backup", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: redflag-server backup FILE/);
    const none = await server(["restore"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^redflag-server restore: name one backup file\nusage: redflag-server restore FILE/);
    const unknown = await server(["backup", "x.age", "--force"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown option '--force'/);
    const noPassphrase = await server(["backup", path.join(work, "x.age")], { REDFLAG_BACKUP_PASSPHRASE: "" });
    expect(noPassphrase.code).toBe(1);
    expect(noPassphrase.stderr).toBe("redflag-server backup: no passphrase: pass --passphrase-file PATH or set REDFLAG_BACKUP_PASSPHRASE (there is no terminal to type one on)\n");
  });

  it("has nothing to back up where no server ever ran", async () => {
    const res = await server(["backup", path.join(work, "nothing.age")]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/there is no database in .* to back up/);
    expect(await readdir(work)).not.toContain("nothing.age");
  });

  it("refuses files that are not backups and backups from a newer RedFlag before touching anything", async () => {
    const notAge = path.join(work, "not.age");
    await writeFile(notAge, "hello\n");
    const a = await server(["restore", notAge]);
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/^redflag-server restore: .*not\.age is not a RedFlag backup/);

    const future = await backupFile("future.age", [await header({ migrations: [...(await readMigrations(DEFAULT_MIGRATIONS_DIR)).map((m) => m.name), "99990101000000_from_the_future"] })]);
    const b = await server(["restore", future]);
    expect(b.code).toBe(1);
    expect(b.stderr).toBe("redflag-server restore: this backup was taken by a RedFlag whose migration 99990101000000_from_the_future this version does not have: restore it with that version or a newer one\n");

    const other = await backupFile("other.age", [JSON.stringify({ format: "something-else" })]);
    expect((await server(["restore", other])).stderr).toMatch(/its header names another format/);
    expect(await readdir(dataDir).catch(() => [])).toEqual([]);

  });
});

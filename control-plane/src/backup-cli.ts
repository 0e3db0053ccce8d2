// The command lines of `redflag-server backup` and `redflag-server restore` (backup.ts does the work).
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { plural } from "@redflag/common/plural";
import { readSecret } from "./cli/prompt.ts";
import { backup, BackupError, MIN_PASSPHRASE_LENGTH, restore } from "./backup.ts";

export const BACKUP_USAGE = `usage: redflag-server backup FILE [--passphrase-file PATH]
  Writes the database, its master key and signing keys to FILE (- for stdout), encrypted with a
  passphrase (age format). Run it on the server's host with the server's settings (DATABASE_URL,
  REDFLAG_DATA_DIR, REDFLAG_MASTER_KEY); it reads one consistent snapshot while the server runs.
  The passphrase comes from --passphrase-file, REDFLAG_BACKUP_PASSPHRASE, or is asked for.
`;

export const RESTORE_USAGE = `usage: redflag-server restore FILE [--passphrase-file PATH] [--replace]
  Restores a backup (FILE, or - for stdin) into the database the server's settings name, with the
  control plane stopped.
  The database must be empty (a new PostgreSQL database, or a new data directory); --replace
  keeps what is there aside (a schema, or pgdata.replaced-TIME) and restores in its place.
`;

interface Io {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

// Exit code: 0 done, 1 failed, 2 the command line is wrong.
export async function backupCommand(command: "backup" | "restore", argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const usage = command === "backup" ? BACKUP_USAGE : RESTORE_USAGE;
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        "passphrase-file": { type: "string" },
        help: { type: "boolean", short: "h" },
        ...(command === "restore" ? { replace: { type: "boolean" } } : {}),
      },
    });
  } catch (err) {
    io.stderr.write(`redflag-server ${command}: ${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout.write(usage);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    io.stderr.write(`redflag-server ${command}: name one backup file\n${usage}`);
    return 2;
  }
  const file = parsed.positionals[0]!;
  try {
    const passphrase = await readPassphrase(parsed.values["passphrase-file"] as string | undefined, env, io, command === "backup");
    if (command === "backup") {
      const s = await backup({ env, out: file, passphrase, stdout: io.stdout });
      io.stderr.write(
        `backed up ${plural(s.tables, "table")} and ${plural(s.rows, "row")} of ${s.database} as of ${s.takenAt.toISOString()}${file === "-" ? "" : ` to ${file}`}\n` +
          "It holds the signing keys: keep it, and its passphrase, as safe as the server itself, and apart from each other.\n",
      );
    } else {
      const s = await withFile(file, io, (path) => restore({ env, file: path, passphrase, replace: parsed.values.replace === true }));
      io.stderr.write(`restored ${plural(s.tables, "table")} and ${plural(s.rows, "row")} as of ${s.takenAt.toISOString()}\n`);
      for (const aside of s.setAside) io.stderr.write(`kept aside: ${aside}\n`);
      if (s.masterKeyFile && env.DATABASE_URL) {
        io.stderr.write(`The master key is in ${s.masterKeyFile}: give every replica the same one (REDFLAG_MASTER_KEY, from that file).\n`);
      }
      io.stderr.write("Start the control plane: it applies any newer migrations, and agents carry on with the credentials they hold.\n");
    }
    return 0;
  } catch (err) {
    if (err instanceof BackupError) {
      io.stderr.write(`redflag-server ${command}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

// A backup piped in (`restore -`) is kept in a private temporary file first: a restore over a
// database in use reads it twice, and a container reads it without a mount.
async function withFile<T>(file: string, io: Io, fn: (path: string) => Promise<T>): Promise<T> {
  if (file !== "-") return fn(file);
  if (io.stdin.isTTY) throw new BackupError("restore - reads the backup from stdin: pipe it in (< FILE)");
  const dir = await mkdtemp(path.join(tmpdir(), "redflag-restore-"));
  try {
    const copy = path.join(dir, "backup.age");
    await pipeline(io.stdin, createWriteStream(copy, { mode: 0o600 }));
    return await fn(copy);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function readPassphrase(file: string | undefined, env: NodeJS.ProcessEnv, io: Io, confirm: boolean): Promise<string> {
  if (file !== undefined) {
    const text = await readFile(file, "utf8").catch((err: unknown) => {
      throw new BackupError(`cannot read the passphrase file ${file}: ${(err as Error).message}`);
    });
    return text.replace(/\r?\n$/, "");
  }
  if (env.REDFLAG_BACKUP_PASSPHRASE) return env.REDFLAG_BACKUP_PASSPHRASE;
  if (!io.stdin.isTTY) {
    throw new BackupError("no passphrase: pass --passphrase-file PATH or set REDFLAG_BACKUP_PASSPHRASE (there is no terminal to type one on)");
  }
  const first = await readSecret(io, confirm ? `Passphrase (at least ${MIN_PASSPHRASE_LENGTH} characters): ` : "Passphrase: ", false);
  if (confirm && (await readSecret(io, "Again: ", false)) !== first) throw new BackupError("the two passphrases differ");
  return first;
}

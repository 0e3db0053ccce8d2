// `redflag-server doctor`: checks what a control plane on this machine needs, with the same
// REDFLAG_* settings the server reads, and says for each problem how to fix it. Exit 0 when
// nothing failed (warnings allowed), 1 otherwise. It reads; it changes nothing.
import { readFile, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { ConfigError, loadConfig, unusedVariables, type Config } from "./config.ts";
import { askReady, probeUrl } from "./healthcheck.ts";
import { plural } from "@redflag/common/plural";
import { opensSigningKey } from "./store/bootstrap.ts";
import { databaseFacts } from "./store/doctor.ts";
import { DEFAULT_MIGRATIONS_DIR } from "./store/db.ts";
import { readMigrations } from "./store/migrate.ts";

export type Level = "ok" | "warn" | "fail";
export interface Finding {
  level: Level;
  check: string;
  message: string;
  // What to do about it (warn and fail only).
  fix?: string;
}

export interface DoctorOptions {
  env: NodeJS.ProcessEnv;
  now?: () => Date;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

const DAY = 86_400_000;
// Warn below 1 GiB free in the data directory, fail below 200 MiB.
const DISK_WARN = 1024 ** 3;
const DISK_FAIL = 200 * 1024 ** 2;
// Signed commands expire and Renew requests are timed: minutes of skew break agents.
const SKEW_WARN_MS = 5_000;
const KEY_AGE_WARN_DAYS = 365;
const MIN_POSTGRES = 140000;

export async function doctor(opts: DoctorOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const add = (level: Level, check: string, message: string, fix?: string) => findings.push(fix ? { level, check, message, fix } : { level, check, message });
  const now = opts.now ?? (() => new Date());
  const timeoutMs = opts.timeoutMs ?? 5000;
  const get = opts.fetch ?? fetch;

  let config: Config;
  try {
    config = loadConfig(opts.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) add("fail", "configuration", p, "correct the variable; README.md lists every one");
    return findings;
  }
  add("ok", "configuration", "every REDFLAG_ variable reads");
  const unused = unusedVariables(opts.env);
  if (unused.length > 0) add("warn", "configuration", `not used: ${unused.join(", ")}`, "check the spelling (README.md lists every variable), or set the variable they need");

  // The data directory: there, private, room to grow.
  try {
    const s = await stat(config.dataDir);
    if ((s.mode & 0o077) !== 0) add("warn", "data directory", `${config.dataDir} is readable by other users (mode ${(s.mode & 0o777).toString(8)})`, `chmod 700 ${config.dataDir}`);
    else add("ok", "data directory", config.dataDir);
    const fs = await statfs(config.dataDir);
    const free = fs.bavail * fs.bsize;
    const gib = (free / 1024 ** 3).toFixed(1);
    if (free < DISK_FAIL) add("fail", "disk space", `${gib} GiB free where ${config.dataDir} is`, "free space there or move REDFLAG_DATA_DIR");
    else if (free < DISK_WARN) add("warn", "disk space", `${gib} GiB free where ${config.dataDir} is`, "free space there before the database fills it");
    else add("ok", "disk space", `${gib} GiB free`);
  } catch {
    add("warn", "data directory", `${config.dataDir} does not exist yet`, "it is created at the first start (npm start)");
  }

  // The master key: several replicas must share it; it is the one thing a backup cannot redo.
  if (config.databaseUrl && !opts.env.REDFLAG_MASTER_KEY) {
    add("warn", "master key", `REDFLAG_MASTER_KEY is unset: the key is ${path.join(config.dataDir, "master.key")} on this machine only`, "set REDFLAG_MASTER_KEY (the same on every replica) from that file, and keep a copy apart from the database backups");
  } else add("ok", "master key", opts.env.REDFLAG_MASTER_KEY ? "from REDFLAG_MASTER_KEY" : `${path.join(config.dataDir, "master.key")}`);

  // The server on this machine, as its own health check asks it.
  const ready = probeUrl(config);
  try {
    const res = await askReady(ready, timeoutMs);
    let reason = "not ready";
    try {
      reason = (JSON.parse(res.body) as { reason?: string }).reason ?? reason;
    } catch {
      // not the control plane's JSON: something else listens there
      reason = "it is not a RedFlag control plane";
    }
    if (res.status === 200) add("ok", "server", `answers ${ready}: ready`);
    else add("fail", "server", `answers ${ready} with ${res.status}: ${reason}`, "read its log: the database or its migrations are the usual reason");
  } catch {
    add("warn", "server", `nothing answers ${ready}`, "start it (npm start, or the redflag-server service), then run doctor again");
  }

  // PostgreSQL, on a connection of its own.
  if (config.databaseUrl) {
    try {
      const facts = await databaseFacts(config.databaseUrl, timeoutMs);
      if (facts.versionNum < MIN_POSTGRES) add("warn", "database", `PostgreSQL ${facts.version}`, "RedFlag is tested on PostgreSQL 14 and newer: upgrade it");
      else add("ok", "database", `PostgreSQL ${facts.version} answers`);
      const skew = facts.now.getTime() - now().getTime();
      if (Math.abs(skew) > SKEW_WARN_MS) add("warn", "clock", `this machine's clock is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? "behind" : "ahead of"} the database's`, "run time synchronisation (chrony, systemd-timesyncd) on both: signed commands expire and agents' requests are timed");
      else add("ok", "clock", `within ${Math.round(Math.abs(skew))} ms of the database`);
      const known = (await readMigrations(DEFAULT_MIGRATIONS_DIR)).map((m) => m.name);
      const applied = new Set(facts.applied);
      const missing = known.filter((n) => !applied.has(n));
      if (missing.length > 0) add("warn", "migrations", `${plural(missing.length, "migration")} of this version not applied yet`, "start the control plane: it applies them under a lock, one replica at a time");
      else add("ok", "migrations", `all ${known.length} applied`);
      const key = facts.activeKey;
      if (!key) add("warn", "signing key", "no active signing key yet", "it is made at the first start");
      else {
        const days = Math.floor((now().getTime() - key.createdAt.getTime()) / DAY);
        if (days > KEY_AGE_WARN_DAYS) add("warn", "signing key", `the active signing key is ${days} days old`, "rotate it: redflag security rotate-key --grace 7d");
        else add("ok", "signing key", `active key ${days} days old`);
        const master = config.masterKey ?? (await readFile(path.join(config.dataDir, "master.key"), "utf8").then((t) => Buffer.from(t.trim(), "base64"), () => undefined));
        if (!master) add("fail", "master key", "no master key here: neither REDFLAG_MASTER_KEY nor the data directory's master.key", "set REDFLAG_MASTER_KEY to the key the database was made with");
        else if (!opensSigningKey(master, key.id, key.sealed)) {
          add("fail", "master key", "it does not open the database's signing key: it is not the key this database was made with", "set REDFLAG_MASTER_KEY to that key (the master.key of the first replica, or your copy); a new key would mean enrolling every agent again");
        } else add("ok", "master key", "opens the database's signing key");
      }
    } catch (err) {
      add("fail", "database", `cannot reach the database: ${(err as Error).message}`, "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL accepts connections from this machine");
    }
  } else add("ok", "database", "embedded (PGlite) in the data directory; checked through the server's /readyz");

  // The public URL, as agents and browsers will use it.
  if (config.publicUrl) {
    try {
      const res = await get(`${config.publicUrl}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
      if (res.ok) add("ok", "public URL", `${config.publicUrl} reaches a control plane`);
      else add("fail", "public URL", `${config.publicUrl}/healthz answers ${res.status}`, "the address must reach this control plane: check the reverse proxy's route");
    } catch (err) {
      add("fail", "public URL", `${config.publicUrl} cannot be reached from here: ${(err as Error).message}`, "agents use this address: check DNS, the reverse proxy, the firewall, and the certificate");
    }
  } else add("warn", "public URL", "REDFLAG_PUBLIC_URL is unset: install commands and links carry the address the server guesses, which other machines may not reach", "set REDFLAG_PUBLIC_URL to the address agents reach (https://redflag.example.com)");
  return findings;
}

export function formatFindings(findings: readonly Finding[]): string {
  const mark = { ok: "ok  ", warn: "warn", fail: "FAIL" } as const;
  return findings.map((f) => `${mark[f.level]}  ${f.check}: ${f.message}${f.fix ? `\n      → ${f.fix}` : ""}`).join("\n") + "\n";
}

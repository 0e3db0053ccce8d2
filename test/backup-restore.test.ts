import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandService, CommandState } from "@redflag/gen/command_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor } from "../control-plane/test/support/control-plane.ts";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { freePort, root, run, startServerProcess, type ServerProcess } from "./support/processes.ts";

// Issue 17, day two: `redflag-server backup` while a real agent keeps polling and commands keep
// being queued, the database and the data directory wiped, `redflag-server restore`, and the
// same agent process carries on: it polls the restored control plane with the credentials it
// holds (renewing them once with a refresh token issued after the backup) and verifies and runs
// a command signed with the restored key. Refusals change nothing.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(availableBackends)("backup and restore on %s", (backend: Backend) => {
  let db: FreshDatabase;
  let work: string;
  let port: number;
  let server: ServerProcess | undefined;
  let agent: ChildProcess | undefined;
  const env = (): Record<string, string> => ({
    REDFLAG_DATA_DIR: db.dataDir,
    ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    REDFLAG_ADDR: `127.0.0.1:${port}`,
    REDFLAG_POLL_INTERVAL: "2s",
  });
  const cli = (args: string[], extra: Record<string, string> = {}) => run(["control-plane/src/main.ts", ...args], { env: { ...env(), ...extra }, timeoutMs: 120_000 });
  // The command with stdin or stdout joined to a file, the passphrase from the environment.
  const pipeCli = (args: string[], files: { in?: string; out?: string }) =>
    new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ["control-plane/src/main.ts", ...args], {
        cwd: root,
        env: { ...process.env, ...env(), REDFLAG_BACKUP_PASSPHRASE: "correct horse battery staple" },
        stdio: ["pipe", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
      if (files.in) createReadStream(files.in).pipe(child.stdin!);
      else child.stdin!.end();
      if (files.out) child.stdout!.pipe(createWriteStream(files.out));
      child.once("error", reject);
      child.once("close", (code) => resolve({ code, stderr }));
    });
  const clients = async () => {
    const adminKey = (await readFile(path.join(db.dataDir, "admin.key"), "utf8")).trim();
    const transport = createConnectTransport({ baseUrl: server!.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${adminKey}` })], defaultTimeoutMs: 10_000 });
    return { commands: createClient(CommandService, transport), tokens: createClient(TokenService, transport), security: createClient(SecurityService, transport) };
  };
  const succeeded = async (commands: Awaited<ReturnType<typeof clients>>["commands"], id: string) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const state = (await commands.getCommand({ id })).command!.state;
      if (state === CommandState.SUCCEEDED) return;
      if (Date.now() > deadline) throw new Error(`command ${id} is ${CommandState[state]} after 60 s`);
      await sleep(250);
    }
  };
  // What the database holds, from outside the control plane: tables on PostgreSQL, files for the embedded one.
  const tableCount = async () => {
    const client = new pg.Client({ connectionString: db.databaseUrl });
    await client.connect();
    try {
      return Number((await client.query("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'")).rows[0].n);
    } finally {
      await client.end();
    }
  };

  const rowsIn = async (table: string) => {
    const client = new pg.Client({ connectionString: db.databaseUrl });
    await client.connect();
    try {
      const exists = (await client.query("SELECT to_regclass($1) AS t", [`public.${table}`])).rows[0].t;
      return exists ? Number((await client.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n) : 0;
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    db = await freshDatabase({ backend });
    work = await mkdtemp(path.join(tmpdir(), "rf-backup-"));
    port = await freePort();
    server = await startServerProcess(env());
  }, 120_000);
  afterAll(async () => {
    agent?.kill("SIGKILL");
    await server?.stop();
    await db?.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  it("restores everything an enrolled agent needs to keep polling and verifying commands", { timeout: 300_000 }, async () => {
    let api = await clients();
    const stateDir = path.join(work, "agent");
    const agentEnv = { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_LONG_POLL_SECONDS: "2", REDFLAG_AGENT_LOG_LEVEL: "info" };
    const { secret } = await api.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", server!.url, "--token", secret, "--state-dir", stateDir], { env: agentEnv });
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = (JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string }).agentId;
    const agentLog: string[] = [];
    const startAgent = () => {
      agent = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], { cwd: root, env: { ...process.env, ...agentEnv }, stdio: ["ignore", "pipe", "pipe"] });
      agent.stdout!.on("data", (d: Buffer) => agentLog.push(d.toString()));
      agent.stderr!.on("data", (d: Buffer) => agentLog.push(d.toString()));
    };
    // The agent renews its credentials (a new refresh token) as it does near its access token's
    // end: stopped, its token made old, started again; resolves once it has renewed.
    const renewNow = async () => {
      const exited = new Promise((resolve) => agent!.once("exit", resolve));
      agent!.kill("SIGTERM");
      await exited;
      const file = path.join(stateDir, "agent.json");
      const saved = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
      await writeFile(file, JSON.stringify({ ...saved, accessTokenIssueTime: new Date(Date.now() - 7_200_000).toISOString(), accessTokenExpireTime: new Date(Date.now() - 3_600_000).toISOString() }));
      const renewed = agentLog.join("").split("access token renewed").length;
      startAgent();
      const deadline = Date.now() + 30_000;
      while (agentLog.join("").split("access token renewed").length === renewed) {
        if (Date.now() > deadline) throw new Error(`the agent did not renew:\n${agentLog.join("")}`);
        await sleep(100);
      }
    };
    startAgent();
    const before = (await api.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    await succeeded(api.commands, before.id);
    const keyId = (await api.security.getSecurityOverview({})).signingKeys.find((k) => k.state === "active")!.keyId;

    // The backup, while the agent polls and commands keep being queued.
    const passphraseFile = path.join(work, "passphrase");
    await writeFile(passphraseFile, "correct horse battery staple\n", { mode: 0o600 });
    const file = path.join(work, "redflag.age");
    let queueing = true;
    const queued: string[] = [];
    const queuer = (async () => {
      while (queueing) {
        queued.push((await api.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!.id);
        await sleep(100);
      }
    })();
    const short = await cli(["backup", path.join(work, "weak.age")], { REDFLAG_BACKUP_PASSPHRASE: "short" });
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/the passphrase is 5 characters long; use at least 12/);
    const taken = await cli(["backup", file, "--passphrase-file", passphraseFile]);
    queueing = false;
    await queuer;
    expect(taken.code, taken.stderr).toBe(0);
    expect(taken.stderr).toMatch(/^backed up \d+ tables and \d+ rows of .* as of /);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await readFile(file)).subarray(0, 21).toString()).toBe("age-encryption.org/v1");
    expect(queued.length).toBeGreaterThan(0);
    for (const id of queued) await succeeded(api.commands, id);
    // The same through a pipe, as a container writes it to the host: `backup - > FILE`.
    const piped = path.join(work, "piped.age");
    const toStdout = await pipeCli(["backup", "-"], { out: piped });
    expect(toStdout.code, toStdout.stderr).toBe(0);
    expect(toStdout.stderr).toMatch(/^backed up \d+ tables/);

    // After the backup the agent gets a refresh token the backup does not hold.
    await renewNow();
    const after = (await api.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    await succeeded(api.commands, after.id);

    // Disaster: the control plane stops and its database and data directory are gone.
    await server!.stop();
    if (db.databaseUrl) {
      const client = new pg.Client({ connectionString: db.databaseUrl });
      await client.connect();
      await client.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
      await client.end();
    }
    await rm(db.dataDir, { recursive: true, force: true });
    await mkdir(db.dataDir, { recursive: true, mode: 0o700 });
    const wiped = async () => (db.databaseUrl ? await tableCount() : (await readdir(db.dataDir)).length);
    expect(await wiped()).toBe(0);

    // A wrong passphrase is refused and changes nothing.
    const wrong = await cli(["restore", file], { REDFLAG_BACKUP_PASSPHRASE: "not the passphrase" });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(`redflag-server restore: the passphrase does not open ${file}\n`);
    expect(await wiped()).toBe(0);

    // A file cut short is refused as damaged, and nothing is restored.
    const cut = path.join(work, "cut.age");
    const whole = await readFile(file);
    await writeFile(cut, whole.subarray(0, whole.length - 100));
    const damaged = await cli(["restore", cut, "--passphrase-file", passphraseFile]);
    expect(damaged.code).toBe(1);
    expect(damaged.stderr).toMatch(/^redflag-server restore: the backup is damaged: it does not decrypt to its end/);
    if (db.databaseUrl) expect(await rowsIn("agents")).toBe(0);
    else expect((await readdir(db.dataDir)).filter((f) => f !== "run")).toEqual([]);

    const restored = await cli(["restore", file, "--passphrase-file", passphraseFile]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stderr).toMatch(/^restored \d+ tables and \d+ rows as of /);
    expect(restored.stderr).toContain("Start the control plane");

    // Restoring again over it is refused without --replace, and changes nothing.
    const again = await cli(["restore", file, "--passphrase-file", passphraseFile]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(db.databaseUrl ? /the database already holds RedFlag data .* pass --replace/ : /already holds a database; pass --replace/);

    // The same agent process carries on with the restored control plane.
    server = await startServerProcess(env());
    api = await clients();
    expect((await api.commands.getCommand({ id: before.id })).command!.state).toBe(CommandState.SUCCEEDED);
    expect((await api.security.getSecurityOverview({})).signingKeys.find((k) => k.state === "active")!.keyId).toBe(keyId);
    const events = await api.security.listSecurityEvents({ type: "backup_restored" });
    expect(events.events[0]?.message).toMatch(/restored from a backup taken at/);
    // It renews with that token: the restored database never saw it, and accepts the agent's
    // signed request once, recording it.
    await renewNow();
    const recovered = await api.security.listSecurityEvents({ type: "agent_recovered_after_restore" });
    expect(recovered.events.map((e) => e.agentId)).toEqual([agentId]);
    const next = (await api.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    await succeeded(api.commands, next.id).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; the agent said:\n${agentLog.join("")}`);
    });
    expect(agentLog.join("")).not.toMatch(/rejected a command|failed verification|credentials were refused/);

    // --replace restores over a database in use, keeping what was there aside.
    await server!.stop();
    // Through a pipe, as into a container: `restore - --replace < FILE`.
    const replaced = await pipeCli(["restore", "-", "--replace"], { in: piped });
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(replaced.stderr).toMatch(db.databaseUrl ? /kept aside: schema redflag_replaced_\d{8}T\d{6}/ : /kept aside: .*pgdata\.replaced-\d{8}T\d{6}/);
    if (db.databaseUrl) {
      const client = new pg.Client({ connectionString: db.databaseUrl });
      await client.connect();
      const ids = async (schema: string) => (await client.query<{ id: string }>(`SELECT id::text FROM "${schema}".commands`)).rows.map((r) => r.id);
      const aside = (await client.query<{ n: string }>("SELECT nspname AS n FROM pg_namespace WHERE nspname LIKE 'redflag_replaced_%'")).rows[0]!.n;
      expect(await ids("public")).not.toContain(next.id);
      expect(await ids(aside)).toContain(next.id);
      await client.query(`DROP SCHEMA "${aside}" CASCADE`);
      await client.end();
    }
    server = await startServerProcess(env());
    api = await clients();
    expect((await api.commands.getCommand({ id: before.id })).command!.state).toBe(CommandState.SUCCEEDED);
  });
});

import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { availableBackends, freshDatabase, type Backend, type FreshDatabase } from "../../test/support/database.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { DEFAULT_MIGRATIONS_DIR, isConnectionError, isUniqueViolation, openDatabase, type Database } from "./db.ts";
import { claimCommands } from "./commands.ts";
import { readMigrations } from "./migrate.ts";

const silent = pino({ level: "silent" });

async function newAgent(prisma: PrismaClient) {
  return prisma.agent.create({
    data: {
      id: randomUUID(),
      hostname: "web-1",
      machineId: randomBytes(32).toString("hex"),
      publicKey: Buffer.from(randomBytes(32)),
      osFamily: "linux",
      osName: "Debian GNU/Linux",
      osVersion: "12",
      kernel: "6.1.0",
      arch: "amd64",
      agentVersion: "0.1.0",
      registeredAt: new Date(),
    },
  });
}

async function newCommands(prisma: PrismaClient, agentId: string, count: number) {
  const base = Date.now();
  await prisma.command.createMany({
    data: Array.from({ length: count }, (_, i) => ({
      id: randomUUID(),
      agentId,
      type: "scan_updates" as const,
      action: Buffer.from([i]),
      createdBy: "test",
      createdAt: new Date(base + i),
    })),
  });
}

// The poll path's claim: CTEs, SKIP LOCKED, a bigint counter, one statement. A delivered
// command comes again only after `leaseMs` (ten minutes unless a test says otherwise).
const claim = (db: Database, agentId: string, limit: number, opts: { leaseMs?: number; maxDeliveries?: number; now?: number; agentSequence?: bigint } = {}) => {
  const now = opts.now ?? Date.now();
  return claimCommands(db.statements, agentId, limit, new Date(now), new Date(now + 600_000), {
    sentBefore: new Date(now - (opts.leaseMs ?? 600_000)),
    sentAfter: new Date(now - 7_200_000),
    maxDeliveries: opts.maxDeliveries ?? 5,
  }, opts.agentSequence);
};

describe.each(availableBackends)("openDatabase on %s", (backend: Backend) => {
  let fresh: FreshDatabase;
  let db: Database;
  const open = () => openDatabase({ databaseUrl: fresh.databaseUrl, dataDir: fresh.dataDir, logger: silent });

  beforeAll(async () => {
    fresh = await freshDatabase({ backend });
    db = await open();
  });

  afterAll(async () => {
    await db?.close();
    await fresh?.cleanup();
  });

  it("applies the repository's migrations and serves Prisma", async () => {
    expect(db.kind).toBe(backend);
    const recorded = await db.pool.query<{ migration_name: string }>(
      `SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL ORDER BY migration_name`,
    );
    const files = await readMigrations(DEFAULT_MIGRATIONS_DIR);
    expect(recorded.rows.map((r) => r.migration_name)).toEqual(files.map((f) => f.name));

    const agent = await newAgent(db.prisma);
    await db.prisma.agent.update({ where: { id: agent.id }, data: { lastSequence: 2n ** 53n + 1n } });
    const read = await db.prisma.agent.findUniqueOrThrow({ where: { id: agent.id } });
    expect(read.lastSequence).toBe(2n ** 53n + 1n);
    expect(Buffer.from(read.publicKey)).toEqual(Buffer.from(agent.publicKey));
    expect(read.registeredAt).toEqual(agent.registeredAt);
  });

  it("numbers commands above the sequence the agent reports, as after a restore from an older backup", async () => {
    const agent = await newAgent(db.prisma);
    await newCommands(db.prisma, agent.id, 3);
    expect((await claim(db, agent.id, 1)).map((c) => c.sequence)).toEqual([1n]);
    // The agent has run up to 40 (the database was restored from a backup taken before that).
    expect((await claim(db, agent.id, 1, { agentSequence: 40n })).map((c) => c.sequence)).toEqual([41n]);
    // A lower report (an older status) never moves the numbers back.
    expect((await claim(db, agent.id, 1, { agentSequence: 7n })).map((c) => c.sequence)).toEqual([42n]);
    // A made-up huge value stays far from bigint's end.
    await newCommands(db.prisma, agent.id, 1);
    expect((await claim(db, agent.id, 1, { agentSequence: 2n ** 64n - 1n })).map((c) => c.sequence)).toEqual([2n ** 62n + 1n]);
  });

  it("claims every command exactly once through its (prepared on PostgreSQL) statement with FOR UPDATE SKIP LOCKED", async () => {
    const agent = await newAgent(db.prisma);
    await newCommands(db.prisma, agent.id, 20);

    const claims = await Promise.all(Array.from({ length: 10 }, () => claim(db, agent.id, 3)));

    const claimed = claims.flat();
    expect(new Set(claimed.map((c) => c.id)).size).toBe(20);
    expect(claimed.map((c) => c.sequence).sort((a, b) => Number(a - b))).toEqual(
      Array.from({ length: 20 }, (_, i) => BigInt(i + 1)),
    );
    const [first] = claimed;
    expect(typeof first!.sequence).toBe("bigint");
    expect(first!.action).toBeInstanceOf(Uint8Array);
    expect(await claim(db, agent.id, 3)).toEqual([]);
  });

  it("delivers a command without a result again once its lease ran out: fresh sequence, same first sequence, at most max_deliveries times", async () => {
    const agent = await newAgent(db.prisma);
    await newCommands(db.prisma, agent.id, 2);
    const t0 = Date.now();
    const first = await claim(db, agent.id, 10, { now: t0 });
    expect(first.map((c) => [c.sequence, c.firstSequence, c.deliveryCount])).toEqual([
      [1n, 1n, 1],
      [2n, 2n, 1],
    ]);
    // Within the lease: nothing, however often the agent polls.
    expect(await claim(db, agent.id, 10, { now: t0 + 500, leaseMs: 1000 })).toEqual([]);
    // One of them got its result; the other comes again, renumbered, keeping its first sequence.
    await db.prisma.command.update({ where: { id: first[0]!.id }, data: { state: "succeeded" } });
    const again = await claim(db, agent.id, 10, { now: t0 + 1500, leaseMs: 1000, maxDeliveries: 3 });
    expect(again.map((c) => [c.id, c.sequence, c.firstSequence, c.deliveryCount])).toEqual([[first[1]!.id, 3n, 2n, 2]]);
    expect(await claim(db, agent.id, 10, { now: t0 + 3000, leaseMs: 1000, maxDeliveries: 3 })).toHaveLength(1);
    // The third delivery was the last: it waits for its result timeout instead of bouncing.
    expect(await claim(db, agent.id, 10, { now: t0 + 4500, leaseMs: 1000, maxDeliveries: 3 })).toEqual([]);
    const row = await db.prisma.command.findUniqueOrThrow({ where: { id: first[1]!.id } });
    expect([row.state, row.deliveryCount, row.sequence, row.firstSequence]).toEqual(["sent", 3, 4n, 2n]);
    // Past the result timeout a command is the sweep's, not the claim's.
    await db.prisma.command.update({ where: { id: row.id }, data: { deliveryCount: 1, sentAt: new Date(t0 - 8_000_000) } });
    expect(await claim(db, agent.id, 10, { now: t0, leaseMs: 1000 })).toEqual([]);
  });

  if (backend === "postgres") it("skips rows another transaction has locked", async () => {
    const agent = await newAgent(db.prisma);
    await newCommands(db.prisma, agent.id, 2);

    await db.prisma.$transaction(async (tx) => {
      const [locked] = await tx.$queryRaw<{ id: string }[]>`
        SELECT id FROM commands WHERE agent_id = ${agent.id}::uuid ORDER BY created_at LIMIT 1 FOR UPDATE`;
      const [other] = await claim(db, agent.id, 10);
      expect(other).toBeDefined();
      expect(other!.id).not.toBe(locked!.id);
    });
  });

  // One PGlite backend serves every connection, so an open transaction holds the whole database:
  // SKIP LOCKED never sees a locked row, and other connections wait instead.
  if (backend === "embedded") it("makes other connections wait while a transaction is open", async () => {
    const agent = await newAgent(db.prisma);
    await newCommands(db.prisma, agent.id, 2);
    let outside: ReturnType<typeof claim> | undefined;
    let outsideDone = false;

    await db.prisma.$transaction(async (tx) => {
      await tx.$queryRaw`SELECT id FROM commands WHERE agent_id = ${agent.id}::uuid FOR UPDATE`;
      outside = claim(db, agent.id, 10).finally(() => (outsideDone = true));
      await sleep(200);
      expect(outsideDone).toBe(false);
    });

    expect(await outside).toHaveLength(2);
  });

  it("recognises unique violations from Prisma and from raw SQL", async () => {
    const agent = await newAgent(db.prisma);
    const duplicate = { ...agent, id: randomUUID() };
    const viaPrisma = await db.prisma.agent.create({ data: duplicate }).catch((err: unknown) => err);
    const viaRaw = await db.prisma.$executeRaw`
      INSERT INTO agents (id, hostname, machine_id, public_key, os_family, os_name, os_version, kernel, arch,
                          agent_version, registered_at, updated_at)
      SELECT ${randomUUID()}::uuid, hostname, machine_id, public_key, os_family, os_name, os_version, kernel, arch,
             agent_version, registered_at, updated_at
        FROM agents WHERE id = ${agent.id}::uuid`.catch((err: unknown) => err);
    const viaPg = await db.pool.query("INSERT INTO agents SELECT * FROM agents WHERE id = $1", [agent.id]).catch((err: unknown) => err);
    const foreignKey = await db.prisma.command
      .create({ data: { id: randomUUID(), agentId: randomUUID(), type: "reboot", action: Buffer.alloc(0), createdBy: "t" } })
      .catch((err: unknown) => err);

    expect([viaPrisma, viaRaw, viaPg].map(isUniqueViolation)).toEqual([true, true, true]);
    expect(isUniqueViolation(foreignKey)).toBe(false);
    expect([viaPrisma, viaRaw, viaPg, foreignKey].map(isConnectionError)).toEqual([false, false, false, false]);
  });

  if (backend === "postgres") it("recognises a connection the server terminated", async () => {
    const running = db.prisma.$queryRaw`SELECT pg_sleep(10)`.catch((err: unknown) => err);
    await sleep(200);
    await db.pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    expect(isConnectionError(await running)).toBe(true);
  });

  // Last: it replaces the shared database. For the embedded one this is a full stop and restart.
  it("keeps the data across close and reopen and applies no migration twice", async () => {
    const agent = await newAgent(db.prisma);
    await db.close();

    db = await open();

    expect((await db.prisma.agent.findUniqueOrThrow({ where: { id: agent.id } })).hostname).toBe("web-1");
    const recorded = await db.pool.query(`SELECT 1 FROM "_prisma_migrations"`);
    expect(recorded.rowCount).toBe((await readMigrations(DEFAULT_MIGRATIONS_DIR)).length);
  });
});

describe("openDatabase start-up errors", () => {
  it("names the PostgreSQL it cannot reach, without the password", async () => {
    const err = await openDatabase({
      databaseUrl: "postgres://redflag:s3cret@127.0.0.1:1/redflag?sslmode=disable",
      dataDir: "/nonexistent",
      logger: silent,
    }).catch((e: unknown) => e as Error);

    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(
      /^cannot connect to PostgreSQL at postgres:\/\/redflag@127\.0\.0\.1:1\/redflag: connect ECONNREFUSED/,
    );
    expect((err as Error).message).not.toContain("s3cret");
    expect(isConnectionError(err)).toBe(true);
  });
});

describe("error classification", () => {
  const prismaError = (code: string, cause: object) => Object.assign(new Error("x"), { code, meta: { driverAdapterError: { cause } } });

  it.each([
    ["Prisma P1001", Object.assign(new Error("Can't reach database server"), { code: "P1001" })],
    ["Prisma P1017", Object.assign(new Error("Server has closed the connection."), { code: "P1017" })],
    ["Prisma P2028", Object.assign(new Error("Transaction API error: Unable to start a transaction in the given time."), { code: "P2028" })],
    ["raw query 57P01", prismaError("P2010", { originalCode: "57P01", kind: "postgres" })],
    ["adapter ConnectionClosed", prismaError("P2010", { kind: "ConnectionClosed" })],
    ["pg 57P01", Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" })],
    ["pg 08006", Object.assign(new Error("connection failure"), { code: "08006" })],
    ["ECONNREFUSED", Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" })],
    ["socket gone", Object.assign(new Error("connect ENOENT /x/.s.PGSQL.5432"), { code: "ENOENT", syscall: "connect" })],
    ["pg terminated", new Error("Connection terminated unexpectedly")],
    ["wrapped", new Error("outer", { cause: new Error("Connection terminated due to connection timeout") })],
    ["several addresses", new AggregateError([Object.assign(new Error(""), { code: "ECONNREFUSED" })])],
  ])("%s is a connection error", (_, err) => {
    expect(isConnectionError(err)).toBe(true);
    expect(isUniqueViolation(err)).toBe(false);
  });

  it.each([
    ["a missing file", Object.assign(new Error("ENOENT"), { code: "ENOENT", syscall: "open" })],
    ["a syntax error", Object.assign(new Error("syntax error"), { code: "42601" })],
    ["a record not found", Object.assign(new Error("not found"), { code: "P2025" })],
    ["not an error", "Connection terminated"],
    ["nothing", undefined],
  ])("%s is not a connection error", (_, err) => {
    expect(isConnectionError(err)).toBe(false);
  });

  it.each([
    ["Prisma P2002", Object.assign(new Error("Unique constraint failed"), { code: "P2002" })],
    ["raw query 23505", prismaError("P2010", { originalCode: "23505", kind: "UniqueConstraintViolation" })],
    ["pg 23505", Object.assign(new Error("duplicate key"), { code: "23505" })],
  ])("%s is a unique violation", (_, err) => {
    expect(isUniqueViolation(err)).toBe(true);
  });
});

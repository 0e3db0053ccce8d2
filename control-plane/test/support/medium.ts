// Medium tests: the domain layer on a real database (the embedded one, and PostgreSQL when
// TEST_DATABASE_URL names one), without an HTTP server. A handler context stands in for the
// RPC that would have called it.
import { createContextValues, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import { kPrincipal, kRemoteAddr } from "../../src/auth/context.ts";
import type { AuditHook } from "../../src/domain/audit.ts";
import type { CommandCaller } from "../../src/domain/commands.ts";
import type { Wakeups } from "../../src/cluster/wakeups.ts";
import { audit } from "../../src/services/audit.ts";
import { newId } from "../../src/ids.ts";
import { openDatabase, type Database } from "../../src/store/db.ts";
import type { Statements } from "../../src/store/statements.ts";
import type { Prisma } from "../../src/store/types.ts";
import { freshDatabase, type Backend, type FreshDatabase } from "./database.ts";

export interface MediumDatabase {
  db: Prisma;
  // The pool's prepared statements (store functions of the hot paths take them).
  sql: Statements;
  close(): Promise<void>;
}

export async function openMediumDatabase(backend: Backend): Promise<MediumDatabase> {
  const fresh: FreshDatabase = await freshDatabase({ backend });
  let database: Database | undefined;
  try {
    database = await openDatabase({ databaseUrl: fresh.databaseUrl, dataDir: fresh.dataDir, logger: pino({ level: "silent" }), poolMax: 4 });
  } catch (err) {
    await fresh.cleanup();
    throw err;
  }
  return {
    db: database.prisma,
    sql: database.statements,
    async close() {
      await database.close();
      await fresh.cleanup();
    },
  };
}

// A fresh database for the tests of the calling describe block, opened before them and closed
// after them; `db` is set once they run.
export function mediumDatabase(backend: Backend): { db: Prisma; sql: Statements } {
  const holder = {} as { db: Prisma; sql: Statements };
  let opened: MediumDatabase | undefined;
  beforeAll(async () => {
    opened = await openMediumDatabase(backend);
    holder.db = opened.db;
    holder.sql = opened.sql;
  });
  afterAll(async () => {
    await opened?.close();
  });
  return holder;
}

// The context of an RPC of `service` made by an admin called oscar.
export function adminContext(methodName: string, service: DescService = FleetService): HandlerContext {
  const method = service.methods.find((m) => m.name === methodName);
  if (!method) throw new Error(`${service.typeName} has no method ${methodName}`);
  const contextValues = createContextValues()
    .set(kPrincipal, { kind: "session", role: "admin", name: "oscar", userId: newId(), credentialId: newId() })
    .set(kRemoteAddr, "192.0.2.7");
  return createHandlerContext({ service, method, protocolName: "connect", requestMethod: "POST", url: `http://test/${service.typeName}/${method.name}`, contextValues });
}

// The audit hook an adapter would pass: an entry by oscar for `methodName` of `service` about
// `target`, with what the domain hands it (through `after`) as its after state.
export function auditAs<T>(methodName: string, service: DescService, target: string, after: (done: T) => unknown = () => undefined): AuditHook<T> {
  return (tx, done) => audit(tx, adminContext(methodName, service), { target, after: after(done) });
}

// An enrolled agent, written straight into the database.
export async function insertAgent(db: Prisma, hostname: string): Promise<{ id: string; machineId: string }> {
  const id = newId();
  const machineId = randomBytes(32).toString("hex");
  await db.agent.create({
    data: {
      id,
      hostname,
      machineId,
      publicKey: Buffer.alloc(32),
      osFamily: "linux",
      osName: "Debian",
      osVersion: "12",
      kernel: "6.1",
      arch: "x86_64",
      agentVersion: "0.1.0",
      registeredAt: new Date(),
    },
  });
  return { id, machineId };
}

export async function insertUpdate(db: Prisma, agentId: string, name: string, opts: { status?: string } = {}): Promise<void> {
  await db.packageUpdate.create({
    data: {
      agentId,
      source: "apt",
      name,
      architecture: "amd64",
      currentVersion: "1.0",
      availableVersion: "1.1",
      repository: "debian",
      severity: "important",
      security: false,
      sizeBytes: 1000n,
      rebootRequired: false,
      status: opts.status ?? "pending",
    },
  });
}

// Makes every insert into `table` fail from now on (a trigger raising an error): a write that
// comes later in a transaction fails after the earlier ones succeeded. Returns the undo.
export async function failInsertsInto(db: Prisma, table: "audit_entries" | "security_events"): Promise<() => Promise<void>> {
  await db.$executeRawUnsafe(`CREATE OR REPLACE FUNCTION redflag_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`);
  await db.$executeRawUnsafe(`CREATE TRIGGER redflag_test_refuse BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION redflag_test_refuse()`);
  return async () => {
    await db.$executeRawUnsafe(`DROP TRIGGER redflag_test_refuse ON ${table}`);
  };
}

// Oscar, an admin, queueing a command through `method` of the CommandService (the caller
// createCommandQueue's queue takes), audited as the adapter would.
export function oscarQueues(method: string): CommandCaller {
  return {
    role: "admin",
    keyScope: "user:oscar",
    creator: { createdBy: "oscar", createdByKind: "person" },
    record: (tx, { row }) => auditAs(method, CommandService, `agent:${row.agentId}`)(tx, undefined),
  };
}

// A long-poll wake-up nobody listens to.
export const noWakeups = { notify: () => {} } as unknown as Wakeups;

// A ScanUpdates action, as a CreateCommand request carries it.
export const scanAction = { case: "scanUpdates" as const, value: { $typeName: "redflag.v1.ScanUpdates" as const, subsystems: [] } };

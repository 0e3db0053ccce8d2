import type { CommandCreator, CommandState, CommandType } from "../generated/prisma/client.ts";
import { newId } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import {
  applyStagedScan,
  SMALL_SCAN_ROWS,
  BATCH_TX,
  recordSmallScan,
  statementsRunner,
  transactionRunner,
  completeUpload,
  dropStagedScan,
  stageWhole,
  withScanLease,
  type Budget,
  type PackageUpdateInput,
  type Staged,
} from "./scans.ts";
import { recordSecurityEvent } from "./security-events.ts";
import { enqueueNotification } from "./notifications.ts";
import type { Statements } from "./statements.ts";
import { bytes, type Prisma, type Tx } from "./types.ts";

export interface CreateCommandInput {
  agentId: string;
  type: CommandType;
  action: Uint8Array;
  timeoutSeconds: number;
  createdBy: string;
  createdByKind: CommandCreator;
}

// A CreateCommand idempotency key, scoped to its caller.
export interface IdempotencyKey {
  caller: string;
  key: string;
  // SHA-256 of the request without the key.
  requestHash: Uint8Array;
  // Keys used before this are forgotten: the same key queues a new command.
  usedAfter: Date;
}

// Why a command was not stored: its agent is unknown or decommissioned.
export type CommandRefused = { refused: "missing_agent" | "decommissioned" };

// Queues a command under an idempotency key: a key this caller already used for the same
// request returns that command (replayed) instead of queueing another; for another request it
// is not used (`conflict` names the command it queued). Two creates racing with one key queue
// one command: the loser's insert of the key fails, its transaction (and command) rolls back,
// and it returns the winner's. `then` writes what goes with a new command (its audit entry) in
// the same transaction; a replay writes nothing.
// `place` stores the command in the transaction (by default a new row); it may instead merge
// the request into a command already pending (merged), which the key then remembers.
export async function createCommandOnce(
  db: Prisma,
  input: CreateCommandInput,
  idempotency: IdempotencyKey,
  then: (tx: Tx, row: CommandRow) => Promise<void> = async () => {},
  place: (tx: Tx) => Promise<Placed> = async (tx) => ({ row: await insertCommand(tx, input), merged: false }),
): Promise<{ row: CommandRow; replayed: boolean; merged: boolean } | { conflict: string } | CommandRefused> {
  const agent = await findAgent(db, input.agentId);
  if (!agent) return { refused: "missing_agent" };
  if (agent.decommissionedAt) return { refused: "decommissioned" };
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.$transaction(async (tx) => {
        const where = { caller_key: { caller: idempotency.caller, key: idempotency.key } };
        let used = await tx.commandIdempotencyKey.findUnique({ where, include: { command: { include: { result: true } } } });
        if (used && used.createdAt < idempotency.usedAfter) {
          await tx.commandIdempotencyKey.delete({ where });
          used = null;
        }
        if (used) {
          if (!Buffer.from(used.requestHash).equals(Buffer.from(idempotency.requestHash))) return { conflict: used.commandId };
          return { row: used.command, replayed: true, merged: used.merged };
        }
        const { row, merged } = await place(tx);
        await tx.commandIdempotencyKey.create({
          data: { caller: idempotency.caller, key: idempotency.key, requestHash: bytes(idempotency.requestHash), commandId: row.id, merged },
        });
        await then(tx, row);
        return { row, replayed: false, merged };
      });
    } catch (err) {
      if (attempt === 0 && isUniqueViolation(err)) continue;
      throw err;
    }
  }
}

// Queues a command for an agent that exists and is not decommissioned.
export async function createCommand(db: Prisma | Tx, input: CreateCommandInput): Promise<CommandRow | CommandRefused> {
  const agent = await findAgent(db, input.agentId);
  if (!agent) return { refused: "missing_agent" };
  if (agent.decommissionedAt) return { refused: "decommissioned" };
  return insertCommand(db, input);
}

// A command as placed in the queue: a new row, or one already pending that took the request in.
export interface Placed {
  row: CommandRow;
  merged: boolean;
}

// Holds the agent's queue until the transaction ends, so that two creates for one agent look
// for a pending command of their kind one after the other (a transaction-scoped advisory lock:
// PollCommands' claim does not take it, so a poll never waits on it).
export async function lockAgentQueue(tx: Tx, agentId: string): Promise<void> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_queue'), hashtext(${agentId}))`;
}

// The agent's pending (undelivered) commands of this type, oldest first, locked until the
// transaction ends: a poll claiming one meanwhile skips it, and one that claimed it first wins
// (then it is not pending).
export async function lockPendingCommands(tx: Tx, agentId: string, type: CommandType, limit = 1000): Promise<CommandRow[]> {
  const found = await tx.$queryRaw<{ id: string }[]>`
    SELECT id::text FROM commands
     WHERE agent_id = ${agentId}::uuid AND type = ${type}::command_type AND state = 'pending'
     ORDER BY created_at, id
     LIMIT ${limit}
       FOR UPDATE`;
  if (found.length === 0) return [];
  const rows = await tx.command.findMany({ where: { id: { in: found.map((f) => f.id) } }, include: { result: true } });
  return rows.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id));
}

// Replaces a pending command's action (a request merged into it).
export async function replacePendingAction(tx: Tx, id: string, action: Uint8Array, timeoutSeconds: number): Promise<CommandRow> {
  return tx.command.update({ where: { id }, data: { action: Buffer.from(action), timeoutSeconds }, include: { result: true } });
}

const findAgent = (db: Prisma | Tx, agentId: string) => db.agent.findUnique({ where: { id: agentId }, select: { decommissionedAt: true } });

function insertCommand(db: Tx | Prisma, input: CreateCommandInput) {
  return db.command.create({
    data: { id: newId(), ...input, action: Buffer.from(input.action) },
    include: { result: true },
  });
}

// Cancels the command if it is still pending; false when it is not (or does not exist).
export async function cancelPendingCommand(db: Prisma | Tx, id: string, now: Date): Promise<boolean> {
  return (await db.command.updateMany({ where: { id, state: "pending" }, data: { state: "cancelled", finishedAt: now } })).count > 0;
}

// Deletes finished commands (and with them their results) created before `before`; returns how many.
export async function pruneFinishedCommands(db: Prisma, before: Date): Promise<number> {
  return (await db.command.deleteMany({ where: { state: { in: ["succeeded", "failed", "rejected", "timed_out", "cancelled"] }, createdAt: { lt: before } } })).count;
}

// Forgets idempotency keys used before `before`; returns how many.
export async function pruneIdempotencyKeys(db: Prisma, before: Date): Promise<number> {
  return (await db.commandIdempotencyKey.deleteMany({ where: { createdAt: { lt: before } } })).count;
}

export interface ClaimedCommand {
  id: string;
  sequence: bigint;
  // The sequence of the command's first delivery (equal to sequence on the first one).
  firstSequence: bigint;
  // 1 on the first delivery, more when it is delivered again.
  deliveryCount: number;
  action: Uint8Array;
}

// When a delivered command without a result may be delivered again: the claim committed SENT
// before the response reached the agent, and that response can be lost (a crash, a dropped
// connection), so delivery is at least once and the agent's journal makes running it once.
export interface Redelivery {
  // Sent before this, with no result since: the lease ran out.
  sentBefore: Date;
  // Sent before this is the sweep's to time out, not to deliver again.
  sentAfter: Date;
  // Deliveries a command gets at most; then it waits for its result timeout.
  maxDeliveries: number;
}

// One statement claims up to `limit` commands of one agent, pending ones and delivered ones
// whose lease ran out, and numbers them with fresh sequence numbers. SKIP LOCKED keeps
// concurrent polls (and replicas) from taking the same row, and a result being recorded holds
// its row; the agents row update serialises sequence allocation so numbers never repeat.
// `agentSequence` is the last sequence the agent says it executed: numbering starts above it as
// well, so after a restore from a backup (whose counters are older than what the agent has
// seen) its commands are not refused as replays. An agent can only move its own numbers up.
export async function claimCommands(
  sql: Statements,
  agentId: string,
  limit: number,
  sentAt: Date,
  expiresAt: Date,
  again: Redelivery,
  agentSequence = 0n,
): Promise<ClaimedCommand[]> {
  const rows = await sql.rows<{ id: string; sequence: string; first_sequence: string; delivery_count: number; action: Buffer }>(
    "redflag_claim_commands",
    CLAIM_COMMANDS,
    [agentId, limit, sentAt, expiresAt, again.sentBefore, again.maxDeliveries, again.sentAfter, (agentSequence > MAX_AGENT_SEQUENCE ? MAX_AGENT_SEQUENCE : agentSequence).toString()],
  );
  return rows
    .map((r) => ({ id: r.id, sequence: BigInt(r.sequence), firstSequence: BigInt(r.first_sequence), deliveryCount: Number(r.delivery_count), action: r.action }))
    .sort((a, b) => (a.sequence < b.sequence ? -1 : 1));
}

// Pending, or delivered and due again: what the claim hands out and the pending index looks for.
const claimable = (sentBefore: string, maxDeliveries: string, sentAfter: string) =>
  `(state = 'pending' OR (state = 'sent' AND sent_at < ${sentBefore}::timestamptz AND sent_at >= ${sentAfter}::timestamptz AND delivery_count < ${maxDeliveries}::int))`;

// Far below bigint's end, so adding a claim's count never overflows.
const MAX_AGENT_SEQUENCE = 2n ** 62n;

const CLAIM_COMMANDS = `
    WITH picked AS (
      SELECT id, created_at FROM commands
       WHERE agent_id = $1::uuid AND ${claimable("$5", "$6", "$7")}
       ORDER BY created_at, id
       LIMIT $2::int
       FOR UPDATE SKIP LOCKED
    ), numbered AS (
      SELECT id, row_number() OVER (ORDER BY created_at, id) AS rn, count(*) OVER () AS n FROM picked
    ), bumped AS (
      UPDATE agents SET last_sequence = GREATEST(last_sequence, $8::bigint) + (SELECT count(*) FROM picked)
       WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM picked)
       RETURNING last_sequence
    )
    UPDATE commands AS c
       SET state = 'sent',
           sequence = bumped.last_sequence - numbered.n + numbered.rn,
           first_sequence = COALESCE(c.first_sequence, bumped.last_sequence - numbered.n + numbered.rn),
           sent_at = $3::timestamptz,
           expires_at = $4::timestamptz,
           delivery_count = c.delivery_count + 1
      FROM numbered, bumped
     WHERE c.id = numbered.id
    RETURNING c.id::text, c.sequence::text, c.first_sequence::text, c.delivery_count, c.action`;

// Every agent with at least one command to hand out, queued or due again (the pending index's
// resync, so an idle poll never has to look).
export async function agentsWithPendingCommands(db: Prisma, again: Redelivery): Promise<string[]> {
  const rows = await db.$queryRawUnsafe<{ id: string }[]>(
    `SELECT DISTINCT agent_id::text AS id FROM commands WHERE ${claimable("$1", "$2", "$3")}`,
    again.sentBefore,
    again.maxDeliveries,
    again.sentAfter,
  );
  return rows.map((r) => r.id);
}

// Returns a claimed command to the queue when its delivery could not be prepared; the
// delivery it never had does not count.
export async function unclaimCommands(db: Prisma, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.command.updateMany({ where: { id: { in: ids }, state: "sent" }, data: { state: "pending", deliveryCount: { decrement: 1 } } });
}

export interface IncomingResult {
  commandId: string;
  outcome: "succeeded" | "failed" | "rejected";
  message: string;
  startedAt: Date | null;
  finishedAt: Date | null;
  bytes: Uint8Array;
  // The updates a scan_updates result found; a succeeded one replaces the view of its sources.
  scan: ScanInput | undefined;
  // A scan's host readings, when it ran "system" or "storage".
  metrics: MetricsInput | undefined;
  // What an install, confirm or rollback did to each package it installed or failed.
  packages: PackageEventInput[];
}

export interface ScanInput {
  // The updates of a scan sent whole; empty for one sent in parts.
  updates: PackageUpdateInput[];
  // How many ScanParts carry the updates (staged by stagePart); 0 for a scan sent whole.
  parts: number;
  // The sources whose view the scan replaces.
  sources: string[];
}

export type { PackageUpdateInput };

export interface MetricsInput {
  // Serialized redflag.v1.SystemMetrics and redflag.v1.StorageMetrics; null when not read.
  system: Uint8Array | null;
  storage: Uint8Array | null;
  // The system reading's reboot flag; undefined without one.
  rebootRequired: boolean | undefined;
}

export interface PackageEventInput {
  kind: "installed" | "failed";
  source: string;
  name: string;
  architecture: string;
  version: string;
}

export interface RecordOutcome {
  acknowledged: string[];
  refused: { commandId: string; reason: string }[];
  // Scans not recorded yet: sent in parts that still lack some, or applied part-way (none missing).
  incomplete: IncompleteScan[];
}

export interface IncompleteScan {
  scanId: string;
  missing: number[];
}

// A succeeded scan replaces the view of its sources; other results are stored as they are.
const appliesScan = (result: IncomingResult) => result.scan !== undefined && result.outcome === "succeeded";

// Stores results idempotently. Only commands delivered to this agent accept a result; a
// result that is already stored is acknowledged again without change. The results of
// succeeded scans are stored once their scan is applied to the view, each on its own (see
// recordScanResult), so this transaction stays short whatever the scans hold.
export async function recordResults(
  db: Prisma,
  sql: Statements,
  agentId: string,
  results: IncomingResult[],
  now: Date,
  remoteAddr: string,
  budget: Budget,
): Promise<RecordOutcome> {
  const plain = await recordPlainResults(sql, agentId, results, now);
  if (plain.size === results.length) return { acknowledged: results.map((r) => r.commandId), refused: [], incomplete: [] };
  const rest = plain.size === 0 ? results : results.filter((r) => !plain.has(r.commandId));
  const outcome = await recordEachResult(db, agentId, rest, now, remoteAddr, budget);
  return { ...outcome, acknowledged: [...plain, ...outcome.acknowledged] };
}

// Plain results (no scan, readings or package events; not an install, which sends a
// notification) of commands delivered to this agent and not answered yet, in one prepared
// statement: a batch of command results as one round trip. The commands' rows are locked as the
// transaction below locks them, and a result stored meanwhile by a retry is left alone (ON
// CONFLICT), so the two paths never store one twice. Returns the commands it recorded; every
// other result (another agent's command, one not delivered yet, one already answered, anything
// with more to store) goes through the transaction, which says why.
async function recordPlainResults(sql: Statements, agentId: string, results: IncomingResult[], now: Date): Promise<Set<string>> {
  const plain = results.filter((r) => r.scan === undefined && r.metrics === undefined && r.packages.length === 0);
  if (plain.length === 0) return new Set();
  const rows = await sql.rows<{ id: string }>("record_plain_results", RECORD_PLAIN_RESULTS, [
    agentId,
    plain.map((r) => r.commandId),
    plain.map((r) => r.outcome),
    plain.map((r) => r.message),
    plain.map((r) => r.startedAt),
    plain.map((r) => r.finishedAt),
    plain.map((r) => Buffer.from(r.bytes)),
    now,
  ]);
  return new Set(rows.map((r) => r.id));
}

const RECORD_PLAIN_RESULTS = `
WITH input AS (
  SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bytea[])
      AS i(command_id, outcome, message, started_at, finished_at, result)
), target AS (
  SELECT c.id FROM commands c
   WHERE c.id IN (SELECT command_id FROM input) AND c.agent_id = $1::uuid
     AND c.state <> 'pending' AND c.type <> 'install_updates'
   ORDER BY c.id
   FOR UPDATE OF c
), stored AS (
  INSERT INTO command_results (command_id, agent_id, outcome, message, started_at, finished_at, result)
  SELECT i.command_id, $1::uuid, i.outcome, i.message, i.started_at, i.finished_at, i.result
    FROM input i JOIN target t ON t.id = i.command_id
  ON CONFLICT (command_id) DO NOTHING
  RETURNING command_id
)
UPDATE commands c
   SET finished_at = COALESCE(i.finished_at, $8),
       -- A cancelled command keeps its state; a late result still moves timed_out to what happened.
       state = CASE WHEN c.state = 'cancelled' THEN c.state ELSE i.outcome::command_state END
  FROM stored s JOIN input i ON i.command_id = s.command_id
 WHERE c.id = s.command_id
RETURNING c.id`;

// Results one by one in a transaction, for what the set-based path leaves (recordPlainResults).
async function recordEachResult(
  db: Prisma,
  agentId: string,
  results: IncomingResult[],
  now: Date,
  remoteAddr: string,
  budget: Budget,
): Promise<RecordOutcome> {
  const scans: IncomingResult[] = [];
  const outcome = await db.$transaction(async (tx) => {
    const ids = results.map((r) => r.commandId);
    const rows = await tx.$queryRaw<{ id: string; agent_id: string; state: CommandState; has_result: boolean }[]>`
      SELECT c.id, c.agent_id, c.state, (r.command_id IS NOT NULL) AS has_result
        FROM commands c LEFT JOIN command_results r ON r.command_id = c.id
       WHERE c.id = ANY(${ids}::uuid[])
       ORDER BY c.id
       FOR UPDATE OF c`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    const outcome: RecordOutcome = { acknowledged: [], refused: [], incomplete: [] };
    for (const result of results) {
      const row = byId.get(result.commandId);
      if (!row || row.agent_id !== agentId) {
        if (row) {
          await recordSecurityEvent(tx, {
            type: "result_for_foreign_command",
            severity: "warning",
            message: "an agent reported a result for a command of another agent",
            agentId,
            remoteAddr,
            detail: { commandId: result.commandId },
          });
        }
        outcome.refused.push({ commandId: result.commandId, reason: "no such command was delivered to this agent" });
        continue;
      }
      if (row.has_result) {
        outcome.acknowledged.push(result.commandId);
        continue;
      }
      if (row.state === "pending") {
        outcome.refused.push({ commandId: result.commandId, reason: "the command has not been delivered yet" });
        continue;
      }
      if (appliesScan(result)) {
        scans.push(result);
        continue;
      }
      await storeResult(tx, agentId, row.state, result, now);
      outcome.acknowledged.push(result.commandId);
    }
    return outcome;
  });
  for (const result of results) {
    // Parts of a scan whose result is stored without them (a failed scan, or one recorded
    // before and sent again) are of no more use.
    if (result.scan && result.scan.parts > 0 && outcome.acknowledged.includes(result.commandId)) {
      await dropStagedScan(db, agentId, result.commandId);
    }
  }
  for (const result of scans) {
    const recorded = await recordScanResult(db, agentId, result, now, budget);
    if (recorded === "recorded") outcome.acknowledged.push(result.commandId);
    else outcome.incomplete.push({ scanId: result.commandId, missing: recorded.missing });
  }
  return outcome;
}

// Applies a succeeded scan's updates to the view, then stores its result, under the agent's
// scan lease. A scan in parts with a part not staged is left alone: the missing parts. A scan
// too big to apply within the call's budget is applied part-way: no part missing, send it again.
async function recordScanResult(
  db: Prisma,
  agentId: string,
  result: IncomingResult,
  now: Date,
  budget: Budget,
): Promise<"recorded" | { missing: number[] }> {
  const scan = result.scan!;
  return withScanLease(db, agentId, async (lease) => {
    // Another request (a retry) may have recorded it while this one waited for the lease.
    if (await db.commandResult.findUnique({ where: { commandId: result.commandId }, select: { commandId: true } })) return "recorded";
    const application = { sources: scan.sources, time: now, commandId: result.commandId, rebootRequired: result.metrics?.rebootRequired };
    const finish = async (tx: Tx) => {
      const [row] = await tx.$queryRaw<{ state: CommandState; has_result: boolean }[]>`
        SELECT c.state, (r.command_id IS NOT NULL) AS has_result
          FROM commands c LEFT JOIN command_results r ON r.command_id = c.id
         WHERE c.id = ${result.commandId}::uuid
         FOR UPDATE OF c`;
      if (row && !row.has_result) await storeResult(tx, agentId, row.state, result, now);
    };
    if (scan.parts === 0) {
      // One transaction: the scan time and the command's result are recorded together or not at all.
      const recorded = await db.$transaction(async (tx) => {
        if ((await recordSmallScan(transactionRunner(tx), agentId, scan.updates, application, { newerOnly: false, leaseHeld: true })) !== "recorded") return false;
        await finish(tx);
        return true;
      }, BATCH_TX);
      if (recorded) return "recorded";
    }
    const staged = await stagedScan(db, agentId, result.commandId, scan);
    if ("missing" in staged) return staged;
    const applied = await applyStagedScan(db, lease, staged.uploadId, application, budget, finish);
    return applied ? "recorded" : { missing: [] };
  });
}

// A scan in parts is ready once every part is staged; a scan sent whole is staged now.
async function stagedScan(db: Prisma, agentId: string, scanId: string, scan: ScanInput): Promise<Staged> {
  if (scan.parts > 0) return completeUpload(db, agentId, scanId, scan.parts);
  return { uploadId: await stageWhole(db, agentId, scanId, scan.updates) };
}

async function storeResult(tx: Tx, agentId: string, state: CommandState, result: IncomingResult, now: Date) {
  const finishedAt = result.finishedAt ?? now;
  await tx.commandResult.create({
    data: {
      commandId: result.commandId,
      agentId,
      outcome: result.outcome,
      message: result.message,
      startedAt: result.startedAt,
      finishedAt: result.finishedAt,
      result: Buffer.from(result.bytes),
    },
  });
  // A cancelled command keeps its state; a late result still moves timed_out to what happened.
  const command = await tx.command.update({
    where: { id: result.commandId },
    data: {
      finishedAt,
      ...(state === "cancelled" ? {} : { state: result.outcome }),
    },
    select: { type: true },
  });
  if (command.type === "install_updates") await enqueueNotification(tx, installEvent(agentId, result));
  if (result.metrics) await recordMetricSamples(tx, agentId, [{ id: result.commandId, time: finishedAt, metrics: result.metrics }]);
  if (result.packages.length > 0) {
    await tx.updateEvent.createMany({ data: result.packages.map((p) => ({ agentId, time: finishedAt, commandId: result.commandId, ...p })) });
  }
  // An applied scan set the reboot flag with the view.
  const rebootRequired = result.metrics?.rebootRequired;
  if (!appliesScan(result) && rebootRequired !== undefined) {
    await tx.agent.update({ where: { id: agentId }, data: { rebootRequired } });
  }
}

// One insert for a call's readings. The ID is the command's or the scan report's, so a report
// the agent sends again (its acknowledgement was lost) is stored once.
async function recordMetricSamples(tx: Tx, agentId: string, samples: { id: string; time: Date; metrics: MetricsInput }[]) {
  if (samples.length === 0) return;
  await tx.metricSample.createMany({
    data: samples.map((s) => ({
      id: s.id,
      agentId,
      time: s.time,
      system: s.metrics.system ? bytes(s.metrics.system) : null,
      storage: s.metrics.storage ? bytes(s.metrics.storage) : null,
    })),
    skipDuplicates: true,
  });
}

export interface IncomingScan {
  id: string;
  scanTime: Date;
  scan: ScanInput;
  metrics?: MetricsInput | undefined;
}

// Applies scheduled scans in time order, each on its own under the agent's scan lease. A report
// older than the view already stored (a late retry) is acknowledged without replacing the newer
// view, so re-sending is always safe. Its readings are history and are kept either way (once per
// report). A report in parts with a part not staged, or too big to apply within the call's
// budget, is not acknowledged (incomplete).
export async function recordScanReports(
  db: Prisma,
  sql: Statements,
  agentId: string,
  scans: IncomingScan[],
  budget: Budget,
): Promise<{ acknowledged: string[]; incomplete: IncompleteScan[] }> {
  const ordered = [...scans].sort((a, b) => a.scanTime.getTime() - b.scanTime.getTime());
  const out: { acknowledged: string[]; incomplete: IncompleteScan[] } = { acknowledged: [], incomplete: [] };
  for (const report of ordered) {
    const readings = (tx: Tx) =>
      recordMetricSamples(tx, agentId, report.metrics ? [{ id: report.id, time: report.scanTime, metrics: report.metrics }] : []);
    const application = { sources: report.scan.sources, time: report.scanTime, commandId: null, rebootRequired: report.metrics?.rebootRequired };
    // Most reports are small (and repeat the view): one statement writes them, or finds them
    // older, taking and leaving the lease within itself.
    if (report.scan.parts === 0 && budget.rows >= SMALL_SCAN_ROWS && (await recordSmallScan(statementsRunner(sql), agentId, report.scan.updates, application, { newerOnly: true, leaseHeld: false })) !== "changed") {
      budget.rows -= SMALL_SCAN_ROWS;
      await readings(db);
      out.acknowledged.push(report.id);
      continue;
    }
    const recorded = await withScanLease(db, agentId, async (lease) => {
      const agent = await db.agent.findUnique({ where: { id: agentId }, select: { lastScanAt: true } });
      if (agent?.lastScanAt && report.scanTime <= agent.lastScanAt) {
        await readings(db);
        if (report.scan.parts > 0) await dropStagedScan(db, agentId, report.id);
        return "recorded" as const;
      }
      const staged = await stagedScan(db, agentId, report.id, report.scan);
      if ("missing" in staged) return staged;
      const applied = await applyStagedScan(db, lease, staged.uploadId, application, budget, readings);
      return applied ? ("recorded" as const) : { missing: [] };
    });
    if (recorded === "recorded") out.acknowledged.push(report.id);
    else out.incomplete.push({ scanId: report.id, missing: recorded.missing });
  }
  return out;
}

// Sent commands that never got a result become timed_out; returns which.
export async function sweepTimedOut(db: Prisma, sentBefore: Date, now: Date): Promise<{ id: string; agentId: string }[]> {
  return db.$queryRaw<{ id: string; agentId: string }[]>`
    UPDATE commands SET state = 'timed_out', finished_at = ${now}
     WHERE state = 'sent' AND sent_at < ${sentBefore}
    RETURNING id, agent_id AS "agentId"`;
}

export async function listCommands(
  db: Prisma,
  filter: { agentId?: string | undefined; state?: CommandState | undefined },
  pageSize: number,
  after: string | undefined,
) {
  const rows = await db.command.findMany({
    where: { ...(filter.agentId ? { agentId: filter.agentId } : {}), ...(filter.state ? { state: filter.state } : {}) },
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
    include: { result: true },
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

export async function getCommand(db: Prisma | Tx, id: string) {
  return db.command.findUnique({ where: { id }, include: { result: true } });
}

export type CommandRow = NonNullable<Awaited<ReturnType<typeof getCommand>>>;

// What an install result tells people: failed when the command or any package failed.
function installEvent(agentId: string, result: IncomingResult) {
  const failed = result.packages.filter((p) => p.kind === "failed").map((p) => p.name);
  const installed = result.packages.filter((p) => p.kind === "installed").map((p) => p.name);
  const names = (list: string[]) => `${list.slice(0, 5).join(", ")}${list.length > 5 ? ` and ${list.length - 5} more` : ""}`;
  if (result.outcome !== "succeeded" || failed.length > 0) {
    const what = failed.length > 0 ? `${names(failed)} failed` : "the install failed";
    return { kind: "install_failed" as const, severity: "warning" as const, agentId, text: `${what}${result.message ? `: ${result.message}` : ""}` };
  }
  return { kind: "install_succeeded" as const, severity: "info" as const, agentId, text: installed.length > 0 ? `installed ${names(installed)}` : "nothing needed installing" };
}

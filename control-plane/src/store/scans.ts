// Writing scans into an agent's view of pending updates (package_updates), in bounded steps.
//
// A scan's updates are first staged (staged_updates, under a scan_uploads row): a scan sent in
// parts as its parts arrive, a scan sent whole just before it is applied. A staged scan is then
// compared with the stored view and applied in batches of SCAN_BATCH updates, each batch its own
// short transaction: new and changed rows are written, unchanged ones are left alone, rows the
// scan no longer lists are deleted, "found" events are recorded. Nothing is ever loaded whole into
// memory or written by one statement, and no transaction lasts longer than one batch.
//
// One agent's scans are applied one at a time (a lease in scan_leases, across replicas), so two
// scans never interleave; while a scan is being applied its view is partly old and partly new.
// If applying stops half-way (the process dies), the staged scan stays, and the agent, whose
// report was not acknowledged, sends it again: applying it again finishes the job.
import { Prisma as Sql } from "../generated/prisma/client.ts";
import { newId } from "../ids.ts";
import { enqueueNotification } from "./notifications.ts";
import { StoreRefusal } from "./refusal.ts";
import type { Statements } from "./statements.ts";
import type { Prisma, Tx } from "./types.ts";

export interface PackageUpdateInput {
  source: string;
  name: string;
  architecture: string;
  currentVersion: string;
  availableVersion: string;
  repository: string;
  severity: string;
  security: boolean;
  sizeBytes: bigint;
  rebootRequired: boolean;
}

// Updates per staging insert and per applied batch; stale rows deleted per statement.
export const SCAN_BATCH = 1000;
const DELETE_BATCH = 5000;
// Parts of a scan at most (redflag.v1.ScanPart.part_count).
export const MAX_SCAN_PARTS = 1000;
// Staged scans one agent may have at once (in parts, or sent whole and applied part-way);
// staging another drops the oldest. An agent sends one big scan at a time.
export const MAX_UPLOADS_PER_AGENT = 2;
// A staged scan untouched for this long is dropped (its agent sends the parts again if it still can).
export const STAGED_SCAN_TTL_SECONDS = 3600;
// Every transaction here writes one bounded batch. Prisma's defaults (2 s to get a connection,
// 5 s to finish) give up too early on a starved machine, where the embedded database runs one
// statement at a time for everyone; these bounds only stop a transaction that is stuck.
export const BATCH_TX = { maxWait: 15_000, timeout: 30_000 };
// How long a scan lease lasts unless renewed, and how long a request waits for one.
const LEASE_SECONDS = 60;
const LEASE_WAIT_MS = 30_000;

export interface IncomingPart {
  scanId: string;
  index: number;
  partCount: number;
  updates: PackageUpdateInput[];
}

// What a scan replaces: the view of the sources it scanned, as of `time`.
export interface ScanApplication {
  sources: string[];
  time: Date;
  // The scan_updates command that ran it, for the "found" events; null for a scheduled scan.
  commandId: string | null;
  // From the scan's system reading, when it made one.
  rebootRequired: boolean | undefined;
}

// How many rows one request may still go through (shared by the scans it applies).
export interface Budget {
  rows: number;
}

export interface Lease {
  readonly agentId: string;
  readonly holder: string;
}

// Stages one part of a scan. Sending a part again changes nothing. A part that contradicts its
// scan's part count, or would take the scan over `maxScanUpdates`, is refused with
// InvalidArgument and drops what was staged of that scan: it could never be applied.
export async function stagePart(db: Prisma, agentId: string, part: IncomingPart, maxScanUpdates: number): Promise<void> {
  await dropExpiredUploads(db, agentId);
  const upload = await openPartUpload(db, agentId, part.scanId, part.partCount);
  if (upload.partCount !== part.partCount) {
    throw new StoreRefusal(
      "invalid",
      upload.partCount === 0
        ? `scan ${part.scanId} was sent whole; it has no parts`
        : `scan ${part.scanId} was announced in ${upload.partCount} parts; this part says ${part.partCount}`,
    );
  }
  const outcome = await db.$transaction(async (tx) => {
    if (!(await touchUpload(tx, upload.id))) return "dropped" as const;
    const [present] = await tx.$queryRaw<{ staged: number; has: boolean }[]>`
      SELECT coalesce(sum(update_count), 0)::int AS staged, bool_or(index = ${part.index}) AS has
        FROM scan_upload_parts WHERE upload_id = ${upload.id}::uuid`;
    if (present?.has) return "staged" as const;
    if ((present?.staged ?? 0) + part.updates.length > maxScanUpdates) return "too big" as const;
    await tx.scanUploadPart.create({ data: { uploadId: upload.id, index: part.index, updateCount: part.updates.length } });
    await insertStaged(tx, upload.id, part.updates);
    return "staged" as const;
  }, BATCH_TX);
  if (outcome === "too big") {
    await dropUpload(db, upload.id);
    throw new StoreRefusal("invalid", `scan ${part.scanId} holds more than ${maxScanUpdates} updates, the most one scan may report; nothing of it was kept`);
  }
  // Dropped between our look-up and the insert (expired, or pushed out by newer scans): the
  // agent learns which parts are missing when it sends the scan's result.
}

// The scan upload for a scan in parts, created on its first part.
async function openPartUpload(db: Prisma, agentId: string, scanId: string, partCount: number) {
  const existing = await db.scanUpload.findUnique({ where: { agentId_scanId: { agentId, scanId } } });
  if (existing) return existing;
  await makeRoom(db, agentId);
  await db.scanUpload.createMany({ data: [{ id: newId(), agentId, scanId, partCount }], skipDuplicates: true });
  return db.scanUpload.findUniqueOrThrow({ where: { agentId_scanId: { agentId, scanId } } });
}

// Before an agent's next staged scan: it keeps at most MAX_UPLOADS_PER_AGENT, the oldest goes.
async function makeRoom(db: Prisma, agentId: string) {
  const uploads = await db.scanUpload.findMany({ where: { agentId }, orderBy: { updatedAt: "asc" }, select: { id: true } });
  for (const old of uploads.slice(0, Math.max(0, uploads.length - MAX_UPLOADS_PER_AGENT + 1))) await dropUpload(db, old.id);
}

export type Staged = { uploadId: string } | { missing: number[] };

// A scan sent in parts, ready to apply when every part 0..partCount-1 is staged; otherwise the
// indexes still missing.
export async function completeUpload(db: Prisma, agentId: string, scanId: string, partCount: number): Promise<Staged> {
  const all = () => Array.from({ length: partCount }, (_, i) => i);
  const upload = await db.scanUpload.findUnique({ where: { agentId_scanId: { agentId, scanId } } });
  if (!upload) return { missing: all() };
  if (upload.partCount !== partCount) {
    // Parts of another split of this scan: they can never complete this one.
    await dropUpload(db, upload.id);
    return { missing: all() };
  }
  const parts = await db.scanUploadPart.findMany({ where: { uploadId: upload.id }, select: { index: true } });
  const have = new Set(parts.map((p) => p.index));
  const missing = all().filter((i) => !have.has(i));
  return missing.length > 0 ? { missing } : { uploadId: upload.id };
}

// Stages a scan sent whole, under the agent's lease. The same scan sent again while it is being
// applied (over several calls) carries on with what is staged; parts staged under its ID are
// dropped.
export async function stageWhole(db: Prisma, agentId: string, scanId: string, updates: PackageUpdateInput[]): Promise<string> {
  const existing = await db.scanUpload.findUnique({ where: { agentId_scanId: { agentId, scanId } }, select: { id: true, partCount: true } });
  if (existing?.partCount === 0) return existing.id;
  if (existing) await dropUpload(db, existing.id);
  await makeRoom(db, agentId);
  const id = newId();
  await db.$transaction(async (tx) => {
    await tx.scanUpload.create({ data: { id, agentId, scanId, partCount: 0 } });
    await insertStaged(tx, id, updates);
  }, BATCH_TX);
  return id;
}

// One insert per SCAN_BATCH updates, columns passed as arrays. The first of two updates with
// the same source, name and architecture wins, as it always has.
async function insertStaged(tx: Tx, uploadId: string, updates: PackageUpdateInput[]) {
  for (let i = 0; i < updates.length; i += SCAN_BATCH) {
    const batch = updates.slice(i, i + SCAN_BATCH);
    const column = <T>(pick: (u: PackageUpdateInput) => T) => batch.map(pick);
    await tx.$executeRaw`
      INSERT INTO staged_updates (upload_id, source, name, architecture, current_version, available_version,
                                  repository, severity, security, size_bytes, reboot_required)
      SELECT ${uploadId}::uuid, u.* FROM unnest(
        ${column((u) => u.source)}::text[], ${column((u) => u.name)}::text[], ${column((u) => u.architecture)}::text[],
        ${column((u) => u.currentVersion)}::text[], ${column((u) => u.availableVersion)}::text[],
        ${column((u) => u.repository)}::text[], ${column((u) => u.severity)}::text[], ${column((u) => u.security)}::boolean[],
        ${column((u) => u.sizeBytes.toString())}::bigint[], ${column((u) => u.rebootRequired)}::boolean[]) AS u
      ON CONFLICT DO NOTHING`;
  }
}

// Keeps a staged scan from expiring, and locks its row for the rest of the transaction so it
// cannot be dropped under a batch; false when it is gone.
async function touchUpload(tx: Tx, uploadId: string): Promise<boolean> {
  const n = await tx.$executeRaw`UPDATE scan_uploads SET updated_at = now() WHERE id = ${uploadId}::uuid`;
  return n > 0;
}

// Removes a staged scan: its row first (so nothing applies it any more), then its parts and
// rows in bounded deletes. Rows left by a process that died half-way are swept by
// pruneStagedScans.
export async function dropUpload(db: Prisma, uploadId: string): Promise<void> {
  await db.scanUpload.deleteMany({ where: { id: uploadId } });
  await purgeUploadRows(db, uploadId);
}

async function purgeUploadRows(db: Prisma, uploadId: string) {
  await db.scanUploadPart.deleteMany({ where: { uploadId } });
  for (;;) {
    const n = await db.$executeRaw`
      DELETE FROM staged_updates WHERE (upload_id, source, name, architecture) IN (
        SELECT upload_id, source, name, architecture FROM staged_updates
         WHERE upload_id = ${uploadId}::uuid LIMIT ${DELETE_BATCH})`;
    if (n < DELETE_BATCH) return;
  }
}

// Drops what is staged under a scan ID, if anything (its result was stored without applying it).
export async function dropStagedScan(db: Prisma, agentId: string, scanId: string): Promise<void> {
  const upload = await db.scanUpload.findUnique({ where: { agentId_scanId: { agentId, scanId } }, select: { id: true } });
  if (upload) await dropUpload(db, upload.id);
}

async function dropExpiredUploads(db: Prisma, agentId: string) {
  const expired = await db.$queryRaw<{ id: string }[]>`
    SELECT id::text FROM scan_uploads
     WHERE agent_id = ${agentId}::uuid AND updated_at < now() - make_interval(secs => ${STAGED_SCAN_TTL_SECONDS})`;
  for (const { id } of expired) await dropUpload(db, id);
}

// Housekeeping: staged scans untouched for STAGED_SCAN_TTL_SECONDS, and rows whose upload is
// gone (left by a process that stopped while removing them). Bounded per statement.
export async function pruneStagedScans(db: Prisma): Promise<number> {
  const expired = await db.$queryRaw<{ id: string }[]>`
    SELECT id::text FROM scan_uploads WHERE updated_at < now() - make_interval(secs => ${STAGED_SCAN_TTL_SECONDS}) LIMIT 1000`;
  for (const { id } of expired) await dropUpload(db, id);
  const orphans = await db.$queryRaw<{ id: string }[]>`
    SELECT DISTINCT s.upload_id::text AS id FROM staged_updates s
     WHERE NOT EXISTS (SELECT 1 FROM scan_uploads u WHERE u.id = s.upload_id) LIMIT 1000`;
  for (const { id } of orphans) await purgeUploadRows(db, id);
  return expired.length;
}

// Runs `fn` holding the agent's scan lease. Waits up to LEASE_WAIT_MS for another scan of the
// same agent to finish, then gives up with Unavailable (the agent retries later).
export async function withScanLease<T>(db: Prisma, agentId: string, fn: (lease: Lease) => Promise<T>): Promise<T> {
  const lease: Lease = { agentId, holder: newId() };
  const deadline = Date.now() + LEASE_WAIT_MS;
  for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
    const taken = await db.$queryRaw<{ holder: string }[]>`
      INSERT INTO scan_leases (agent_id, holder, expires_at)
      VALUES (${agentId}::uuid, ${lease.holder}::uuid, now() + make_interval(secs => ${LEASE_SECONDS}))
      ON CONFLICT (agent_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
       WHERE scan_leases.expires_at < now()
      RETURNING holder::text`;
    if (taken.length > 0) break;
    if (Date.now() + wait > deadline) {
      throw new StoreRefusal("retry", "another scan of this agent is being recorded; try again shortly");
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
  try {
    return await fn(lease);
  } finally {
    // A lease that cannot be released (the database went away) expires by itself.
    await db.$executeRaw`DELETE FROM scan_leases WHERE agent_id = ${agentId}::uuid AND holder = ${lease.holder}::uuid`.catch(() => {});
  }
}

// Inside every transaction that writes the view: proves the lease is still ours (and extends it).
async function renewLease(tx: Tx, lease: Lease) {
  const n = await tx.$executeRaw`
    UPDATE scan_leases SET expires_at = now() + make_interval(secs => ${LEASE_SECONDS})
     WHERE agent_id = ${lease.agentId}::uuid AND holder = ${lease.holder}::uuid`;
  if (n === 0) throw new StoreRefusal("retry", "recording this scan took too long; send it again");
}

interface Key {
  source: string;
  name: string;
  architecture: string;
}

// Writes rows of a scan into the view, as data-modifying parts of one statement (WITH ...):
// "found" events for updates not offered before (or offered in another version now), one
// notification for new critical or security updates, and the rows themselves (a row the scan
// repeats is not written). Every part reads the view as it was before the statement. `rows` is a
// relation with staged_updates' columns and at most one row per key; nothing is written unless
// `go` holds.
function viewWrites(agentId: string, scan: ScanApplication, rows: Sql.Sql, go: Sql.Sql): Sql.Sql {
  const offered = Sql.sql`FROM ${rows} s
        LEFT JOIN package_updates p ON p.agent_id = ${agentId}::uuid AND p.source = s.source AND p.name = s.name AND p.architecture = s.architecture
       WHERE (${go}) AND (p.agent_id IS NULL OR p.available_version <> s.available_version)`;
  return Sql.sql`found AS (
      INSERT INTO update_events (agent_id, time, kind, source, name, architecture, version, command_id)
      SELECT ${agentId}::uuid, ${scan.time}::timestamptz, 'found', s.source, s.name, s.architecture, s.available_version, ${scan.commandId}::uuid
      ${offered}
    ), news AS (
      SELECT count(*)::int AS n, (array_agg(s.name ORDER BY s.name))[1:5] AS names
      ${offered} AND (s.security OR s.severity = 'critical')
    ), notified AS (
      INSERT INTO notification_events (kind, severity, agent_id, text)
      SELECT 'critical_updates', 'critical', ${agentId}::uuid,
             left(n || ' new critical or security update' || CASE WHEN n = 1 THEN '' ELSE 's' END || ': ' || array_to_string(names, ', ')
                  || CASE WHEN n > cardinality(names) THEN ' and ' || (n - cardinality(names)) || ' more' ELSE '' END, 500)
        FROM news WHERE n > 0
    ), upserted AS (
      -- first_seen_at survives, and so do version_seen_at (a policy's delay counts from it) and a
      -- decision while the same version is offered.
      INSERT INTO package_updates AS p (agent_id, source, name, architecture, current_version, available_version,
                                        repository, severity, security, size_bytes, reboot_required, first_seen_at, last_seen_at, version_seen_at)
      SELECT ${agentId}::uuid, s.source, s.name, s.architecture, s.current_version, s.available_version,
             s.repository, s.severity, s.security, s.size_bytes, s.reboot_required, ${scan.time}::timestamptz, ${scan.time}::timestamptz, ${scan.time}::timestamptz
        FROM ${rows} s WHERE (${go})
      ON CONFLICT (agent_id, source, name, architecture) DO UPDATE SET
        current_version = EXCLUDED.current_version,
        available_version = EXCLUDED.available_version,
        repository = EXCLUDED.repository,
        severity = EXCLUDED.severity,
        security = EXCLUDED.security,
        size_bytes = EXCLUDED.size_bytes,
        reboot_required = EXCLUDED.reboot_required,
        last_seen_at = EXCLUDED.last_seen_at,
        version_seen_at = CASE WHEN p.available_version = EXCLUDED.available_version THEN p.version_seen_at ELSE EXCLUDED.version_seen_at END,
        status = CASE WHEN p.available_version = EXCLUDED.available_version THEN p.status ELSE 'pending' END,
        decided_by = CASE WHEN p.available_version = EXCLUDED.available_version THEN p.decided_by END,
        decided_at = CASE WHEN p.available_version = EXCLUDED.available_version THEN p.decided_at END,
        command_id = CASE WHEN p.available_version = EXCLUDED.available_version THEN p.command_id END
      WHERE (p.current_version, p.available_version, p.repository, p.severity, p.security, p.size_bytes, p.reboot_required)
            IS DISTINCT FROM
            (EXCLUDED.current_version, EXCLUDED.available_version, EXCLUDED.repository, EXCLUDED.severity,
             EXCLUDED.security, EXCLUDED.size_bytes, EXCLUDED.reboot_required)
      RETURNING 1
    )`;
}

// One batch of a staged scan into the view.
async function applyRows(tx: Tx, agentId: string, scan: ScanApplication, rows: Sql.Sql) {
  await tx.$executeRaw`WITH ${viewWrites(agentId, scan, rows, Sql.sql`true`)} SELECT 1`;
}

// A scan sent whole of at most one batch, replacing a view of at most one batch (most scheduled
// scans: they mostly repeat the view), is written by one statement straight from the request,
// without staging: the view's writes (viewWrites), the rows it no longer lists deleted, and the
// scan time (and the reboot flag) recorded, as applyStagedScan does in its steps. Unless the
// caller holds the agent's scan lease, the statement takes it for its own length (a lease row
// written already expired, so its row lock is what excludes others). "changed" when it cannot
// (bigger, a staged scan of this agent exists, another scan holds the lease): the caller stages
// and applies it as usual. With `newerOnly` (scheduled reports), a scan not newer than the view
// is "older" and changes nothing.
// What a small scan counts against a call's budget: up to a batch compared and a batch written.
export const SMALL_SCAN_ROWS = 2 * SCAN_BATCH;

export async function recordSmallScan(
  run: RunStatement,
  agentId: string,
  updates: readonly PackageUpdateInput[],
  scan: ScanApplication,
  opts: { newerOnly: boolean; leaseHeld: boolean },
): Promise<"recorded" | "older" | "changed"> {
  if (updates.length > SCAN_BATCH) return "changed";
  const firsts = firstOfEachKey(updates);
  const sources = [...new Set([...scan.sources, ...firsts.map((u) => u.source)])];
  const column = <T>(pick: (u: PackageUpdateInput) => T) => firsts.map(pick);
  const rows = Sql.sql`(SELECT * FROM unnest(
      ${column((u) => u.source)}::text[], ${column((u) => u.name)}::text[], ${column((u) => u.architecture)}::text[],
      ${column((u) => u.currentVersion)}::text[], ${column((u) => u.availableVersion)}::text[],
      ${column((u) => u.repository)}::text[], ${column((u) => u.severity)}::text[], ${column((u) => u.security)}::boolean[],
      ${column((u) => u.sizeBytes.toString())}::bigint[], ${column((u) => u.rebootRequired)}::boolean[])
      AS s(source, name, architecture, current_version, available_version, repository, severity, security, size_bytes, reboot_required))`;
  const go = Sql.sql`SELECT go FROM gate`;
  const statement = Sql.sql`
    WITH lease AS (
      INSERT INTO scan_leases (agent_id, holder, expires_at) VALUES (${agentId}::uuid, gen_random_uuid(), now())
      ON CONFLICT (agent_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
       WHERE scan_leases.expires_at < now() AND NOT ${opts.leaseHeld}::boolean
      RETURNING 1
    ), agent AS (
      SELECT last_scan_at IS NOT NULL AND last_scan_at >= ${scan.time}::timestamptz AS older FROM agents WHERE id = ${agentId}::uuid
    ), gate AS (
      SELECT (${opts.leaseHeld}::boolean OR EXISTS (SELECT 1 FROM lease))
         AND NOT (${opts.newerOnly}::boolean AND coalesce((SELECT older FROM agent), false))
         AND (SELECT count(*) FROM package_updates WHERE agent_id = ${agentId}::uuid AND source = ANY(${sources}::text[])) <= ${SCAN_BATCH}
         AND NOT EXISTS (SELECT 1 FROM scan_uploads WHERE agent_id = ${agentId}::uuid) AS go
    ), ${viewWrites(agentId, scan, rows, go)}, deleted AS (
      DELETE FROM package_updates p
       WHERE (${go}) AND p.agent_id = ${agentId}::uuid AND p.source = ANY(${sources}::text[])
         AND NOT EXISTS (SELECT 1 FROM ${rows} s WHERE s.source = p.source AND s.name = p.name AND s.architecture = p.architecture)
    ), recorded AS (
      UPDATE agents SET last_scan_at = ${scan.time}::timestamptz, reboot_required = COALESCE(${scan.rebootRequired ?? null}::boolean, reboot_required)
       WHERE id = ${agentId}::uuid AND (${go})
      RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM recorded) AS recorded, ${opts.newerOnly}::boolean AND coalesce((SELECT older FROM agent), false) AS older`;
  const [row] = await run("redflag_small_scan", statement);
  if (row?.recorded) return "recorded";
  if (row?.older) return "older";
  return "changed";
}

// Runs the statement: on the hot path's prepared Statements, or in a transaction.
export type RunStatement = (name: string, statement: Sql.Sql) => Promise<{ recorded: boolean; older: boolean }[]>;
export const statementsRunner = (sql: Statements): RunStatement => (name, statement) => sql.rows(name, statement.text, statement.values);
export const transactionRunner = (tx: Tx): RunStatement => (_name, statement) => tx.$queryRaw(statement);

// The first of two updates with the same key counts, as when staging.
function firstOfEachKey(updates: readonly PackageUpdateInput[]): PackageUpdateInput[] {
  const seen = new Set<string>();
  return updates.filter((u) => {
    const key = `${u.source}\0${u.name}\0${u.architecture}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

// Applies a staged scan to the agent's view, batch by batch in key order, then runs `finish` in
// the transaction that records the scan as done (last_scan_at; the caller's result and readings)
// and removes the staged scan. The caller holds the lease. It goes through about `budget.rows`
// rows (staged updates compared and applied, plus stale rows deleted; taken from the budget) and
// then stops: false means "not done yet", and the next call carries on where this one stopped,
// so no request runs for minutes however big the scan or the view it replaces.
export async function applyStagedScan(
  db: Prisma,
  lease: Lease,
  uploadId: string,
  scan: ScanApplication,
  budget: Budget,
  finish: (tx: Tx) => Promise<void>,
): Promise<boolean> {
  const { agentId } = lease;
  const gone = () => new StoreRefusal("retry", "the staged scan was dropped while it was being recorded; send it again");
  // Staged rows after `lo` up to and including `hi` (open-ended without them), in the order of
  // the primary keys of both tables: each range is found through the index.
  const stagedIn = (lo: Key | undefined, hi: Key | undefined) => Sql.sql`s.upload_id = ${uploadId}::uuid
    ${lo ? Sql.sql`AND (s.upload_id, s.source, s.name, s.architecture) > (${uploadId}::uuid, ${lo.source}, ${lo.name}, ${lo.architecture})` : Sql.empty}
    ${hi ? Sql.sql`AND (s.upload_id, s.source, s.name, s.architecture) <= (${uploadId}::uuid, ${hi.source}, ${hi.name}, ${hi.architecture})` : Sql.empty}`;
  const storedIn = (lo: Key | undefined, hi: Key | undefined) => Sql.sql`p.agent_id = ${agentId}::uuid
    ${lo ? Sql.sql`AND (p.agent_id, p.source, p.name, p.architecture) > (${agentId}::uuid, ${lo.source}, ${lo.name}, ${lo.architecture})` : Sql.empty}
    ${hi ? Sql.sql`AND (p.agent_id, p.source, p.name, p.architecture) <= (${agentId}::uuid, ${hi.source}, ${hi.name}, ${hi.architecture})` : Sql.empty}`;

  const upload = await db.scanUpload.findUnique({ where: { id: uploadId } });
  if (!upload) throw gone();
  // The sources it ran, and any other its updates name (a scan in parts lists them only there).
  const listed = await db.$queryRaw<{ source: string }[]>`SELECT DISTINCT source FROM staged_updates WHERE upload_id = ${uploadId}::uuid`;
  const sources = [...new Set([...scan.sources, ...listed.map((r) => r.source)])];

  let lo: Key | undefined =
    upload.appliedSource !== null ? { source: upload.appliedSource, name: upload.appliedName ?? "", architecture: upload.appliedArchitecture ?? "" } : undefined;
  for (;;) {
    if (budget.rows <= 0) return false;
    const [hi] = await db.$queryRaw<Key[]>`
      SELECT s.source, s.name, s.architecture FROM staged_updates s WHERE ${stagedIn(lo, undefined)}
       ORDER BY s.upload_id, s.source, s.name, s.architecture OFFSET ${SCAN_BATCH - 1} LIMIT 1`;
    await db.$transaction(async (tx) => {
      await renewLease(tx, lease);
      if (!(await touchUpload(tx, uploadId))) throw gone();
      await applyRows(tx, agentId, scan, Sql.sql`(SELECT * FROM staged_updates s WHERE ${stagedIn(lo, hi)})`);
    }, BATCH_TX);
    // Counted whether or not they changed: comparing costs too.
    budget.rows -= SCAN_BATCH;
    // Rows of the scanned sources in this range that the scan no longer lists; then the range is
    // done. A call out of budget half-way stops here, after at least one delete (so every call
    // gets somewhere): the next one goes over the range again.
    for (let first = true; ; first = false) {
      if (!first && budget.rows <= 0) return false;
      const deleted = await db.$transaction(async (tx) => {
        await renewLease(tx, lease);
        const n = await tx.$executeRaw`
          DELETE FROM package_updates WHERE (agent_id, source, name, architecture) IN (
            SELECT p.agent_id, p.source, p.name, p.architecture FROM package_updates p
             WHERE ${storedIn(lo, hi)} AND p.source = ANY(${sources}::text[])
               AND NOT EXISTS (SELECT 1 FROM staged_updates s
                                WHERE s.upload_id = ${uploadId}::uuid AND s.source = p.source AND s.name = p.name AND s.architecture = p.architecture)
             LIMIT ${DELETE_BATCH})`;
        if (n < DELETE_BATCH && hi) {
          await tx.$executeRaw`
            UPDATE scan_uploads SET applied_source = ${hi.source}, applied_name = ${hi.name}, applied_architecture = ${hi.architecture}
             WHERE id = ${uploadId}::uuid`;
        }
        return n;
      }, BATCH_TX);
      budget.rows -= deleted;
      if (deleted < DELETE_BATCH) break;
    }
    if (!hi) break;
    lo = hi;
  }
  await db.$transaction(async (tx) => {
    await renewLease(tx, lease);
    if (!(await touchUpload(tx, uploadId))) throw gone();
    await tx.agent.update({
      where: { id: agentId },
      data: { lastScanAt: scan.time, ...(scan.rebootRequired === undefined ? {} : { rebootRequired: scan.rebootRequired }) },
    });
    await finish(tx);
    await tx.scanUpload.delete({ where: { id: uploadId } });
    // Another scan of this agent applied part-way must start over: the view is this one's now.
    await tx.$executeRaw`
      UPDATE scan_uploads SET applied_source = NULL, applied_name = NULL, applied_architecture = NULL
       WHERE agent_id = ${agentId}::uuid AND applied_source IS NOT NULL`;
  }, BATCH_TX);
  await purgeUploadRows(db, uploadId);
  return true;
}

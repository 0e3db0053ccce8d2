import { newId } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import { bytes, type Prisma } from "./types.ts";

// Agent releases and their artifacts, in PostgreSQL so every replica serves the same builds.
// An artifact is stored as rows of CHUNK_BYTES (the last one shorter): an upload or a download
// holds one chunk in memory at a time, never a whole artifact, and no statement runs longer
// than one chunk's write or read.

export const CHUNK_BYTES = 512 * 1024;

export type ReleaseRow = NonNullable<Awaited<ReturnType<typeof findReleaseRow>>>;

const COLUMNS = {
  id: true,
  version: true,
  platform: true,
  sizeBytes: true,
  sha256: true,
  manifest: true,
  chunkBytes: true,
  state: true,
  createdBy: true,
  createdAt: true,
  publishedAt: true,
} as const;

const findReleaseRow = (db: Prisma, version: string, platform: string) =>
  db.agentRelease.findUnique({ where: { version_platform: { version, platform } }, select: COLUMNS });

export interface NewRelease {
  version: string;
  platform: string;
  sizeBytes: bigint;
  sha256: Uint8Array;
  manifest: Uint8Array;
  createdBy: string;
  now: Date;
  // An upload that has not stored a chunk since this time is abandoned and may be replaced.
  staleBefore: Date;
}

export type BeginUpload =
  | { kind: "started"; id: string }
  | { kind: "published"; release: ReleaseRow }
  // Another upload of it stored a chunk after staleBefore: it is still running.
  | { kind: "in_progress"; startedAt: Date; startedBy: string }
  // Another upload of it began at the same moment.
  | { kind: "racing" };

// Starts an upload, or finds the release already published under this version and platform,
// or another upload of it.
export async function beginUpload(db: Prisma, input: NewRelease): Promise<BeginUpload> {
  const existing = await db.agentRelease.findUnique({
    where: { version_platform: { version: input.version, platform: input.platform } },
    select: { ...COLUMNS, updatedAt: true },
  });
  if (existing?.state === "published") return { kind: "published", release: existing };
  if (existing) {
    if (existing.updatedAt >= input.staleBefore) {
      return { kind: "in_progress", startedAt: existing.createdAt, startedBy: existing.createdBy };
    }
    await db.agentRelease.deleteMany({ where: { id: existing.id, state: "uploading" } });
  }
  const id = newId();
  try {
    await db.agentRelease.create({
      data: {
        id,
        version: input.version,
        platform: input.platform,
        sizeBytes: input.sizeBytes,
        sha256: bytes(input.sha256),
        manifest: bytes(input.manifest),
        chunkBytes: CHUNK_BYTES,
        createdBy: input.createdBy,
        createdAt: input.now,
        updatedAt: input.now,
      },
    });
  } catch (err) {
    if (isUniqueViolation(err)) return { kind: "racing" };
    throw err;
  }
  return { kind: "started", id };
}

// Stores the next chunk of an upload (seq 0, 1, 2 …).
export async function storeChunk(db: Prisma, releaseId: string, seq: number, data: Uint8Array, now: Date): Promise<void> {
  await db.$transaction([
    db.agentReleaseChunk.create({ data: { releaseId, seq, data: bytes(data) } }),
    db.agentRelease.update({ where: { id: releaseId }, data: { updatedAt: now } }),
  ]);
}

// Makes a complete upload visible; false when it was deleted meanwhile.
export async function publishUpload(db: Prisma, releaseId: string, now: Date): Promise<ReleaseRow | undefined> {
  const done = await db.agentRelease.updateMany({ where: { id: releaseId, state: "uploading" }, data: { state: "published", publishedAt: now, updatedAt: now } });
  if (done.count === 0) return undefined;
  return (await db.agentRelease.findUnique({ where: { id: releaseId }, select: COLUMNS })) ?? undefined;
}

// Drops an upload that failed or was abandoned, with what it stored so far.
export async function abortUpload(db: Prisma, releaseId: string): Promise<void> {
  await db.agentRelease.deleteMany({ where: { id: releaseId, state: "uploading" } });
}

// One published release; without a version, the newest one for the platform.
export async function findPublishedRelease(
  db: Prisma,
  platform: string,
  version: string | undefined,
  newest: (versions: string[]) => string | undefined,
): Promise<ReleaseRow | undefined> {
  if (version !== undefined) {
    const row = await findReleaseRow(db, version, platform);
    return row?.state === "published" ? row : undefined;
  }
  const versions = await db.agentRelease.findMany({ where: { platform, state: "published" }, select: { version: true } });
  const pick = newest(versions.map((v) => v.version));
  return pick === undefined ? undefined : findPublishedRelease(db, platform, pick, newest);
}

// Published releases, most recently published first.
export async function listPublishedReleases(db: Prisma, filter: { platform?: string | undefined }, pageSize: number, after: string | undefined) {
  const rows = await db.agentRelease.findMany({
    where: { state: "published", ...(filter.platform ? { platform: filter.platform } : {}) },
    orderBy: [{ publishedAt: "desc" }, { id: "desc" }],
    select: COLUMNS,
    take: pageSize + 1,
    ...(after ? { cursor: { id: after }, skip: 1 } : {}),
  });
  return { rows: rows.slice(0, pageSize), next: rows.length > pageSize ? rows[pageSize - 1]!.id : undefined };
}

// One chunk of a published release's artifact; undefined when it is gone (deleted meanwhile).
export async function readChunk(db: Prisma, releaseId: string, seq: number): Promise<Uint8Array | undefined> {
  const row = await db.agentReleaseChunk.findUnique({ where: { releaseId_seq: { releaseId, seq } }, select: { data: true } });
  return row?.data;
}

// Removes a release (published or a stuck upload) and its artifact; undefined when there is none.
export async function deleteRelease(db: Prisma, version: string, platform: string): Promise<ReleaseRow | undefined> {
  const row = await findReleaseRow(db, version, platform);
  if (!row) return undefined;
  await db.agentRelease.deleteMany({ where: { id: row.id } });
  return row;
}

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ArtifactManifestSchema } from "@redflag/gen/command_pb";
import { createHash } from "node:crypto";
import { abortUpload, beginUpload, CHUNK_BYTES, publishUpload, type ReleaseRow, storeChunk } from "../store/releases.ts";
import type { Prisma } from "../store/types.ts";

// Publishing one agent build into the release registry: the same rules whether it arrives as a
// PublishRelease stream (services/release-service.ts) or is found beside the control plane at
// start-up (agent-releases-dir.ts). A published release never changes; the same bytes again are
// a no-op; bytes that are not what the header announced publish nothing.

// An upload that stored nothing for this long is abandoned: a new one may take its place.
const STALE_UPLOAD_MS = 10 * 60_000;

export interface ReleaseHeader {
  // Already checked: a release version, a platform, 1 to MAX_ARTIFACT_BYTES, 32 bytes.
  version: string;
  platform: string;
  sizeBytes: bigint;
  sha256: Uint8Array;
}

const hex = (data: Uint8Array) => Buffer.from(data).toString("hex");
const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

// Collects the bytes into CHUNK_BYTES pieces and hands each one on as it fills.
function chunker(write: (data: Uint8Array) => Promise<void>) {
  let parts: Buffer[] = [];
  let held = 0;
  return {
    async add(data: Uint8Array) {
      parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      held += data.byteLength;
      while (held >= CHUNK_BYTES) {
        const all = Buffer.concat(parts, held);
        await write(all.subarray(0, CHUNK_BYTES));
        const rest = all.subarray(CHUNK_BYTES);
        parts = rest.length > 0 ? [Buffer.from(rest)] : [];
        held = rest.length;
      }
    },
    async end() {
      if (held > 0) await write(Buffer.concat(parts, held));
      parts = [];
      held = 0;
    },
  };
}

// Stores `data` (the artifact's bytes, in pieces of any size) as the release the header names.
// created is false when the same artifact was already published; another artifact under the
// same version and platform is refused with FailedPrecondition.
export async function publishArtifact(
  db: Prisma,
  header: ReleaseHeader,
  data: AsyncIterable<Uint8Array>,
  createdBy: string,
): Promise<{ release: ReleaseRow; created: boolean }> {
  const { version, platform } = header;
  const size = Number(header.sizeBytes);
  const manifest = toBinary(ArtifactManifestSchema, create(ArtifactManifestSchema, { version, platform, sizeBytes: header.sizeBytes, sha256: header.sha256 }));
  const now = new Date();
  const begun = await beginUpload(db, {
    version,
    platform,
    sizeBytes: header.sizeBytes,
    sha256: header.sha256,
    manifest,
    createdBy,
    now,
    staleBefore: new Date(now.getTime() - STALE_UPLOAD_MS),
  });
  if (begun.kind === "in_progress") {
    throw new ConnectError(
      `another upload of ${version} for ${platform} is in progress (started ${begun.startedAt.toISOString()} by ${begun.startedBy}); wait for it, or delete it with \`redflag releases delete ${version} --platform ${platform}\``,
      Code.FailedPrecondition,
    );
  }
  if (begun.kind === "racing") throw new ConnectError(`${version} for ${platform} is being published by someone else right now; try again shortly`, Code.FailedPrecondition);
  if (begun.kind === "published") {
    const same = Buffer.from(begun.release.sha256).equals(Buffer.from(header.sha256)) && begun.release.sizeBytes === header.sizeBytes;
    if (!same) {
      throw new ConnectError(
        `${version} for ${platform} is already published with another artifact (SHA-256 ${hex(begun.release.sha256)}); a published release never changes: delete it first with \`redflag releases delete ${version} --platform ${platform}\``,
        Code.FailedPrecondition,
      );
    }
    // The same build again (a publish run repeated): read what is sent, keep nothing.
    let seen = 0;
    for await (const piece of data) {
      seen += piece.byteLength;
      if (seen > size) throw invalid(`the artifact is larger than header.size_bytes (${size})`);
    }
    return { release: begun.release, created: false };
  }

  const releaseId = begun.id;
  let published: ReleaseRow | undefined;
  try {
    const hash = createHash("sha256");
    let seq = 0;
    const pieces = chunker(async (piece) => {
      await storeChunk(db, releaseId, seq++, piece, new Date());
    });
    let received = 0;
    for await (const piece of data) {
      received += piece.byteLength;
      if (received > size) throw invalid(`the artifact is larger than header.size_bytes (${size}); nothing was published`);
      hash.update(piece);
      await pieces.add(piece);
    }
    if (received !== size) throw invalid(`the stream ended after ${received} of the ${size} bytes header.size_bytes announced; nothing was published`);
    const digest = hash.digest();
    if (!digest.equals(Buffer.from(header.sha256))) {
      throw invalid(`the artifact's SHA-256 is ${digest.toString("hex")}, the header says ${hex(header.sha256)}; nothing was published`);
    }
    await pieces.end();
    published = await publishUpload(db, releaseId, new Date());
    if (!published) throw new ConnectError(`the upload of ${version} for ${platform} was deleted while it ran; nothing was published`, Code.Aborted);
  } finally {
    if (!published) await abortUpload(db, releaseId).catch(() => {});
  }
  return { release: published, created: true };
}

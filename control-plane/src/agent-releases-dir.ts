import { Code, ConnectError } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { publishArtifact } from "./domain/release-publish.ts";
import { isPlatform, isReleaseVersion, MAX_ARTIFACT_BYTES, newestVersion, parseArtifactFileName } from "./domain/releases.ts";
import type { Logger } from "./log.ts";
import { findPublishedRelease } from "./store/releases.ts";
import type { Prisma } from "./store/types.ts";

// At start-up, publishes the agent builds found in REDFLAG_AGENT_RELEASES_DIR (npm start: dist/agent,
// where `npm run build:agent` leaves them; the Docker image: the builds it was made with), as
// `redflag releases publish DIR` would. A build already published with the same SHA-256 is
// skipped; one whose version is already published with other bytes is a warning (a published
// release never changes), and the control plane starts anyway.

export interface PublishedDir {
  published: string[];
  unchanged: string[];
  refused: string[];
}

// Who published, as the registry shows it (`redflag releases list`). The audit log records what
// people and keys do through the API; this is the control plane's own act, in its log.
const PUBLISHER = "system";

async function digestFile(file: string): Promise<Buffer> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest();
}

export async function publishAgentReleasesDir(opts: { dir: string; db: Prisma; logger: Logger }): Promise<PublishedDir> {
  const { dir, db, logger } = opts;
  const done: PublishedDir = { published: [], unchanged: [], refused: [] };
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  const builds = (names ?? []).sort().flatMap((name) => {
    const named = parseArtifactFileName(name);
    return named ? [{ file: path.join(dir, name), name, ...named }] : [];
  });
  if (builds.length === 0) {
    logger.info({ dir }, "no agent builds to publish: `npm run build:agent` makes them (until then the install commands have nothing to download)");
    return done;
  }
  for (const build of builds) {
    const refuse = (reason: string) => {
      logger.warn({ file: build.file }, `not publishing ${build.name}: ${reason}`);
      done.refused.push(build.name);
    };
    if (!isReleaseVersion(build.version) || !isPlatform(build.platform)) {
      refuse("its name holds no release version and platform (redflag-agent-0.2.0-linux-x64.tgz)");
      continue;
    }
    const info = await stat(build.file);
    if (!info.isFile() || info.size < 1 || info.size > MAX_ARTIFACT_BYTES) {
      refuse(`not a file of 1 byte to ${MAX_ARTIFACT_BYTES / 1024 / 1024} MiB`);
      continue;
    }
    const sha256 = await digestFile(build.file);
    const known = await findPublishedRelease(db, build.platform, build.version, newestVersion);
    if (known && !Buffer.from(known.sha256).equals(sha256)) {
      refuse(
        `${build.version} for ${build.platform} is already published with another artifact (SHA-256 ${Buffer.from(known.sha256).toString("hex")}, this one ${sha256.toString("hex")}); ` +
          `a published release never changes: raise the agent's version before building, or delete the published one with \`redflag releases delete ${build.version} --platform ${build.platform}\``,
      );
      continue;
    }
    if (known) {
      logger.info({ file: build.file, version: build.version, platform: build.platform }, `agent release ${build.version} for ${build.platform} is already published (same SHA-256)`);
      done.unchanged.push(build.name);
      continue;
    }
    try {
      const { created } = await publishArtifact(
        db,
        { version: build.version, platform: build.platform, sizeBytes: BigInt(info.size), sha256 },
        createReadStream(build.file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>,
        PUBLISHER,
      );
      if (!created) {
        done.unchanged.push(build.name);
        continue;
      }
    } catch (err) {
      // Another replica publishing the same build right now, another artifact published
      // meanwhile, or the file changed while it was read.
      if (err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.InvalidArgument)) {
        refuse(err.rawMessage);
        continue;
      }
      throw err;
    }
    const sha = sha256.toString("hex");
    logger.info({ file: build.file, version: build.version, platform: build.platform, sizeBytes: info.size, sha256: sha }, `published agent release ${build.version} for ${build.platform} from ${build.name}`);
    done.published.push(build.name);
  }
  return done;
}

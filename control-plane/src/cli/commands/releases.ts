import { create } from "@bufbuild/protobuf";
import {
  type AgentRelease,
  ListReleasesResponseSchema,
  type PublishReleaseRequest,
  PublishReleaseRequestSchema,
} from "@redflag/gen/release_service_pb";
import type { Command } from "commander";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { ARTIFACT_NAME_HINT, parseArtifactFileName } from "../../domain/releases.ts";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { ago, size, table, time } from "../output.ts";

// What `releases publish` takes: files named as parseArtifactFileName says (domain/releases.ts).
const ARTIFACT_HINT = ARTIFACT_NAME_HINT;
// A publish streams the whole artifact; give a slow link time.
const PUBLISH_TIMEOUT_MS = 60 * 60_000;
const PUBLISH_CHUNK_BYTES = 1024 * 1024;

interface Artifact {
  file: string;
  version: string;
  platform: string;
}

// redflag releases: the registry of agent releases, the only source of agent upgrades.
export function registerReleases(program: Command, cli: CliContext): void {
  const releases = program.command("releases").description("the registry of agent releases, the only source of agent upgrades (admins publish)");

  releases
    .command("publish")
    .description(`add agent builds to the registry (admins): files named ${ARTIFACT_HINT}, or directories holding them`)
    .argument("<paths...>", "directories or files")
    .action(async (paths: string[]) => {
      const c = await cli.clients();
      const published: AgentRelease[] = [];
      for (const artifact of await artifactsIn(paths)) {
        const digest = await digestFile(artifact.file);
        const known = await findRelease(c, artifact.version, artifact.platform);
        let release: AgentRelease;
        let created = false;
        if (known && Buffer.from(known.sha256).equals(Buffer.from(digest.sha256))) {
          release = known;
        } else {
          const res = await c.releases.publishRelease(publishStream(artifact, digest.size, digest.sha256), { timeoutMs: PUBLISH_TIMEOUT_MS });
          release = res.release!;
          created = res.created;
        }
        published.push(release);
        if (!cli.json()) {
          cli.out(
            `${created ? "published" : "already published"}: ${release.version} for ${release.platform} (${size(release.sizeBytes)}, sha256 ${shortHash(release.sha256)}…) from ${artifact.file}\n`,
          );
        }
      }
      if (cli.json()) cli.printJson(ListReleasesResponseSchema, create(ListReleasesResponseSchema, { releases: published }));
      else cli.out("agents upgrade with `redflag agents upgrade <agent-id> --version <version>`\n");
    });

  releases
    .command("list")
    .description("the published agent releases, most recent first")
    .option("--platform <os-arch>", 'only this platform ("linux-x64", "any" …)')
    .action(async (o: { platform?: string }) => {
      const c = await cli.clients();
      const all: AgentRelease[] = [];
      let pageToken = "";
      do {
        const page = await c.releases.listReleases({ platform: o.platform ?? "", pageSize: 500, pageToken });
        all.push(...page.releases);
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (cli.json()) return cli.printJson(ListReleasesResponseSchema, create(ListReleasesResponseSchema, { releases: all }));
      cli.out(
        table(
          ["VERSION", "PLATFORM", "SIZE", "SHA-256", "PUBLISHED", "BY"],
          all.map((r) => [r.version, r.platform, size(r.sizeBytes), Buffer.from(r.sha256).toString("hex"), ago(time(r.publishTime)), r.publishedBy]),
        ),
      );
    });

  releases
    .command("delete")
    .description("remove one release (one version for one platform) from the registry (admins)")
    .argument("<version>", "release version")
    .requiredOption("--platform <os-arch>", 'its platform ("linux-x64", "any" …)')
    .action(async (version: string, o: { platform: string }) => {
      await (await cli.clients()).releases.deleteRelease({ version, platform: o.platform });
      cli.out(`release ${version} for ${o.platform} deleted\n`);
    });
}

async function artifactsIn(paths: string[]): Promise<Artifact[]> {
  const found: Artifact[] = [];
  for (const p of paths) {
    const info = await stat(p).catch(() => undefined);
    if (!info) throw new CliError(`${p} does not exist`);
    const files = info.isDirectory() ? (await readdir(p)).sort().map((name) => path.join(p, name)) : [p];
    const matching = files.flatMap((file) => {
      const named = parseArtifactFileName(path.basename(file));
      return named ? [{ file, ...named }] : [];
    });
    if (matching.length === 0) {
      throw new CliError(info.isDirectory() ? `${p} holds no agent build named ${ARTIFACT_HINT}` : `${p} is not named ${ARTIFACT_HINT}`);
    }
    found.push(...matching);
  }
  return found;
}

async function digestFile(file: string): Promise<{ size: bigint; sha256: Uint8Array }> {
  const hash = createHash("sha256");
  let size = 0n;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += BigInt(chunk.length);
  }
  return { size, sha256: new Uint8Array(hash.digest()) };
}

// The header, then the file in 1 MiB pieces, read as the upload goes (never all in memory).
async function* publishStream(a: Artifact, size: bigint, sha256: Uint8Array): AsyncGenerator<PublishReleaseRequest> {
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version: a.version, platform: a.platform, sizeBytes: size, sha256 } } });
  for await (const chunk of createReadStream(a.file, { highWaterMark: PUBLISH_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: new Uint8Array(chunk) } });
  }
}

async function findRelease(c: Clients, version: string, platform: string): Promise<AgentRelease | undefined> {
  let pageToken = "";
  do {
    const page = await c.releases.listReleases({ platform, pageSize: 500, pageToken });
    const hit = page.releases.find((r) => r.version === version);
    if (hit) return hit;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return undefined;
}

const shortHash = (sha256: Uint8Array) => Buffer.from(sha256).toString("hex").slice(0, 16);

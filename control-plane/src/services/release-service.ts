import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type AgentRelease,
  AgentReleaseSchema,
  type AgentUpgrade,
  AgentUpgradeSchema,
  AgentUpgradeState,
  type PublishReleaseRequest,
  ReleaseService,
} from "@redflag/gen/release_service_pb";
import { downloadPath, isPlatform, isReleaseVersion, MAX_ARTIFACT_BYTES } from "../domain/releases.ts";
import type { CommandSigner } from "../signing/signer.ts";
import { publishArtifact } from "../domain/release-publish.ts";
import { deleteRelease, listPublishedReleases, type ReleaseRow } from "../store/releases.ts";
import type { Prisma } from "../store/types.ts";
import { listUpgrades, type UpgradeRow, type UpgradeState } from "../store/upgrades.ts";
import { type FleetSelection, startFleetUpgrade, type UpgradeDeps } from "../domain/upgrades.ts";
import { audit, callerName, commandCreator } from "./audit.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";

// One message of the stream carries at most this much of the artifact; every message but the
// last at least MIN_CHUNK, so a stream of tiny messages cannot make an upload cost far more
// than its bytes.
const MAX_CHUNK = 4 * 1024 * 1024;
const MIN_CHUNK = 64 * 1024;

const quoted = (value: string) => JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
const hex = (data: Uint8Array) => Buffer.from(data).toString("hex");

export function checkVersion(field: string, version: string): string {
  if (!isReleaseVersion(version)) {
    throw invalid(`${field} ${quoted(version)} is not a release version: semantic versioning like "0.2.0" or "1.0.0-rc.1", at most 64 characters`);
  }
  return version;
}

export function checkPlatform(field: string, platform: string): string {
  if (!isPlatform(platform)) throw invalid(`${field} ${quoted(platform)} is not a platform: "any", or an OS and CPU like "linux-x64", "linux-arm64", "darwin-arm64", "win32-x64"`);
  return platform;
}

// A release as clients see it, its manifest signed now with the active key (a signature made
// at publish time would stop verifying once that key is rotated out).
export function releaseToProto(row: ReleaseRow, signer: CommandSigner): AgentRelease {
  return create(AgentReleaseSchema, {
    version: row.version,
    platform: row.platform,
    sizeBytes: row.sizeBytes,
    sha256: row.sha256,
    publishTime: row.publishedAt ? timestampFromDate(row.publishedAt) : undefined,
    publishedBy: row.createdBy,
    manifest: row.manifest,
    ...signer.signManifest(row.manifest),
    downloadPath: downloadPath(row.version, row.platform),
  });
}

const UPGRADE_STATES: Record<UpgradeState, AgentUpgradeState> = {
  queued: AgentUpgradeState.QUEUED,
  installing: AgentUpgradeState.INSTALLING,
  succeeded: AgentUpgradeState.SUCCEEDED,
  failed: AgentUpgradeState.FAILED,
  rolled_back: AgentUpgradeState.ROLLED_BACK,
};
const UPGRADE_STATE_FILTER = new Map(Object.entries(UPGRADE_STATES).map(([db, proto]) => [proto, db as UpgradeState]));
const ts = (d: Date | null) => (d ? timestampFromDate(d) : undefined);

export function upgradeToProto(row: UpgradeRow): AgentUpgrade {
  return create(AgentUpgradeSchema, {
    id: row.id,
    agentId: row.agentId,
    hostname: row.agent.hostname,
    fromVersion: row.fromVersion,
    toVersion: row.toVersion,
    platform: row.platform,
    state: UPGRADE_STATES[row.state as UpgradeState] ?? AgentUpgradeState.UNSPECIFIED,
    message: row.message,
    commandId: row.commandId ?? "",
    rolloutId: row.rolloutId ?? "",
    createdBy: row.createdBy,
    createTime: ts(row.createdAt),
    updateTime: ts(row.updatedAt),
    finishTime: ts(row.finishedAt),
  });
}

// Upgrades named one by one in a fleet upgrade's audit entry; the rest are counted.
const MAX_AUDITED_UPGRADES = 1000;

// Group and tag names as agents carry them (fleet-service.ts SetAgentLabels).

export function createReleaseService(db: Prisma, signer: CommandSigner, deps: Pick<UpgradeDeps, "wakeups" | "events">): ServiceImpl<typeof ReleaseService> {
  const upgrades: UpgradeDeps = { db, signer, ...deps };
  return {
    async publishRelease(requests: AsyncIterable<PublishReleaseRequest>, ctx: HandlerContext) {
      const stream = requests[Symbol.asyncIterator]();
      const first = await stream.next();
      if (first.done || first.value.part.case !== "header") {
        throw invalid("the first message must carry the release header (version, platform, size_bytes, sha256); the artifact's bytes follow it");
      }
      const header = first.value.part.value;
      const version = checkVersion("header.version", header.version);
      const platform = checkPlatform("header.platform", header.platform);
      if (header.sizeBytes < 1n || header.sizeBytes > BigInt(MAX_ARTIFACT_BYTES)) {
        throw invalid(`header.size_bytes must be from 1 to ${MAX_ARTIFACT_BYTES} (512 MiB)`);
      }
      if (header.sha256.length !== 32) throw invalid("header.sha256 must be the 32-byte SHA-256 of the artifact");
      // The artifact's bytes from the rest of the stream, each message checked as it comes.
      async function* artifact(): AsyncGenerator<Uint8Array> {
        let short = false;
        for await (const msg of { [Symbol.asyncIterator]: () => stream }) {
          if (msg.part.case !== "chunk") throw invalid("only the first message carries a header; every later one carries the next piece of the artifact");
          const data = msg.part.value;
          if (data.byteLength === 0) throw invalid("an empty chunk; send the artifact's bytes");
          if (data.byteLength > MAX_CHUNK) throw invalid(`a chunk of ${data.byteLength} bytes; at most ${MAX_CHUNK} per message`);
          if (short) throw invalid(`a chunk smaller than ${MIN_CHUNK} bytes was followed by another; only the last may be that small`);
          short = data.byteLength < MIN_CHUNK;
          yield data;
        }
      }
      const { release, created } = await publishArtifact(db, { version, platform, sizeBytes: header.sizeBytes, sha256: header.sha256 }, artifact(), callerName(ctx));
      if (!created) return { release: releaseToProto(release, signer), created: false };
      await audit(db, ctx, {
        target: `release:${version}/${platform}`,
        after: { version, platform, sizeBytes: String(header.sizeBytes), sha256: hex(header.sha256) },
      });
      return { release: releaseToProto(release, signer), created: true };
    },

    async listReleases(req) {
      const platform = req.platform ? checkPlatform("platform", req.platform) : undefined;
      const { rows, next } = await listPublishedReleases(db, { platform }, pageSize(req.pageSize), pageToken(req.pageToken));
      return { releases: rows.map((r) => releaseToProto(r, signer)), nextPageToken: nextPageToken(next) };
    },

    async startFleetUpgrade(req, ctx) {
      let selection: FleetSelection;
      const label = (field: string, value: string) => {
        const name = normaliseLabel(text(field, value, { max: 63, required: true }));
        if (!LABEL.test(name)) throw invalid(`${field} ${quoted(value)} is not a ${field}: ${LABEL_RULE}`);
        return name;
      };
      switch (req.selection.case) {
        case "all":
          if (!req.selection.value) throw invalid("all must be true when it is the selection");
          selection = { all: true };
          break;
        case "group":
          selection = { group: label("group", req.selection.value) };
          break;
        case "tag":
          selection = { tag: label("tag", req.selection.value) };
          break;
        default:
          throw invalid("a selection is required: all, group or tag");
      }
      if (req.percent > 100) throw invalid("percent must be from 1 to 100 (0 means 100)");
      const version = req.version ? checkVersion("version", req.version) : "";
      const outcome = await startFleetUpgrade(upgrades, { selection, percent: req.percent, version, ...commandCreator(ctx) });
      await audit(db, ctx, {
        target: "group" in selection ? `group:${selection.group}` : "tag" in selection ? `tag:${selection.tag}` : "fleet",
        after: {
          rolloutId: outcome.rolloutId,
          version: version || "newest",
          percent: req.percent || 100,
          selected: outcome.selected,
          chosen: outcome.chosen,
          // Bounded: a fleet of thousands makes one entry, not a megabyte.
          queued: outcome.upgrades.slice(0, MAX_AUDITED_UPGRADES).map((u) => ({ agentId: u.agentId, commandId: u.commandId, toVersion: u.toVersion })),
          queuedCount: outcome.upgrades.length,
          skipped: outcome.skipped.length,
        },
      });
      return {
        rolloutId: outcome.rolloutId,
        selectedCount: outcome.selected,
        chosenCount: outcome.chosen,
        upgrades: outcome.upgrades.map(upgradeToProto),
        skipped: outcome.skipped,
      };
    },

    async listAgentUpgrades(req) {
      let state: UpgradeState | undefined;
      if (req.state !== AgentUpgradeState.UNSPECIFIED) {
        state = UPGRADE_STATE_FILTER.get(req.state);
        if (!state) throw invalid(`state ${req.state} is not an upgrade state`);
      }
      const filter = {
        rolloutId: req.rolloutId ? uuid("rollout_id", req.rolloutId) : undefined,
        agentId: req.agentId ? uuid("agent_id", req.agentId) : undefined,
        state,
      };
      const { rows, next } = await listUpgrades(db, filter, pageSize(req.pageSize), pageToken(req.pageToken));
      return { upgrades: rows.map(upgradeToProto), nextPageToken: nextPageToken(next) };
    },

    async deleteRelease(req, ctx) {
      const version = checkVersion("version", req.version);
      const platform = checkPlatform("platform", req.platform);
      const row = await deleteRelease(db, version, platform);
      if (!row) throw new ConnectError(`there is no release ${version} for ${platform}`, Code.NotFound);
      await audit(db, ctx, {
        target: `release:${version}/${platform}`,
        before: { version, platform, sizeBytes: String(row.sizeBytes), sha256: hex(row.sha256), state: row.state },
      });
      return {};
    },
  };
}

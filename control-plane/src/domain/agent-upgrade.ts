import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type UpdateAgent, UpdateAgentSchema } from "@redflag/gen/command_pb";
import type { CommandSigner } from "../signing/signer.ts";
import { agentPlatformFacts } from "../store/command-privilege.ts";
import { findPublishedRelease, type ReleaseRow } from "../store/releases.ts";
import type { Prisma } from "../store/types.ts";
import { agentPlatform, downloadPath, newestVersion } from "./releases.ts";


// The update_agent action for one agent, filled in from the registry: the build for the
// agent's platform (else one for "any"), its manifest signed now by the active key, and where
// the agent downloads it (a path on the control plane it is registered with). An empty version
// means the newest release for that platform.
export async function upgradeFromRegistry(db: Prisma, signer: CommandSigner, agentId: string, version: string): Promise<UpdateAgent> {
  return (await resolveUpgrade(db, signer, agentId, version)).action;
}

// The same, with the release it picked.
export async function resolveUpgrade(db: Prisma, signer: CommandSigner, agentId: string, version: string): Promise<{ action: UpdateAgent; release: ReleaseRow }> {
  const agent = await agentPlatformFacts(db, agentId);
  if (!agent) throw new ConnectError(`agent ${agentId} does not exist`, Code.NotFound);
  const found = await releaseForAgent(db, agent, version);
  if ("missing" in found) {
    throw new ConnectError(`${found.missing}; publish builds with \`redflag releases publish DIR\`, see \`redflag releases list\``, Code.FailedPrecondition);
  }
  const release = found.release;
  return {
    release,
    action: create(UpdateAgentSchema, {
      version: release.version,
      downloadUrl: downloadPath(release.version, release.platform),
      manifest: release.manifest,
      ...signer.signManifest(release.manifest),
    }),
  };
}

// The published release an agent on this OS and CPU gets: the build for its platform, else
// one for "any"; or why there is none. An empty version means the newest.
export async function releaseForAgent(db: Prisma, agent: { osFamily: string; arch: string }, version: string): Promise<{ release: ReleaseRow } | { missing: string }> {
  const platform = agentPlatform(agent.osFamily, agent.arch);
  const wanted = version || undefined;
  const release =
    (platform ? await findPublishedRelease(db, platform, wanted, newestVersion) : undefined) ?? (await findPublishedRelease(db, "any", wanted, newestVersion));
  if (release) return { release };
  const builds = platform ? `${platform} (this agent's platform) or "any"` : `"any" (this agent reports ${agent.osFamily} on ${agent.arch}, which no build is named for)`;
  return { missing: version ? `release ${version} for ${builds} is not in the registry` : `no release is published for ${builds}` };
}

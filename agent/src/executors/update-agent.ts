import { fromBinary } from "@bufbuild/protobuf";
import { type ArtifactManifest, ArtifactManifestSchema, CommandOutcome } from "@redflag/gen/command_pb";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { access, mkdir, readFile, rename, rm } from "node:fs/promises";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { printable, verifyEnvelope } from "../trust/envelope.ts";
import { describeFailure, runProcess, which } from "../run-process.ts";
import { currentRelease, recordUpgrade } from "../state/upgrade.ts";
import { AGENT_VERSION } from "../version.ts";
import type { Executor, ExecutorOutcome } from "./types.ts";

export const MANIFEST_TYPE = "redflag.v1.ArtifactManifest";
const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
// The file a release must hold (one of them); the service runs <install dir>/current/bin/redflag-agent
// (on Windows the single-file build is redflag-agent.exe).
export const releaseEntries = (platform: NodeJS.Platform = process.platform): string[] =>
  platform === "win32" ? [path.join("bin", "redflag-agent.exe"), path.join("bin", "redflag-agent")] : [path.join("bin", "redflag-agent")];

// The platform names an artifact may be built for: "linux-x64", "darwin-arm64", "win32-x64" …
// or "any" for a release that runs wherever Node runs.
export const thisPlatform = () => `${process.platform}-${process.arch}`;

const failed = (message: string): ExecutorOutcome => ({ outcome: CommandOutcome.FAILED, message });

// update_agent: verify the manifest's own signature with a pinned key, download the artifact
// from this agent's own control plane (its release registry, nowhere else),
// check its size and SHA-256 against the manifest, unpack it beside the running release and
// record it as pending (upgrade.json); then ask the agent to exit once the result is reported.
// The service manager starts this release again, which tries the new one as its child and
// switches <install dir>/current only once that child has completed a poll cycle
// (upgrade-trial.ts). Nothing is unpacked before every check has passed, and the running
// release is never modified.
export const updateAgent: Executor = async (ctx) => {
  if (ctx.command.action.case !== "updateAgent") throw new Error("not an update_agent command");
  const action = ctx.command.action.value;

  const verification = verifyEnvelope(ctx.pins, action.keyId, MANIFEST_TYPE, action.manifest, action.manifestSignature);
  if (!verification.ok) return failed(`artifact manifest refused: ${verification.reason}`);
  let manifest: ArtifactManifest;
  try {
    manifest = fromBinary(ArtifactManifestSchema, action.manifest);
  } catch {
    return failed("artifact manifest refused: the signed bytes are not a redflag.v1.ArtifactManifest");
  }
  if (!VERSION.test(manifest.version)) return failed(`artifact manifest names no usable version (${printable(manifest.version)})`);
  if (manifest.version !== action.version) {
    return failed(`the command asks for version ${printable(action.version)} but the signed manifest is for ${manifest.version}`);
  }
  if (manifest.platform !== "any" && manifest.platform !== thisPlatform()) {
    return failed(`the artifact is built for ${printable(manifest.platform)}; this agent runs on ${thisPlatform()}`);
  }
  if (manifest.sha256.length !== 32) return failed("the signed manifest carries no SHA-256 of the artifact");
  if (manifest.sizeBytes === 0n || manifest.sizeBytes > BigInt(MAX_ARTIFACT_BYTES)) {
    return failed(`the artifact size ${manifest.sizeBytes} is outside 1 byte … ${MAX_ARTIFACT_BYTES} bytes`);
  }
  if (manifest.version === AGENT_VERSION) {
    return { outcome: CommandOutcome.SUCCEEDED, message: `already running version ${AGENT_VERSION}; nothing to do` };
  }
  // Releases come only from the control plane this agent is registered with: its registry
  // sends a path on itself ("downloads/linux-x64?version=…"), resolved against the server URL.
  // The signature and hash make the transport's integrity irrelevant; plain http is allowed.
  if (!ctx.server) return failed("this agent does not know its control plane's URL; agent releases come only from there");
  const server = new URL(ctx.server.url.endsWith("/") ? ctx.server.url : `${ctx.server.url}/`);
  let url: URL;
  try {
    url = new URL(action.downloadUrl, server);
  } catch {
    return failed(`download URL ${printable(action.downloadUrl)} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return failed(`download URL must be http(s), not ${url.protocol}`);
  if (url.origin !== server.origin || url.username || url.password) {
    return failed(
      `refused: the release would be downloaded from ${printable(url.origin)}, not from this agent's control plane (${server.origin}); agent releases come only from its registry`,
    );
  }
  if (ctx.onTrial) {
    return failed(`this agent (${AGENT_VERSION}) is itself a new release on trial; send update_agent again once it has been switched to`);
  }
  if (!ctx.installDir) {
    return failed(
      `cannot update to ${manifest.version}: REDFLAG_AGENT_INSTALL_DIR is not set, so this agent does not know where its releases live (see the agent README)`,
    );
  }

  const releases = path.join(ctx.installDir, "releases");
  const release = path.join(releases, manifest.version);
  await mkdir(releases, { recursive: true, mode: 0o755 });
  const artifact = path.join(releases, `.${manifest.version}-${randomBytes(4).toString("hex")}.download`);
  const staging = path.join(releases, `.${manifest.version}-${randomBytes(4).toString("hex")}.unpack`);
  try {
    const download = await fetchArtifact(url, ctx.server.caFile, artifact, Number(manifest.sizeBytes), ctx.signal);
    if (download.error !== undefined) return failed(download.error);
    const got = Buffer.from(download.sha256);
    if (!got.equals(Buffer.from(manifest.sha256))) {
      return failed(
        `the downloaded artifact does not match the signed manifest: SHA-256 ${got.toString("hex")}, expected ${Buffer.from(manifest.sha256).toString("hex")}; nothing was installed`,
      );
    }

    const tar = await which("tar", ctx.env.PATH ?? "");
    if (!tar) return failed("tar is not installed on this host; cannot unpack the release");
    await mkdir(staging, { mode: 0o755 });
    // GNU and BSD tar both refuse members that climb out with "..", and strip a leading "/".
    const argv = [tar, "-xzf", artifact, "-C", staging, "--no-same-owner", "--no-same-permissions"];
    const unpacked = await runProcess(argv, { env: ctx.env, signal: ctx.signal, timeoutMs: Math.max(1000, ctx.deadline - Date.now()) });
    if (unpacked.exitCode !== 0) return failed(`${describeFailure("unpacking the release", unpacked)}; nothing was installed`);
    const entries = releaseEntries();
    if (!(await Promise.all(entries.map((e) => exists(path.join(staging, e))))).some(Boolean)) {
      return failed(`the release has no ${entries.join(" or ")}; nothing was installed`);
    }
    // Never replaces the release that runs (a release of that version is "nothing to do" above,
    // but `current` may point at a directory of another name).
    if ((await currentRelease(ctx.installDir)) === manifest.version) return failed(`releases/${manifest.version} is the release in use; nothing was installed`);
    await rm(release, { recursive: true, force: true });
    await rename(staging, release);

    // `current` stays where it is: the next start of this release tries the new one as its
    // child and switches only once it has completed a poll cycle (upgrade-trial.ts).
    await recordUpgrade(ctx.installDir, { version: manifest.version, from: AGENT_VERSION });
    ctx.requestRestart(`installed ${manifest.version}; trying it`);
    return {
      outcome: CommandOutcome.SUCCEEDED,
      message: `installed version ${manifest.version} beside ${AGENT_VERSION}; the agent restarts to try it and switches to it once it has completed a poll cycle (else it stays on ${AGENT_VERSION})`,
    };
  } finally {
    await rm(artifact, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
};

type Download = { sha256: Uint8Array; error?: undefined } | { error: string };

// No bytes for this long ends a download (a stalled connection, a server that stopped sending).
const STALL_MS = 60_000;

// GET over http(s) with the CA this agent trusts for its control plane (its registration's
// --ca-file), no redirects: the release must come from that server itself.
async function fetchArtifact(url: URL, caFile: string | undefined, file: string, expectedBytes: number, signal: AbortSignal): Promise<Download> {
  const where = `${url.origin}${url.pathname}${url.search}`;
  let ca: Buffer | undefined;
  if (url.protocol === "https:" && caFile) {
    try {
      ca = await readFile(caFile);
    } catch (err) {
      return { error: `cannot read the CA file ${caFile}: ${(err as Error).message}` };
    }
  }
  let response: IncomingMessage;
  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      const get = url.protocol === "https:" ? https.get : http.get;
      const req = get(url, { signal, timeout: STALL_MS, headers: { "user-agent": `redflag-agent/${AGENT_VERSION}` }, ...(ca ? { ca } : {}) }, resolve);
      req.on("timeout", () => req.destroy(new Error(`no answer for ${STALL_MS / 1000} s`)));
      req.on("error", reject);
    });
  } catch (err) {
    return { error: `downloading ${where} failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  if (response.statusCode !== 200) {
    response.resume();
    return { error: `downloading ${where} failed: HTTP ${response.statusCode}` };
  }
  const announced = Number(response.headers["content-length"] ?? NaN);
  if (announced > expectedBytes) {
    response.destroy();
    return { error: `the artifact is larger than the ${expectedBytes} bytes the signed manifest says; nothing was installed` };
  }
  const hash = createHash("sha256");
  let size = 0;
  let tooBig = false;
  response.setTimeout(STALL_MS, () => response.destroy(new Error(`no data for ${STALL_MS / 1000} s`)));
  response.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size > expectedBytes) {
      tooBig = true;
      response.destroy(new Error("larger than the manifest says"));
      return;
    }
    hash.update(chunk);
  });
  try {
    await pipeline(response, createWriteStream(file, { mode: 0o600 }));
  } catch (err) {
    if (tooBig) return { error: `the artifact is larger than the ${expectedBytes} bytes the signed manifest says; nothing was installed` };
    return { error: `downloading ${where} failed: ${(err as Error).message}` };
  }
  if (size !== expectedBytes) return { error: `the artifact is ${size} bytes, the signed manifest says ${expectedBytes}; nothing was installed` };
  return { sha256: new Uint8Array(hash.digest()) };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

import { fromBinary } from "@bufbuild/protobuf";
import { type ArtifactManifest, ArtifactManifestSchema, CommandOutcome } from "@redflag/gen/command_pb";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { access, mkdir, readlink, rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { printable, verifyEnvelope } from "../envelope.ts";
import { describeFailure, runProcess, which } from "../run-process.ts";
import { recordUpgrade, switchCurrent } from "../state/upgrade.ts";
import { AGENT_VERSION } from "../version.ts";
import type { Executor, ExecutorOutcome } from "./types.ts";

export const MANIFEST_TYPE = "redflag.v1.ArtifactManifest";
const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
// The file every release must hold; the service runs <install dir>/current/bin/redflag-agent.
export const RELEASE_ENTRY = path.join("bin", "redflag-agent");

// The platform names an artifact may be built for: "linux-x64", "darwin-arm64", "win32-x64" …
// or "any" for a release that runs wherever Node runs.
export const thisPlatform = () => `${process.platform}-${process.arch}`;

const failed = (message: string): ExecutorOutcome => ({ outcome: CommandOutcome.FAILED, message });

// update_agent: verify the manifest's own signature with a pinned key, download the artifact,
// check its size and SHA-256 against the manifest, unpack it beside the running release and
// switch <install dir>/current to it atomically; then ask the agent to exit once the result is
// reported, so the service manager starts the new release. Nothing is unpacked or switched
// before every check has passed, and the running release is never modified.
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
  let url: URL;
  try {
    url = new URL(action.downloadUrl);
  } catch {
    return failed(`download URL ${printable(action.downloadUrl)} is not a URL`);
  }
  // The signature and hash make the transport's integrity irrelevant; plain http is allowed.
  if (url.protocol !== "https:" && url.protocol !== "http:") return failed(`download URL must be http(s), not ${url.protocol}`);
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
    const download = await fetchArtifact(url, artifact, Number(manifest.sizeBytes), ctx.signal);
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
    if (!(await exists(path.join(staging, RELEASE_ENTRY)))) {
      return failed(`the release has no ${RELEASE_ENTRY}; nothing was installed`);
    }
    await rm(release, { recursive: true, force: true });
    await rename(staging, release);

    // Switch atomically (a new symlink renamed over the old one), with the watchdog armed
    // first: a release that never completes a poll cycle is switched back.
    const current = path.join(ctx.installDir, "current");
    const previous = await readlink(current).catch(() => undefined);
    const target = path.join("releases", manifest.version);
    await recordUpgrade(ctx.installDir, { version: manifest.version, from: previous ?? null, to: target });
    await switchCurrent(ctx.installDir, target);
    ctx.requestRestart(`updated to ${manifest.version}`);
    const from = previous ? ` (was ${path.basename(previous)})` : "";
    return {
      outcome: CommandOutcome.SUCCEEDED,
      message: `installed version ${manifest.version}${from}; the agent restarts into it after reporting this result`,
    };
  } finally {
    await rm(artifact, { force: true });
    await rm(staging, { recursive: true, force: true });
  }
};

type Download = { sha256: Uint8Array; error?: undefined } | { error: string };

async function fetchArtifact(url: URL, file: string, expectedBytes: number, signal: AbortSignal): Promise<Download> {
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: "follow" });
  } catch (err) {
    return { error: `downloading ${url.origin}${url.pathname} failed: ${(err as Error).cause ?? (err as Error).message}` };
  }
  if (!response.ok || !response.body) return { error: `downloading ${url.origin}${url.pathname} failed: HTTP ${response.status}` };
  const hash = createHash("sha256");
  let size = 0;
  let tooBig = false;
  const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
  body.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size > expectedBytes) {
      tooBig = true;
      body.destroy(new Error("larger than the manifest says"));
      return;
    }
    hash.update(chunk);
  });
  try {
    await pipeline(body, createWriteStream(file, { mode: 0o600 }));
  } catch (err) {
    if (tooBig) return { error: `the artifact is larger than the ${expectedBytes} bytes the signed manifest says; nothing was installed` };
    return { error: `downloading ${url.origin}${url.pathname} failed: ${(err as Error).message}` };
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

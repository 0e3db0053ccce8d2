import { create } from "@bufbuild/protobuf";
import { pick, plural } from "@redflag/common/plural";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { stat } from "node:fs/promises";
import { scanSession } from "../scan-common.ts";
import {
  type DockerConfig,
  type HttpAnswer,
  HttpFailure,
  type ImageRef,
  RegistryError,
  type RegistryClient,
  createRegistryClient,
  digestsFor,
  dockerConfigPath,
  httpCall,
  loadDockerConfig,
  parseImageRef,
} from "./registry.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

// Docker images: every tagged image pulled from a registry is compared with what its tag names
// on that registry now (local RepoDigest vs. the registry's manifest digest). The Engine API is
// spoken over its Unix socket; the registry over HTTPS.
//
// Which images: all tagged images, because a tag someone pulled is a tag they mean to keep
// current, whether or not a container runs it right now (`docker compose pull` works the same
// way). The container list adds what the images alone cannot say: which outdated images are in
// use, and which containers still run an image whose tag a newer pull already moved (nothing
// to pull for those: they need recreating, which an install does only for the tag it moves).

export const DOCKER = "docker";
export const DEFAULT_SOCKET = "/var/run/docker.sock";
// The API version this code was written against; newer daemons that dropped it (Engine 29+
// needs at least 1.44) are spoken to in their own version. The fields used are the same.
const PREFERRED_API = "1.41";
const REGISTRY_CONCURRENCY = 4;
const REGISTRY_REQUEST_TIMEOUT_MS = 15_000;

// How recreating containers waits (install.ts, recreate.ts): the clock and the patience.
export interface RecreateTiming {
  now(): number;
  sleep(ms: number): Promise<void>;
  // Between two looks at a new container's state.
  pollMs: number;
  // How long a container without a HEALTHCHECK must stay running.
  settleMs: number;
  // How long a HEALTHCHECK may take to say healthy.
  healthTimeoutMs: number;
}

export interface DockerDeps {
  // Engine API socket; default DOCKER_HOST=unix://… from the environment, else
  // /var/run/docker.sock.
  socketPath?: string | undefined;
  // Base URL of a registry API host. Production: https://<host>; tests map hosts to plain-http
  // fakes on 127.0.0.1.
  registryUrl?: ((host: string) => string) | undefined;
  // Docker client config with registry credentials; default $DOCKER_CONFIG/config.json or
  // ~/.docker/config.json.
  configPath?: string | undefined;
  // Clock and patience for new containers coming up (tests: a fake clock).
  recreateTiming?: Partial<RecreateTiming> | undefined;
}

// ---------------------------------------------------------------------------------------------
// The Engine API socket

export type SocketLookup = { path: string } | { missing: string } | { error: string };

export async function findSocket(env: NodeJS.ProcessEnv, deps: DockerDeps = {}): Promise<SocketLookup> {
  let candidate = deps.socketPath;
  const host = env.DOCKER_HOST?.trim();
  if (!candidate && host) {
    if (!host.startsWith("unix://")) {
      return { error: `DOCKER_HOST=${host} is not a Unix socket; the agent only talks to the local Engine API socket (unix://…)` };
    }
    candidate = host.slice("unix://".length);
  }
  candidate ||= DEFAULT_SOCKET;
  try {
    const info = await stat(candidate);
    if (!info.isSocket()) return { error: `${candidate} exists but is not a socket` };
    return { path: candidate };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return { missing: candidate };
    if (code === "EACCES" || code === "EPERM") return { error: `permission denied looking up ${candidate}; run the agent as root or in the docker group` };
    return { error: `${candidate} cannot be checked: ${(err as Error).message}` };
  }
}

export class EngineError extends Error {
  // HTTP status of the Engine's answer; 0 when it did not answer.
  status: number;
  // Why it did not answer: "TIMEOUT", "ABORTED", "EACCES" …; "" when it answered.
  code: string;
  constructor(message: string, status = 0, code = "") {
    super(message);
    this.name = "EngineError";
    this.status = status;
    this.code = code;
  }
}

export interface EngineCall {
  headers?: Record<string, string> | undefined;
  onLine?: ((line: string) => void) | undefined;
  // Sent as JSON.
  json?: unknown;
}

export interface Engine {
  readonly socketPath: string;
  // "/v1.41", or "" when the daemon did not say which versions it speaks.
  readonly prefix: string;
  // Any answer of the daemon (status included); EngineError when it does not answer.
  call(method: string, apiPath: string, opts?: EngineCall): Promise<HttpAnswer>;
  // A 2xx JSON answer, else EngineError with the daemon's message.
  json<T>(apiPath: string): Promise<T>;
}

export function engineFailure(socketPath: string, err: unknown): string {
  const code = err instanceof HttpFailure ? err.code : (err as NodeJS.ErrnoException)?.code;
  switch (code) {
    case "EACCES":
    case "EPERM":
      return `permission denied on ${socketPath}; run the agent as root or in the docker group`;
    case "ECONNREFUSED":
      return `nothing answers on ${socketPath}; is the Docker daemon running?`;
    case "ENOENT":
      return `${socketPath} disappeared; is the Docker daemon running?`;
    case "TIMEOUT":
      return `the Docker Engine API did not answer in time (${(err as Error).message})`;
    case "ABORTED":
      return "stopped";
    default:
      return `the Docker Engine API on ${socketPath} failed: ${(err as Error)?.message ?? String(err)}`;
  }
}

// The message of an Engine API error body ({"message": "…"}), or its text.
export function engineMessage(body: Buffer | string): string {
  const text = body.toString().trim();
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    if (typeof parsed.message === "string") return parsed.message.slice(0, 500);
  } catch {
    // not JSON
  }
  return text.slice(0, 500) || "(no message)";
}

const versionNumber = (v: unknown) => {
  const m = typeof v === "string" ? /^(\d+)\.(\d+)$/.exec(v) : null;
  return m ? Number(m[1]) * 1000 + Number(m[2]) : undefined;
};

// From the daemon's `GET /version`: PREFERRED_API when the daemon still accepts it, else the
// daemon's own version, else unversioned paths (the daemon's current API).
export function pickApiPrefix(version: { ApiVersion?: unknown; MinAPIVersion?: unknown }): string {
  const [max, min, preferred] = [versionNumber(version.ApiVersion), versionNumber(version.MinAPIVersion), versionNumber(PREFERRED_API)!];
  if (max === undefined) return "";
  if (preferred <= max && (min === undefined || preferred >= min)) return `/v${PREFERRED_API}`;
  return `/v${version.ApiVersion as string}`;
}

// Connects to the daemon (`GET /version`, unversioned) and picks the API version to speak.
// Every later call gets what is left until `deadline`.
export async function openEngine(socketPath: string, opts: { signal?: AbortSignal | undefined; deadline: number }): Promise<Engine> {
  const raw = async (method: string, apiPath: string, call: EngineCall = {}) => {
    const left = opts.deadline - Date.now();
    if (left <= 0) throw new EngineError(`the Docker Engine API was not asked (${method} ${apiPath.split("?")[0]}): no time left`, 0, "TIMEOUT");
    try {
      return await httpCall({
        url: `http://docker${apiPath}`,
        socketPath,
        method,
        headers: { ...call.headers, ...(call.json !== undefined ? { "content-type": "application/json" } : {}) },
        body: call.json !== undefined ? JSON.stringify(call.json) : undefined,
        timeoutMs: left,
        signal: opts.signal,
        maxBodyBytes: 64 * 1024 * 1024,
        onLine: call.onLine,
      });
    } catch (err) {
      throw new EngineError(engineFailure(socketPath, err), 0, err instanceof HttpFailure ? err.code : "ERROR");
    }
  };
  const version = await raw("GET", "/version");
  if (version.status !== 200) throw new EngineError(`the Docker Engine API answered ${version.status} to GET /version: ${engineMessage(version.body)}`, version.status);
  let prefix = "";
  try {
    prefix = pickApiPrefix(JSON.parse(version.body.toString("utf8")));
  } catch {
    // unversioned paths
  }
  return {
    socketPath,
    prefix,
    call: (method, apiPath, call) => raw(method, `${prefix}${apiPath}`, call),
    async json<T>(apiPath: string): Promise<T> {
      const res = await raw("GET", `${prefix}${apiPath}`);
      const where = `GET ${apiPath.split("?")[0]}`;
      if (res.status < 200 || res.status > 299) throw new EngineError(`the Docker Engine API answered ${res.status} to ${where}: ${engineMessage(res.body)}`, res.status);
      try {
        return JSON.parse(res.body.toString("utf8")) as T;
      } catch {
        throw new EngineError(`the Docker Engine API answered ${where} with something that is not JSON`, res.status);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Local images

export interface EngineImage {
  Id: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  // Seconds since the epoch.
  Created?: number;
  Containers?: number;
  Size?: number;
}

export interface EngineContainer {
  Id: string;
  Names?: string[] | null;
  // The name the container was created from, or the image ID when that name now names another
  // image (the daemon's own rule).
  Image?: string;
  ImageID?: string;
  State?: string;
  Labels?: Record<string, string> | null;
}

export interface LocalTag {
  ref: ImageRef;
  image: EngineImage;
  // What RepoDigests records for the tag's repository; the first is reported as current.
  digests: string[];
}

export interface LocalTags {
  tags: LocalTag[];
  // Tags with no registry digest: built or loaded here, nothing to compare with.
  withoutDigest: string[];
  // Tags that are not image references this source understands.
  unreadable: string[];
  // Images with no tag at all (dangling, or pulled by digest).
  untagged: number;
}

export function localTags(images: readonly EngineImage[]): LocalTags {
  const result: LocalTags = { tags: [], withoutDigest: [], unreadable: [], untagged: 0 };
  const seen = new Set<string>();
  for (const image of images) {
    const names = (image.RepoTags ?? []).filter((t) => t && t !== "<none>:<none>");
    if (names.length === 0) result.untagged++;
    for (const name of names) {
      if (seen.has(name)) continue;
      seen.add(name);
      const ref = parseImageRef(name);
      if (!ref) {
        result.unreadable.push(name);
        continue;
      }
      const digests = digestsFor(image.RepoDigests, ref);
      if (digests.length === 0) result.withoutDigest.push(name);
      else result.tags.push({ ref, image, digests });
    }
  }
  return result;
}

// Containers whose image lost its tag to a newer pull: the daemon then lists the image ID as
// their Image, and the image has a registry digest but no tag left.
export function supersededContainers(images: readonly EngineImage[], containers: readonly EngineContainer[]): EngineContainer[] {
  const byId = new Map(images.map((i) => [i.Id, i]));
  return containers.filter((c) => {
    const image = c.ImageID ? byId.get(c.ImageID) : undefined;
    if (!image || !c.Image?.startsWith("sha256:")) return false;
    const tagged = (image.RepoTags ?? []).some((t) => t && t !== "<none>:<none>");
    return !tagged && (image.RepoDigests ?? []).length > 0;
  });
}

export const containerName = (c: EngineContainer) => (c.Names?.[0] ?? c.Id.slice(0, 12)).replace(/^\//, "");

// ---------------------------------------------------------------------------------------------
// Registry checks

export interface TagCheck {
  tag: LocalTag;
  remote?: string | undefined;
  error?: string | undefined;
  errorKind?: RegistryError["kind"] | undefined;
}

export const isOutdated = (c: TagCheck) => c.remote !== undefined && !c.tag.digests.includes(c.remote);

// Runs `fn` over `items`, at most `limit` at a time, results in order.
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function registryClientFor(
  config: DockerConfig,
  opts: { registryUrl?: ((host: string) => string) | undefined; signal?: AbortSignal | undefined; deadline: number },
): RegistryClient {
  return createRegistryClient({
    credentials: (registry) => config.auths.get(registry),
    registryUrl: opts.registryUrl,
    signal: opts.signal,
    timeoutMs: () => Math.min(REGISTRY_REQUEST_TIMEOUT_MS, opts.deadline - Date.now()),
  });
}

// Asks each tag's registry what the tag names now; one registry's failure stays with its tags.
export async function checkTags(tags: readonly LocalTag[], client: RegistryClient): Promise<TagCheck[]> {
  return mapLimit(tags, REGISTRY_CONCURRENCY, async (tag) => {
    try {
      return { tag, remote: await client.manifestDigest(tag.ref) };
    } catch (err) {
      const kind = err instanceof RegistryError ? err.kind : undefined;
      return { tag, error: (err as Error).message, errorKind: kind };
    }
  });
}

export function toDockerUpdate(check: TagCheck): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: DOCKER,
    name: check.tag.ref.local,
    currentVersion: check.tag.digests[0] ?? "",
    availableVersion: check.remote ?? "",
    architecture: "",
    repository: check.tag.ref.registry,
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: 0n,
    rebootRequired: false,
  });
}

// "nginx:1.27, redis:7: docker.io rate limit reached (HTTP 429); …": failures grouped by
// reason, at most three reasons shown.
export function describeUnchecked(failed: readonly TagCheck[]): string {
  const byReason = new Map<string, string[]>();
  for (const c of failed) {
    const reason = c.error ?? "unknown error";
    byReason.set(reason, [...(byReason.get(reason) ?? []), c.tag.ref.local]);
  }
  const groups = [...byReason].map(([reason, names]) => `${names.slice(0, 4).join(", ")}${names.length > 4 ? ` and ${names.length - 4} more` : ""}: ${reason}`);
  return `${plural(failed.length, "tag")} could not be checked: ${groups.slice(0, 3).join("; ")}${groups.length > 3 ? `; and ${plural(groups.length - 3, "other reason")}` : ""}`;
}

// Everything a scan learns, for the scanner's message and for the installer.
export interface DockerSurvey {
  engine: Engine;
  config: DockerConfig;
  images: EngineImage[];
  containers: EngineContainer[];
  local: LocalTags;
  checks: TagCheck[];
}

export type SurveyResult = { survey: DockerSurvey } | { notPresent: string } | { failed: string };

// Lists images and containers, then checks the tags `select` keeps (all by default) against
// their registries. Only the Engine API failing fails it.
export async function surveyDocker(
  opts: { env: NodeJS.ProcessEnv; signal?: AbortSignal | undefined; timeoutMs: number },
  deps: DockerDeps = {},
  select: (tags: LocalTag[]) => LocalTag[] = (tags) => tags,
): Promise<SurveyResult> {
  const deadline = Date.now() + opts.timeoutMs;
  const socket = await findSocket(opts.env, deps);
  if ("error" in socket) return { failed: socket.error };
  if ("missing" in socket) return { notPresent: `Docker is not installed or its socket is missing (${socket.missing})` };
  let engine: Engine;
  let images: EngineImage[];
  let containers: EngineContainer[];
  try {
    engine = await openEngine(socket.path, { signal: opts.signal, deadline });
    images = await engine.json<EngineImage[]>("/images/json");
    containers = await engine.json<EngineContainer[]>("/containers/json?all=1");
  } catch (err) {
    return { failed: opts.signal?.aborted ? "scan stopped" : (err as Error).message };
  }
  if (!Array.isArray(images) || !Array.isArray(containers)) return { failed: "the Docker Engine API answered with something that is not a list of images or containers" };
  const config = await loadDockerConfig(deps.configPath ?? dockerConfigPath(opts.env));
  const local = localTags(images.filter((i) => i && typeof i.Id === "string"));
  const client = registryClientFor(config, { registryUrl: deps.registryUrl, signal: opts.signal, deadline });
  const checks = await checkTags(select(local.tags), client);
  if (opts.signal?.aborted) return { failed: "scan stopped" };
  return { survey: { engine, config, images, containers, local, checks } };
}

export async function scanDocker(opts: ScanOptions, deps: DockerDeps = {}): Promise<ScanResult> {
  const s = scanSession(DOCKER, opts);
  const result = await surveyDocker({ env: s.env, signal: opts.signal, timeoutMs: opts.timeoutMs }, deps);
  if ("notPresent" in result) return s.notPresent(result.notPresent);
  if ("failed" in result) return s.failed(result.failed);
  const { survey } = result;
  const outdated = survey.checks.filter(isOutdated);
  const failed = survey.checks.filter((c) => c.error !== undefined);
  const notes: string[] = [`${plural(survey.checks.length - failed.length, "tag")} checked`];

  const used = new Set(survey.containers.map((c) => c.ImageID).filter(Boolean));
  const inUse = outdated.filter((c) => used.has(c.tag.image.Id)).length;
  if (inUse > 0) notes.push(`${plural(inUse, "outdated image")} used by containers (an install recreates them)`);
  if (failed.length > 0) notes.push(describeUnchecked(failed));
  const authFailures = failed.filter((c) => c.errorKind === "auth" && !survey.config.auths.has(c.tag.ref.registry));
  if (authFailures.length > 0 && survey.config.helpers.length > 0) {
    notes.push(`credential helpers (${survey.config.helpers.join(", ")}) are not run; registries behind them cannot be checked`);
  }
  if (survey.config.problem) notes.push(`registry credentials not read: ${survey.config.problem}`);
  if (survey.local.withoutDigest.length > 0) notes.push(`${plural(survey.local.withoutDigest.length, "tag")} without a registry digest skipped (built or loaded locally)`);
  if (survey.local.unreadable.length > 0) notes.push(`${plural(survey.local.unreadable.length, "tag")} not understood: ${survey.local.unreadable.slice(0, 3).join(", ")}`);
  if (survey.local.untagged > 0) notes.push(`${plural(survey.local.untagged, "untagged image")} ignored`);
  const stale = supersededContainers(survey.images, survey.containers);
  if (stale.length > 0) {
    const names = stale.slice(0, 5).map(containerName).join(", ");
    notes.push(
      `${plural(stale.length, "container still runs", "containers still run")} an image ${pick(stale.length, "its", "their")} tag no longer names ` +
        `(${names}${stale.length > 5 ? ", …" : ""}); recreate ${pick(stale.length, "it", "them")} to use the pulled image`,
    );
  }
  return s.ran(outdated.map(toDockerUpdate), notes);
}

export const dockerScanner: Scanner = { name: DOCKER, scan: (opts) => scanDocker(opts) };

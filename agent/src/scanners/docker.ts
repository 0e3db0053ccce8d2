import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { scanSession } from "./common.ts";
import {
  type Credentials,
  type DockerDeps,
  type EngineImage,
  engineJson,
  type ImageRef,
  loadCredentials,
  localDigest,
  parseImageRef,
  remoteDigest,
  socketExists,
  socketPathFrom,
} from "./docker-api.ts";
import type { Scanner, ScanOptions, ScanResult } from "./types.ts";

export const DOCKER = "docker";
const API = "/v1.41";
const REGISTRY_CONCURRENCY = 4;
const REGISTRY_TIMEOUT_MS = 15_000;

export interface TrackedImage {
  ref: ImageRef;
  digest: string;
  image: EngineImage;
}

// Every tagged image pulled from a registry (it has a RepoDigest for its repository); images
// built locally have none and cannot be compared, so they are counted and left out.
export function trackedImages(images: readonly EngineImage[]): { tracked: TrackedImage[]; untracked: number } {
  const tracked: TrackedImage[] = [];
  let untracked = 0;
  for (const image of images) {
    for (const tag of image.RepoTags ?? []) {
      if (tag === "<none>:<none>") continue;
      const ref = parseImageRef(tag);
      const digest = ref && localDigest(image, ref.repository);
      if (!ref || !digest) {
        untracked++;
        continue;
      }
      tracked.push({ ref, digest, image });
    }
  }
  return { tracked, untracked };
}

// Runs `fn` over `items`, at most `limit` at a time.
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

export interface ImageCheck {
  tracked: TrackedImage;
  remote?: string;
  error?: string;
}

// Asks each image's registry for the current digest of its tag.
export async function checkImages(
  tracked: readonly TrackedImage[],
  credentials: Map<string, Credentials>,
  opts: { signal?: AbortSignal | undefined; remaining: () => number; registryUrl: (host: string) => string },
): Promise<ImageCheck[]> {
  return mapLimit(tracked, REGISTRY_CONCURRENCY, async (t) => {
    try {
      const remote = await remoteDigest(t.ref, {
        credentials,
        registryUrl: opts.registryUrl,
        signal: opts.signal,
        timeoutMs: Math.min(REGISTRY_TIMEOUT_MS, opts.remaining()),
      });
      return { tracked: t, remote };
    } catch (err) {
      return { tracked: t, error: (err as Error).message };
    }
  });
}

export function toDockerUpdate(check: ImageCheck): PackageUpdate {
  return create(PackageUpdateSchema, {
    source: DOCKER,
    name: check.tracked.ref.local,
    currentVersion: check.tracked.digest,
    availableVersion: check.remote ?? "",
    architecture: "",
    repository: check.tracked.ref.registry,
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: 0n,
    rebootRequired: false,
  });
}

export const defaultRegistryUrl = (host: string) => `https://${host}`;

export async function scanDocker(opts: ScanOptions, deps: DockerDeps = {}): Promise<ScanResult> {
  const s = scanSession(DOCKER, opts);
  const socket = socketPathFrom(s.env, deps);
  if (socket.error) return s.failed(socket.error);
  if (!(await socketExists(socket.path!))) return s.notPresent(`Docker is not installed or its socket ${socket.path} is missing`);

  let images: EngineImage[];
  try {
    images = await engineJson<EngineImage[]>(socket.path!, `${API}/images/json`, { signal: opts.signal, timeoutMs: s.remaining() });
  } catch (err) {
    return s.failed(`listing images failed: ${(err as Error).message}`);
  }
  const { tracked, untracked } = trackedImages(images);
  const notes: string[] = [];
  const { byHost, helper } = await loadCredentials(s.env, deps);
  const checks = await checkImages(tracked, byHost, { signal: opts.signal, remaining: s.remaining, registryUrl: deps.registryUrl ?? defaultRegistryUrl });
  const outdated = checks.filter((c) => c.remote && c.remote !== c.tracked.digest);
  const failed = checks.filter((c) => c.error);
  notes.push(`${tracked.length} image(s) checked`);
  if (untracked > 0) notes.push(`${untracked} local-only tag(s) skipped (built here, no registry digest)`);
  if (failed.length > 0) {
    const shown = failed.slice(0, 3).map((c) => c.error).join("; ");
    notes.push(`${failed.length} could not be checked: ${shown}${failed.length > 3 ? "; …" : ""}`);
    if (helper) notes.push("credential helpers (credsStore) are not used; put registry credentials in auths");
  }
  if (opts.signal?.aborted) return s.failed("scan stopped");
  return s.ran(outdated.map(toDockerUpdate), notes);
}

export const dockerScanner: Scanner = { name: DOCKER, scan: (opts) => scanDocker(opts) };

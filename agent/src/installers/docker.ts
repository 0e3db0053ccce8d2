import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type PackageRef, ToolOutputSchema } from "@redflag/gen/command_pb";
import {
  type DockerDeps,
  engine,
  engineMessage,
  type EngineImage,
  type ImageRef,
  loadCredentials,
  localDigest,
  parseImageRef,
  registryAuthHeader,
  remoteDigest,
  socketExists,
  socketPathFrom,
} from "../scanners/docker-api.ts";
import { defaultRegistryUrl, DOCKER } from "../scanners/docker.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, OUTPUT_TAIL_CHARS } from "./common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageResult, ToolOutput } from "./types.ts";

const API = "/v1.41";
const DIGEST = /^sha256:[0-9a-f]{64}$/;
export const CONTAINER_NOTE = "pulled; containers keep running the previous image until they are recreated";

// Pulls through the Engine API and records it like a tool run: the request, the progress
// lines' last status, and any error the daemon streamed.
async function pull(
  socketPath: string,
  image: string,
  tag: string,
  auth: Record<string, string>,
  opts: { signal?: AbortSignal | undefined; timeoutMs: number },
): Promise<{ error?: string; output: ToolOutput }> {
  const started = Date.now();
  const query = new URLSearchParams({ fromImage: image, tag });
  const lines: string[] = [];
  let error: string | undefined;
  let status = 0;
  try {
    const res = await engine(socketPath, "POST", `${API}/images/create?${query}`, {
      ...opts,
      headers: auth,
      onLine: (line) => {
        try {
          const event = JSON.parse(line) as { status?: string; error?: string; errorDetail?: { message?: string }; id?: string };
          if (event.error || event.errorDetail?.message) error = event.errorDetail?.message ?? event.error;
          else if (event.status && !event.id) lines.push(event.status);
        } catch {
          lines.push(line);
        }
      },
    });
    status = res.status;
    if (res.status !== 200) error = `the Docker daemon answered ${res.status}: ${engineMessage(res.body || lines.join("\n"))}`;
  } catch (err) {
    error = (err as Error).message;
  }
  const output = create(ToolOutputSchema, {
    argv: ["POST", `${API}/images/create`, `fromImage=${image}`, `tag=${tag}`],
    exitCode: error ? 1 : 0,
    stdoutTail: lines.join("\n").slice(-OUTPUT_TAIL_CHARS),
    stderrTail: (error ?? "").slice(-OUTPUT_TAIL_CHARS),
    duration: durationFromMs(Date.now() - started),
    timedOut: false,
  });
  if (!error && status === 0) error = "the Docker daemon did not answer";
  return { error, output };
}

async function inspect(socketPath: string, name: string, opts: { signal?: AbortSignal | undefined; timeoutMs: number }): Promise<EngineImage | undefined> {
  const res = await engine(socketPath, "GET", `${API}/images/${encodeURIComponent(name)}/json`, opts);
  if (res.status !== 200) return undefined;
  try {
    return JSON.parse(res.body) as EngineImage;
  } catch {
    return undefined;
  }
}

export function createDockerInstaller(deps: DockerDeps = {}): Installer {
  const registryUrl = deps.registryUrl ?? defaultRegistryUrl;

  const session = async (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const socket = socketPathFrom(opts.env, deps);
    const { byHost } = await loadCredentials(opts.env, deps);
    return {
      socket,
      credentials: byHost,
      call: () => ({ signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) }),
    };
  };
  const refOf = (pkg: PackageRef): ImageRef | undefined => parseImageRef(pkg.name);

  // Pulls each image, reporting it from the daemon's RepoDigests before and after.
  const pullAll = async (refs: readonly PackageRef[], opts: InstallOptions, target: (ref: ImageRef, pkg: PackageRef) => { tag: string; pin?: string }): Promise<InstallOutcome> => {
    const s = await session(opts);
    if (s.socket.error) return { packages: [], output: [], rebootRequired: false, error: s.socket.error };
    const socketPath = s.socket.path!;
    const output: ToolOutput[] = [];
    const packages: PackageResult[] = [];
    for (const pkg of refs) {
      const ref = refOf(pkg);
      if (!ref) {
        packages.push(packageResult(pkg, PackageResultState.FAILED, { reason: `${pkg.name} is not an image reference like "nginx:1.27" or "ghcr.io/org/app:latest"` }));
        continue;
      }
      const before = await inspect(socketPath, ref.local, s.call()).catch(() => undefined);
      const from = before ? localDigest(before, ref.repository) : undefined;
      const { tag, pin } = target(ref, pkg);
      const pulled = await pull(socketPath, ref.repository, tag, registryAuthHeader(ref.registry, s.credentials.get(ref.registry)), s.call());
      output.push(pulled.output);
      if (pulled.error) {
        packages.push(packageResult(pkg, PackageResultState.FAILED, { from, to: pin, reason: pulled.error }));
        continue;
      }
      if (pin) {
        // Re-pin: the tag now names the older image, so new containers use it.
        const tagged = await engine(socketPath, "POST", `${API}/images/${encodeURIComponent(`${ref.repository}@${pin}`)}/tag?${new URLSearchParams({ repo: ref.repository, tag: ref.tag })}`, s.call());
        if (tagged.status !== 201 && tagged.status !== 200) {
          packages.push(packageResult(pkg, PackageResultState.FAILED, { from, to: pin, reason: `tagging ${ref.repository}@${pin} as ${ref.local} failed: ${engineMessage(tagged.body)}` }));
          continue;
        }
      }
      const after = await inspect(socketPath, ref.local, s.call()).catch(() => undefined);
      const afterDigest = after ? (pin && after.RepoDigests?.some((d) => d.endsWith(`@${pin}`)) ? pin : localDigest(after, ref.repository)) : undefined;
      if (after && before && after.Id === before.Id) {
        packages.push(packageResult(pkg, PackageResultState.SKIPPED, { from, to: afterDigest, reason: "already up to date" }));
      } else if (after) {
        packages.push(packageResult(pkg, PackageResultState.INSTALLED, { from, to: afterDigest, reason: CONTAINER_NOTE }));
      } else {
        packages.push(packageResult(pkg, PackageResultState.FAILED, { from, reason: `${ref.local} is not present after the pull` }));
      }
    }
    return { packages, output, rebootRequired: false };
  };

  const requireSocket = async (env: NodeJS.ProcessEnv) => {
    const socket = socketPathFrom(env, deps);
    return socket.path !== undefined && (await socketExists(socket.path));
  };

  return {
    source: DOCKER,
    present: requireSocket,

    // No pull: the registry says what the tag names now, the daemon what is here.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = await session(opts);
      if (s.socket.error) return { changes: [], output: [], error: s.socket.error };
      const changes = [];
      for (const pkg of packages) {
        const ref = refOf(pkg);
        if (!ref) return { changes: [], output: [], error: `${pkg.name} is not an image reference like "nginx:1.27"` };
        const image = await inspect(s.socket.path!, ref.local, s.call()).catch(() => undefined);
        const from = image ? localDigest(image, ref.repository) : undefined;
        let to: string;
        try {
          to = pkg.version || (await remoteDigest(ref, { credentials: s.credentials, registryUrl, ...s.call() }));
        } catch (err) {
          return { changes: [], output: [], error: (err as Error).message };
        }
        if (from === to) continue;
        changes.push(packageChange(image ? PackageChangeKind.UPGRADE : PackageChangeKind.INSTALL, DOCKER, ref.local, { from, to }));
      }
      return { changes, output: [] };
    },

    // A pinned version (from a dry run) is the digest the tag named then; the pull takes the
    // tag, and the result says which digest arrived.
    install: (packages, opts) => pullAll(packages, opts, (ref) => ({ tag: ref.tag })),

    // Re-pin the tag to an earlier digest: pull repo@digest, tag it repo:tag.
    async rollback(pkg, opts) {
      if (!DIGEST.test(pkg.version)) {
        return {
          packages: [packageResult(pkg, PackageResultState.FAILED, { to: pkg.version, reason: `a Docker rollback needs the image digest (sha256:…), not "${pkg.version}"` })],
          output: [],
          rebootRequired: false,
        };
      }
      return pullAll([pkg], opts, () => ({ tag: pkg.version, pin: pkg.version }));
    },
  };
}

export const dockerInstaller: Installer = createDockerInstaller();

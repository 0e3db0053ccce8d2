import { create } from "@bufbuild/protobuf";
import { type PackageRef, PackageRefSchema } from "@redflag/gen/command_pb";
import {
  DOCKER,
  type DockerDeps,
  EngineError,
  type EngineContainer,
  type EngineImage,
  type LocalTag,
  engineMessage,
  findSocket,
  isOutdated,
  openEngine,
  surveyDocker,
} from "./scan.ts";
import {
  DIGEST,
  type ImageRef,
  canonicalName,
  digestsFor,
  dockerConfigPath,
  loadDockerConfig,
  parseImageRef,
  parseRepository,
  registryAuthHeader,
} from "./registry.ts";
import { record, type Session, step } from "./engine-session.ts";
import { DEFAULT_TIMING, type ImageConfig, recreateUsers } from "./recreate.ts";
import { NOT_INSTALLED, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput, VersionsOutcome } from "../types.ts";

// Docker images through the Engine API (no docker CLI):
// - install pulls the tag (`POST /images/create?fromImage=repo&tag=tag`); a pinned version is a
//   digest, pulled as `repo@digest` and tagged `repo:tag`, so exactly the approved image lands.
//   When that moved the tag to another image, the containers created from the tag are
//   recreated on it as their owner made them, or all put back with the tag (recreate.ts).
// - dry run asks the registry what each tag names now (as the scanner does); nothing is pulled.
// - rollback re-pins the tag: the earlier digest (kept locally, else pulled as `repo@digest`)
//   is tagged `repo:tag` again, and the containers created from the tag are recreated on it.

const NOT_A_REF = (name: string) => `"${name}" is not an image reference like "nginx:1.27" or "ghcr.io/org/app:latest"`;
const NOT_A_DIGEST = (version: string) => `a Docker image version is its digest (sha256:<64 hex>), not "${version}"`;

// A hold names "repo:tag" or a whole "repo", in any spelling Docker accepts for it.
export function isHeld(ref: ImageRef, holds: ReadonlySet<string>): boolean {
  for (const hold of holds) {
    if (hold === ref.local || hold === ref.repository) return true;
    const tagged = hold.lastIndexOf(":") > hold.lastIndexOf("/");
    if (tagged) {
      const h = parseImageRef(hold);
      if (h && canonicalName(h) === canonicalName(ref) && h.tag === ref.tag) return true;
    } else {
      const h = parseRepository(hold);
      if (h && canonicalName(h) === canonicalName(ref)) return true;
    }
  }
  return false;
}

const sameTag = (a: ImageRef, b: ImageRef) => canonicalName(a) === canonicalName(b) && a.tag === b.tag;

// The local image a tag names, from the image list.
const imageTagged = (images: readonly EngineImage[], ref: ImageRef) =>
  images.find((i) => (i.RepoTags ?? []).some((t) => {
    const other = parseImageRef(t);
    return other !== undefined && sameTag(other, ref);
  }));

type Begun = { session: Session; error?: undefined } | { session?: undefined; error: string };

async function begin(opts: InstallOptions, deps: DockerDeps): Promise<Begun> {
  const socket = await findSocket(opts.env, deps);
  if ("error" in socket) return { error: socket.error };
  if ("missing" in socket) return { error: `Docker is not installed or its socket is missing (${socket.missing})` };
  try {
    const deadline = Date.now() + opts.timeoutMs;
    const engine = await openEngine(socket.path, { signal: opts.signal, deadline });
    const config = await loadDockerConfig(deps.configPath ?? dockerConfigPath(opts.env));
    return { session: { engine, config, output: [], env: opts.env, signal: opts.signal, deadline } };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

const failAll = (refs: readonly PackageRef[], reason: string, output: ToolOutput[] = []): InstallOutcome => ({
  packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason })),
  output,
  rebootRequired: false,
  error: reason,
});

// `GET /images/{name}/json`: undefined when there is no such image.
async function inspect(s: Session, name: string): Promise<(EngineImage & { Config?: ImageConfig }) | undefined> {
  const res = await s.engine.call("GET", `/images/${name}/json`);
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new EngineError(`the Docker Engine API answered ${res.status} to inspecting ${name}: ${engineMessage(res.body)}`, res.status);
  try {
    return JSON.parse(res.body.toString("utf8")) as EngineImage;
  } catch {
    throw new EngineError(`the Docker Engine API answered inspecting ${name} with something that is not JSON`, res.status);
  }
}

// Progress lines worth keeping in the record (not every layer's byte counts).
const TRANSIENT = /^(Waiting|Downloading|Extracting|Verifying Checksum|Download complete|Pulling fs layer|Already exists)$/;

interface PullEvent {
  status?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
}

// `POST /images/create`, its JSON-lines progress read as it streams. An `error`/`errorDetail`
// line is the daemon's reason the pull failed (the HTTP status is already 200 by then).
async function pull(s: Session, ref: ImageRef, tagOrDigest: string): Promise<{ error?: string; digest?: string }> {
  const started = Date.now();
  const query = new URLSearchParams({ fromImage: ref.repository, tag: tagOrDigest });
  const apiPath = `/images/create?${query}`;
  const kept: string[] = [];
  let error: string | undefined;
  let digest: string | undefined;
  let exitCode = 0;
  let timedOut = false;
  const onLine = (line: string) => {
    let event: PullEvent;
    try {
      event = JSON.parse(line) as PullEvent;
    } catch {
      kept.push(line);
      return;
    }
    if (event.errorDetail?.message || event.error) {
      error = event.errorDetail?.message || event.error;
      return;
    }
    const status = event.status ?? "";
    const d = /^Digest: (sha256:[0-9a-f]{64})$/.exec(status);
    if (d) digest = d[1];
    if (!TRANSIENT.test(status)) kept.push(event.id && !status.startsWith("Pulling from") ? `${event.id}: ${status}` : status);
  };
  try {
    const creds = s.config.auths.get(ref.registry);
    const res = await s.engine.call("POST", apiPath, { headers: registryAuthHeader(creds), onLine });
    if (res.status < 200 || res.status > 299) error = `the Docker daemon refused the pull (HTTP ${res.status}): ${engineMessage(res.body)}`;
    if (error) exitCode = 1;
  } catch (err) {
    const e = err as EngineError;
    const what = tagOrDigest.startsWith("sha256:") ? `${ref.repository}@${tagOrDigest}` : `${ref.repository}:${tagOrDigest}`;
    error = `pulling ${what} failed: ${e.message}`;
    exitCode = -1;
    timedOut = e.code === "TIMEOUT";
  }
  record(s, ["POST", `${s.engine.prefix}${apiPath}`], started, { exitCode, stdout: kept.join("\n"), error, timedOut });
  return { error, digest };
}

// `POST /images/{source}/tag?repo=…&tag=…`.
async function tagImage(s: Session, source: string, ref: ImageRef): Promise<string | undefined> {
  const apiPath = `/images/${source}/tag?${new URLSearchParams({ repo: ref.repository, tag: ref.tag })}`;
  return (await step(s, "POST", apiPath, `tagging ${source} as ${ref.local}`)).error;
}

// Every container of the host (image IDs included); empty when the list cannot be had.
async function listContainers(s: Session): Promise<EngineContainer[]> {
  try {
    const list = await s.engine.json<EngineContainer[]>("/containers/json?all=1");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

interface Bring {
  // The digest to pin the tag to; undefined: the newest.
  pin: string | undefined;
  // The host's containers before the pull.
  containers: readonly EngineContainer[];
  allowNew: boolean;
  rollback: boolean;
  holds: ReadonlySet<string>;
  deps: DockerDeps;
}

// Brings one tag to the newest image (pin undefined) or to exactly `pin`, reports it from the
// daemon's own RepoDigests before and after, and recreates the containers created from the tag
// when it moved to another image (a failure there puts the tag back and FAILS the package).
// A tag the host does not have is pulled only as a new dependency of a confirmed update
// (`allowNew`): an update never brings in an image, from whatever registry, that was not here.
async function bringTag(s: Session, pkg: PackageRef, how: Bring): Promise<PackageResult> {
  const { pin, containers, allowNew, holds, deps } = how;
  const ref = parseImageRef(pkg.name);
  if (!ref || pkg.name.startsWith("-")) return packageResult(pkg, PackageResultState.FAILED, { to: pkg.version, reason: NOT_A_REF(pkg.name) });
  const fail = (reason: string, from?: string) => packageResult(pkg, PackageResultState.FAILED, { from, to: pin, reason });
  let before: Awaited<ReturnType<typeof inspect>>;
  try {
    before = await inspect(s, ref.local);
  } catch (err) {
    return fail((err as Error).message);
  }
  if (!before && !allowNew) return packageResult(pkg, PackageResultState.SKIPPED, { to: pin, reason: NOT_INSTALLED });
  const fromDigests = before ? digestsFor(before.RepoDigests, ref) : [];
  const from = fromDigests[0];
  if (pin && fromDigests.includes(pin)) {
    return packageResult(pkg, PackageResultState.SKIPPED, { from: pin, to: pin, reason: `${ref.local} already names ${pin}` });
  }

  let pulledDigest: string | undefined;
  if (pin) {
    const byDigest = `${ref.repository}@${pin}`;
    let kept: EngineImage | undefined;
    try {
      kept = await inspect(s, byDigest);
    } catch (err) {
      return fail((err as Error).message, from);
    }
    // An earlier image often is still here (untagged): no registry needed then.
    if (!kept) {
      const pulled = await pull(s, ref, pin);
      if (pulled.error) return fail(pulled.error, from);
    }
    const tagError = await tagImage(s, byDigest, ref);
    if (tagError) return fail(tagError, from);
  } else {
    const pulled = await pull(s, ref, ref.tag);
    if (pulled.error) return fail(pulled.error, from);
    pulledDigest = pulled.digest;
  }

  let after: EngineImage | undefined;
  try {
    after = await inspect(s, ref.local);
  } catch (err) {
    return fail((err as Error).message, from);
  }
  if (!after) return fail(`${ref.local} is not present after the pull`, from);
  const afterDigests = digestsFor(after.RepoDigests, ref);
  const want = pin ?? pulledDigest;
  const to = want && afterDigests.includes(want) ? want : afterDigests[0];
  if (pin && to !== pin) return fail(`${ref.local} does not name ${pin} after re-tagging`, from);
  const changed = !before || after.Id !== before.Id || (to !== undefined && !fromDigests.includes(to));
  if (!changed) return packageResult(pkg, PackageResultState.SKIPPED, { from, to, reason: "already up to date" });
  if (!before || before.Id === after.Id) return packageResult(pkg, PackageResultState.INSTALLED, { from, to, reason: "no container used the previous image" });
  const previous = before;
  const recreated = await recreateUsers(
    s,
    {
      ref,
      previousImage: previous.Id,
      previousConfig: previous.Config,
      containers,
      target: how.rollback ? "the earlier image" : "the new image",
      held: (name) => {
        const r = parseImageRef(name);
        return r !== undefined && isHeld(r, holds);
      },
      repin: () => tagImage(s, previous.Id, ref),
    },
    { ...DEFAULT_TIMING, ...deps.recreateTiming },
  );
  return packageResult(pkg, recreated.failed ? PackageResultState.FAILED : PackageResultState.INSTALLED, { from, to, reason: recreated.reason });
}

// The registry's view of every pending tag of this host (the scan), holds left out.
async function pendingTags(opts: InstallOptions, deps: DockerDeps): Promise<{ tags: LocalTag[]; remote: Map<LocalTag, string>; error?: string }> {
  const result = await surveyDocker({ env: opts.env, signal: opts.signal, timeoutMs: opts.timeoutMs }, deps);
  if ("notPresent" in result) return { tags: [], remote: new Map(), error: result.notPresent };
  if ("failed" in result) return { tags: [], remote: new Map(), error: result.failed };
  const outdated = result.survey.checks.filter(isOutdated).filter((c) => !isHeld(c.tag.ref, opts.holds));
  return { tags: outdated.map((c) => c.tag), remote: new Map(outdated.map((c) => [c.tag, c.remote!])) };
}

export function createDockerInstaller(deps: DockerDeps = {}): Installer {
  return {
    source: DOCKER,

    async present(env) {
      return "path" in (await findSocket(env, deps));
    },

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      if (packages.length === 0) {
        const pending = await pendingTags(opts, deps);
        if (pending.error) return { changes: [], output: [], error: pending.error };
        const changes = pending.tags.map((t) =>
          packageChange(PackageChangeKind.UPGRADE, DOCKER, t.ref.local, { from: t.digests[0], to: pending.remote.get(t) }),
        );
        return { changes, output: [] };
      }

      const wanted: { pkg: PackageRef; ref: ImageRef }[] = [];
      for (const pkg of packages) {
        const ref = parseImageRef(pkg.name);
        if (!ref || pkg.name.startsWith("-")) return { changes: [], output: [], error: NOT_A_REF(pkg.name) };
        if (pkg.version && !DIGEST.test(pkg.version)) return { changes: [], output: [], error: NOT_A_DIGEST(pkg.version) };
        wanted.push({ pkg, ref });
      }
      // Only the requested tags without a pinned digest are asked of their registries; a tag
      // not here yet is asked too (the pull would install it).
      const select = (tags: LocalTag[]) =>
        wanted.filter((w) => !w.pkg.version).map((w) => tags.find((t) => sameTag(t.ref, w.ref)) ?? { ref: w.ref, image: { Id: "" }, digests: [] });
      const result = await surveyDocker({ env: opts.env, signal: opts.signal, timeoutMs: opts.timeoutMs }, deps, select);
      if ("notPresent" in result) return { changes: [], output: [], error: result.notPresent };
      if ("failed" in result) return { changes: [], output: [], error: result.failed };
      const { survey } = result;
      const changes: PackageChange[] = [];
      const problems: string[] = [];
      for (const { pkg, ref } of wanted) {
        const local = imageTagged(survey.images, ref);
        const current = local ? digestsFor(local.RepoDigests, ref) : [];
        let target = pkg.version;
        if (!target) {
          const check = survey.checks.find((c) => sameTag(c.tag.ref, ref));
          if (!check?.remote) {
            problems.push(`${ref.local}: ${check?.error ?? "not checked"}`);
            continue;
          }
          target = check.remote;
        }
        if (current.includes(target)) continue;
        changes.push(packageChange(local ? PackageChangeKind.UPGRADE : PackageChangeKind.INSTALL, DOCKER, pkg.name, { from: current[0], to: target }));
      }
      if (problems.length > 0) return { changes: [], output: [], error: `could not check ${problems.join("; ")}` };
      return { changes, output: [] };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      // One budget for the listing (install everything) and the pulls.
      const deadline = Date.now() + opts.timeoutMs;
      let refs: readonly PackageRef[] = packages;
      if (packages.length === 0) {
        const pending = await pendingTags(opts, deps);
        if (pending.error) return { packages: [], output: [], rebootRequired: false, error: pending.error };
        refs = pending.tags.map((t) => create(PackageRefSchema, { source: DOCKER, name: t.ref.local }));
        if (refs.length === 0) return { packages: [], output: [], rebootRequired: false };
      }
      for (const pkg of refs) {
        if (pkg.version && !DIGEST.test(pkg.version)) {
          // Refuse the lot before anything is pulled: a version is always a digest here.
          return failAll(refs, `${pkg.name}: ${NOT_A_DIGEST(pkg.version)}`);
        }
      }
      const begun = await begin({ ...opts, timeoutMs: deadline - Date.now() }, deps);
      if (!begun.session) return failAll(refs, begun.error);
      const s = begun.session;
      const containers = await listContainers(s);
      const results: PackageResult[] = [];
      for (const pkg of refs) {
        if (opts.signal?.aborted) {
          results.push(packageResult(pkg, PackageResultState.FAILED, { to: pkg.version, reason: "stopped before it was pulled" }));
          continue;
        }
        results.push(await bringTag(s, pkg, { pin: pkg.version || undefined, containers, allowNew: opts.newPackages?.has(pkg.name) === true, rollback: false, holds: opts.holds, deps }));
      }
      return { packages: results, output: s.output, rebootRequired: false };
    },

    // Re-pins the tag to an earlier digest; see the top of this file.
    async rollback(pkg, opts): Promise<InstallOutcome> {
      if (!DIGEST.test(pkg.version)) return failAll([pkg], `rollback needs the earlier image digest: ${NOT_A_DIGEST(pkg.version)}`);
      if (!parseImageRef(pkg.name)) return failAll([pkg], NOT_A_REF(pkg.name));
      const begun = await begin(opts, deps);
      if (!begun.session) return failAll([pkg], begun.error);
      const s = begun.session;
      const result = await bringTag(s, pkg, { pin: pkg.version, containers: await listContainers(s), allowNew: false, rollback: true, holds: opts.holds, deps });
      return { packages: [result], output: s.output, rebootRequired: false };
    },

    // The earlier images of the tag's repository still on the host (an install or recreate
    // leaves the previous image behind, untagged, until it is pruned), newest first, by digest.
    // Digests the registry still has but the host does not are not listed.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const ref = parseImageRef(pkg.name);
      if (!ref || pkg.name.startsWith("-")) return { installed: "", versions: [], output: [], error: NOT_A_REF(pkg.name) };
      const begun = await begin(opts, deps);
      if (!begun.session) return { installed: "", versions: [], output: [], error: begun.error };
      const s = begun.session;
      try {
        const images = await s.engine.json<EngineImage[]>("/images/json");
        const current = imageTagged(images, ref);
        if (!current) return { installed: "", versions: [], output: s.output };
        const now = digestsFor(current.RepoDigests, ref);
        const created = (i: EngineImage) => (i.Created ? `, created ${new Date(i.Created * 1000).toISOString().replace(/\.\d+Z$/, "Z")}` : "");
        const earlier = images
          .filter((i) => i.Id !== current.Id)
          .sort((a, b) => (b.Created ?? 0) - (a.Created ?? 0))
          .flatMap((i) => digestsFor(i.RepoDigests, ref).filter((d) => !now.includes(d)).map((version) => ({ version, description: `kept on this host${created(i)}` })));
        return { installed: now[0] ?? current.Id, versions: rollbackVersions(earlier), output: s.output };
      } catch (err) {
        return { installed: "", versions: [], output: s.output, error: (err as Error).message };
      }
    },
  };
}

export const dockerInstaller: Installer = createDockerInstaller();

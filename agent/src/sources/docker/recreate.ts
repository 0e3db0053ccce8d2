import { stat } from "node:fs/promises";
import path from "node:path";
import { runProcess, which } from "../../run-process.ts";
import { record, type Session, step } from "./engine-session.ts";
import { type ImageRef, canonicalName, formatMs, parseImageRef } from "./registry.ts";
import { type EngineContainer, type RecreateTiming, containerName, engineMessage } from "./scan.ts";

export type { RecreateTiming };

// After a pull moved a tag to a new image, the containers that ran the previous image are
// recreated on the new one the way their owner made them:
// - plain containers through the Engine API, with their own configuration (inspect → create
//   `<name>-redflag-next` → stop and rename the old one `<name>-redflag-previous` → rename the
//   new one `<name>` → start), volumes and networks carried over;
// - Compose containers through `docker compose … up -d --no-deps <service>` with the project's
//   own files; without the docker CLI or those files they are left as they are (Compose would
//   not know a container made behind its back).
// Each new container must come up healthy (its HEALTHCHECK) or stay running; if one does not,
// every container of the tag goes back to the previous image, the tag is re-pinned to it, and
// the package FAILS. Only when all are up are the previous containers removed.
// Left alone: containers created from another name of the image (another tag, a digest), held
// ones, and those labelled io.redflag.recreate=false.

export const OPT_OUT_LABEL = "io.redflag.recreate";
const COMPOSE_PROJECT = "com.docker.compose.project";
const COMPOSE_SERVICE = "com.docker.compose.service";
const COMPOSE_FILES = "com.docker.compose.project.config_files";
const COMPOSE_DIR = "com.docker.compose.project.working_dir";

export const DEFAULT_TIMING: RecreateTiming = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  pollMs: 1000,
  settleMs: 10_000,
  healthTimeoutMs: 120_000,
};

interface Mount {
  Type?: string;
  Name?: string;
  Destination?: string;
  Driver?: string;
  RW?: boolean;
}

interface Endpoint {
  Aliases?: string[] | null;
  IPAMConfig?: unknown;
  Links?: string[] | null;
  DriverOpts?: Record<string, string> | null;
}

interface ContainerState {
  Status?: string;
  Running?: boolean;
  Restarting?: boolean;
  ExitCode?: number;
  Error?: string;
  Health?: { Status?: string; Log?: { ExitCode?: number; Output?: string }[] | null } | null;
}

export interface ContainerInspect {
  Id: string;
  Name?: string;
  RestartCount?: number;
  Config?: Record<string, unknown> & { Image?: string; Hostname?: string; Env?: string[] | null; Labels?: Record<string, string> | null; StopTimeout?: number };
  HostConfig?: Record<string, unknown> & { Binds?: string[] | null; Mounts?: { Target?: string }[] | null; NetworkMode?: string };
  NetworkSettings?: { Networks?: Record<string, Endpoint> | null };
  Mounts?: Mount[] | null;
  State?: ContainerState;
}

// The image configuration a container inherited (`GET /images/{id}/json` → Config).
export type ImageConfig = Record<string, unknown> & { Env?: string[] | null; Labels?: Record<string, string> | null };

export interface TagMove {
  ref: ImageRef;
  // The image the tag named before, and the one it names now.
  previousImage: string;
  previousConfig?: ImageConfig | undefined;
  // How the result names the image the tag moved to: "the new image", "the earlier image".
  target: string;
  // The containers of the host listed before the pull, with their image IDs.
  containers: readonly EngineContainer[];
  held(name: string): boolean;
  // Points the tag back at the previous image; an error in words.
  repin(): Promise<string | undefined>;
}

export interface Recreated {
  failed: boolean;
  reason: string;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
const nameOf = (c: ContainerInspect) => (c.Name ?? c.Id.slice(0, 12)).replace(/^\//, "");
const listNames = (names: readonly string[]) => `${names.slice(0, 5).join(", ")}${names.length > 5 ? ` and ${names.length - 5} more` : ""}`;

async function inspectContainer(s: Session, id: string): Promise<ContainerInspect> {
  return s.engine.json<ContainerInspect>(`/containers/${encodeURIComponent(id)}/json`);
}

// The body of `POST /containers/create` that makes `c` again on `image`. Values the container
// only inherited from the previous image (its Env entries, labels, command …) are left out so
// the new image's own apply; the old container's volumes become explicit mounts, so anonymous
// volumes carry over too and no data is left behind.
export function createBody(c: ContainerInspect, image: string, previous: ImageConfig = {}): { body: Record<string, unknown>; extraNetworks: [string, Endpoint][] } {
  const config: Record<string, unknown> = { ...c.Config, Image: image };
  if (typeof config.Hostname === "string" && config.Hostname && c.Id.startsWith(config.Hostname)) delete config.Hostname;
  for (const key of ["Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Healthcheck", "StopSignal", "Shell"]) {
    if (key in config && sameJson(config[key], previous[key])) delete config[key];
  }
  const inherited = new Set(previous.Env ?? []);
  if (Array.isArray(config.Env)) config.Env = (config.Env as string[]).filter((e) => !inherited.has(e));
  if (config.Labels && typeof config.Labels === "object") {
    const labels = Object.entries(config.Labels as Record<string, string>).filter(([k, v]) => previous.Labels?.[k] !== v);
    config.Labels = Object.fromEntries(labels);
  }

  const hostConfig: Record<string, unknown> = { ...c.HostConfig };
  const taken = new Set<string>([
    ...(c.HostConfig?.Binds ?? []).map((b) => b.split(":")[1] ?? ""),
    ...(c.HostConfig?.Mounts ?? []).map((m) => m.Target ?? ""),
  ]);
  const volumes = (c.Mounts ?? [])
    .filter((m) => m.Type === "volume" && m.Name && m.Destination && !taken.has(m.Destination))
    .map((m) => ({
      Type: "volume",
      Source: m.Name,
      Target: m.Destination,
      ReadOnly: m.RW === false,
      ...(m.Driver && m.Driver !== "local" ? { VolumeOptions: { DriverConfig: { Name: m.Driver } } } : {}),
    }));
  if (volumes.length > 0) hostConfig.Mounts = [...(c.HostConfig?.Mounts ?? []), ...volumes];

  const shortId = c.Id.slice(0, 12);
  const endpoint = (e: Endpoint): Endpoint => ({
    ...(e.IPAMConfig ? { IPAMConfig: e.IPAMConfig } : {}),
    ...(e.Links?.length ? { Links: e.Links } : {}),
    ...(e.DriverOpts ? { DriverOpts: e.DriverOpts } : {}),
    Aliases: (e.Aliases ?? []).filter((a) => a !== shortId && a !== c.Id),
  });
  const mode = c.HostConfig?.NetworkMode ?? "";
  const networks = Object.entries(c.NetworkSettings?.Networks ?? {});
  // Host, none and another container's stack come with NetworkMode alone.
  const own = !(mode === "host" || mode === "none" || mode.startsWith("container:")) && networks.length > 0;
  const first = own ? (networks.find(([n]) => n === mode) ?? networks[0]!) : undefined;
  const body: Record<string, unknown> = { ...config, HostConfig: hostConfig };
  if (first) body.NetworkingConfig = { EndpointsConfig: { [first[0]]: endpoint(first[1]) } };
  const extraNetworks = own ? networks.filter(([n]) => n !== first![0]).map(([n, e]): [string, Endpoint] => [n, endpoint(e)]) : [];
  return { body, extraNetworks };
}

// Waits for a started container: healthy by its HEALTHCHECK, or running without restarts for
// the settle time. A reason in words when it is not.
async function waitHealthy(s: Session, id: string, t: RecreateTiming): Promise<string | undefined> {
  const started = t.now();
  let restarts: number | undefined;
  for (;;) {
    let c: ContainerInspect;
    try {
      c = await inspectContainer(s, id);
    } catch (err) {
      return `its state could not be read: ${(err as Error).message}`;
    }
    const st = c.State ?? {};
    restarts ??= c.RestartCount ?? 0;
    const exit = `exit code ${st.ExitCode ?? "?"}${st.Error ? `: ${st.Error}` : ""}`;
    if (st.Restarting || (c.RestartCount ?? 0) > restarts) return `the new container keeps restarting (${exit})`;
    if (!st.Running) return `the new container stopped (${st.Status ?? "not running"}, ${exit})`;
    const elapsed = t.now() - started;
    if (st.Health) {
      if (st.Health.Status === "healthy") return undefined;
      if (st.Health.Status === "unhealthy") {
        const last = st.Health.Log?.at(-1)?.Output?.trim();
        return `the new container is unhealthy${last ? ` (${last.slice(0, 200)})` : ""}`;
      }
      if (elapsed >= t.healthTimeoutMs) return `the new container was not healthy within ${formatMs(t.healthTimeoutMs)}`;
    } else if (elapsed >= t.settleMs) return undefined;
    if (Date.now() >= s.deadline) return "no time left to see it come up";
    await t.sleep(t.pollMs);
  }
}

// One plain container being replaced: how far it got, so the way back is exact.
interface Swap {
  name: string;
  oldId: string;
  newId?: string;
  wasRunning: boolean;
  stopped: boolean;
  renamed: boolean;
}

const containerPath = (id: string, rest = "") => `/containers/${encodeURIComponent(id)}${rest}`;

// Removes the new container and puts the old one back as it was; problems in words.
async function undo(s: Session, w: Swap): Promise<string[]> {
  const problems: string[] = [];
  if (w.newId) {
    const r = await step(s, "DELETE", containerPath(w.newId, "?force=1"), `removing the new ${w.name}`, { also: [404] });
    if (r.error) problems.push(r.error);
  }
  if (w.renamed) {
    const r = await step(s, "POST", containerPath(w.oldId, `/rename?${new URLSearchParams({ name: w.name })}`), `renaming the previous ${w.name} back`);
    if (r.error) problems.push(r.error);
  }
  if (w.stopped) {
    const r = await step(s, "POST", containerPath(w.oldId, "/start"), `starting the previous ${w.name} again`, { also: [304] });
    if (r.error) problems.push(r.error);
  }
  return problems;
}

// Whether a container of this name exists, and runs.
async function lookUp(s: Session, name: string): Promise<"none" | "running" | "stopped" | { error: string }> {
  try {
    const res = await s.engine.call("GET", containerPath(name, "/json"));
    if (res.status === 404) return "none";
    if (res.status !== 200) return { error: `looking for ${name} failed (HTTP ${res.status}): ${engineMessage(res.body)}` };
    return (JSON.parse(res.body.toString("utf8")) as { State?: { Running?: boolean } }).State?.Running ? "running" : "stopped";
  } catch (err) {
    return { error: `looking for ${name} failed: ${(err as Error).message}` };
  }
}

async function recreatePlain(s: Session, c: ContainerInspect, move: TagMove, t: RecreateTiming, swap: Swap): Promise<string | undefined> {
  const { name } = swap;
  // A `<name>-redflag-next` that is there already was left by an update that stopped half-way
  // (the agent was killed between creating it and naming it): it never ran, and goes. One that
  // runs was started by someone: the update stops there and says so.
  // Likewise a `<name>-redflag-previous`: the container an update replaced, left when the agent
  // was killed before removing it (`<name>` runs the new one already); it would take the name the
  // old container is renamed to below, and every later update of it would fail.
  for (const suffix of ["-redflag-next", "-redflag-previous"]) {
    const leftover = await lookUp(s, `${name}${suffix}`);
    if (typeof leftover === "object") return leftover.error;
    if (leftover === "running") return `a container ${name}${suffix} is running (left by an interrupted update and started since): remove or rename it, then update again`;
    if (leftover === "stopped") {
      const r = await step(s, "DELETE", containerPath(`${name}${suffix}`), `removing ${name}${suffix}, left by an interrupted update`);
      if (r.error) return r.error;
    }
  }
  const { body, extraNetworks } = createBody(c, move.ref.local, move.previousConfig);
  const made = await step(s, "POST", `/containers/create?${new URLSearchParams({ name: `${name}-redflag-next` })}`, `creating the new ${name}`, { json: body });
  if (made.error) return made.error;
  try {
    swap.newId = (JSON.parse(made.body!.toString("utf8")) as { Id?: string }).Id;
  } catch {
    // checked below
  }
  if (!swap.newId) return `creating the new ${name} failed: the Docker Engine API did not say its ID`;
  for (const [network, endpoint] of extraNetworks) {
    const r = await step(s, "POST", `/networks/${encodeURIComponent(network)}/connect`, `connecting the new ${name} to ${network}`, {
      json: { Container: swap.newId, EndpointConfig: endpoint },
    });
    if (r.error) return r.error;
  }
  if (swap.wasRunning) {
    const timeout = typeof c.Config?.StopTimeout === "number" ? `?t=${c.Config.StopTimeout}` : "";
    const r = await step(s, "POST", containerPath(c.Id, `/stop${timeout}`), `stopping ${name}`, { also: [304] });
    swap.stopped = true;
    if (r.error) return r.error;
  }
  const moved = await step(s, "POST", containerPath(c.Id, `/rename?${new URLSearchParams({ name: `${name}-redflag-previous` })}`), `renaming ${name} to ${name}-redflag-previous`);
  if (moved.error) return moved.error;
  swap.renamed = true;
  const named = await step(s, "POST", containerPath(swap.newId, `/rename?${new URLSearchParams({ name })}`), `naming the new container ${name}`);
  if (named.error) return named.error;
  if (!swap.wasRunning) return undefined;
  const started = await step(s, "POST", containerPath(swap.newId, "/start"), `starting the new ${name}`, { also: [304] });
  if (started.error) return started.error;
  return waitHealthy(s, swap.newId, t);
}

interface ComposeService {
  project: string;
  service: string;
  dir: string;
  files: string[];
  names: string[];
  // Whether any of its containers ran: stopped ones are recreated without being started.
  running: boolean;
}

async function missingCompose(s: Session, svc: ComposeService): Promise<string | undefined> {
  if (!(await which("docker", s.env.PATH ?? ""))) return "the docker CLI is not installed";
  if (!svc.service || !svc.dir || svc.files.length === 0) return "its container does not name the project's service, folder and files";
  for (const file of [svc.dir, ...svc.files]) {
    try {
      await stat(file);
    } catch {
      return `${file} is missing`;
    }
  }
  return undefined;
}

async function composeUp(s: Session, svc: ComposeService): Promise<string | undefined> {
  const argv = ["docker", "compose", "--project-name", svc.project, "--project-directory", svc.dir, ...svc.files.flatMap((f) => ["-f", f]), "up", svc.running ? "-d" : "--no-start", "--no-deps", svc.service];
  const started = Date.now();
  const result = await runProcess(argv, {
    env: { ...s.env, DOCKER_HOST: `unix://${s.engine.socketPath}` },
    signal: s.signal,
    timeoutMs: Math.max(1000, s.deadline - Date.now()),
  });
  const error =
    result.exitCode === 0
      ? undefined
      : result.spawnError
        ? `docker compose could not start: ${result.spawnError.message}`
        : result.timedOut
          ? "docker compose timed out"
          : `docker compose up ${svc.service} failed (exit ${result.exitCode ?? result.signal}): ${result.stderr.trim().split("\n").at(-1) ?? ""}`;
  record(s, argv, started, { exitCode: result.exitCode ?? -1, stdout: result.stdout, error: error && (result.stderr || error), timedOut: result.timedOut });
  return error;
}

async function composeHealthy(s: Session, svc: ComposeService, t: RecreateTiming): Promise<string | undefined> {
  const filters = JSON.stringify({ label: [`${COMPOSE_PROJECT}=${svc.project}`, `${COMPOSE_SERVICE}=${svc.service}`] });
  let list: EngineContainer[];
  try {
    list = await s.engine.json<EngineContainer[]>(`/containers/json?${new URLSearchParams({ all: "1", filters })}`);
  } catch (err) {
    return `its containers could not be listed: ${(err as Error).message}`;
  }
  if (list.length === 0) return `Compose left no container for service ${svc.service}`;
  for (const c of list) {
    const problem = await waitHealthy(s, c.Id, t);
    if (problem) return `${containerName(c)}: ${problem}`;
  }
  return undefined;
}

// Recreates the containers that ran `move.previousImage` (see the top of this file).
export async function recreateUsers(s: Session, move: TagMove, t: RecreateTiming = DEFAULT_TIMING): Promise<Recreated> {
  const users = move.containers.filter((c) => c.ImageID === move.previousImage);
  if (users.length === 0) return { failed: false, reason: "no container used the previous image" };

  const left: string[] = [];
  const plain: ContainerInspect[] = [];
  const services = new Map<string, ComposeService>();
  const optedOut = new Set<string>();
  for (const u of users) {
    let c: ContainerInspect;
    try {
      c = await inspectContainer(s, u.Id);
    } catch (err) {
      left.push(`${containerName(u)} (not inspected: ${(err as Error).message})`);
      continue;
    }
    const name = nameOf(c);
    const labels = c.Config?.Labels ?? {};
    const from = c.Config?.Image ?? "";
    const fromRef = parseImageRef(from);
    if (labels[OPT_OUT_LABEL] === "false") {
      left.push(`${name} (${OPT_OUT_LABEL}=false)`);
      // `up` recreates a whole service: one container opting out keeps its service as it is.
      if (labels[COMPOSE_PROJECT]) optedOut.add(`${labels[COMPOSE_PROJECT]}\n${labels[COMPOSE_SERVICE] ?? ""}`);
    }
    else if (!fromRef || canonicalName(fromRef) !== canonicalName(move.ref) || fromRef.tag !== move.ref.tag) left.push(`${name} (created from ${from || "an image ID"})`);
    else if (move.held(from)) left.push(`${name} (held)`);
    else if (labels[COMPOSE_PROJECT]) {
      const svc: ComposeService = {
        project: labels[COMPOSE_PROJECT],
        service: labels[COMPOSE_SERVICE] ?? "",
        dir: labels[COMPOSE_DIR] ?? "",
        files: (labels[COMPOSE_FILES] ?? "")
          .split(",")
          .filter(Boolean)
          .map((f) => path.resolve(labels[COMPOSE_DIR] ?? "/", f)),
        names: [],
        running: false,
      };
      const key = `${svc.project}\n${svc.service}`;
      const known = services.get(key) ?? svc;
      known.names.push(name);
      known.running ||= c.State?.Running === true;
      services.set(key, known);
    } else plain.push(c);
  }

  for (const [key, svc] of services) {
    if (!optedOut.has(key)) continue;
    services.delete(key);
    left.push(`${svc.names.join(", ")} (Compose service ${svc.service} of project ${svc.project} has a container with ${OPT_OUT_LABEL}=false)`);
  }

  const swaps: Swap[] = [];
  const upped: ComposeService[] = [];
  const recreated: string[] = [];
  let failure: string | undefined;
  for (const c of plain) {
    const swap: Swap = { name: nameOf(c), oldId: c.Id, wasRunning: c.State?.Running === true, stopped: false, renamed: false };
    swaps.push(swap);
    const problem = await recreatePlain(s, c, move, t, swap);
    if (problem) {
      failure = `container ${swap.name}: ${problem}`;
      break;
    }
    recreated.push(swap.name);
  }
  for (const svc of failure ? [] : services.values()) {
    const missing = await missingCompose(s, svc);
    if (missing) {
      left.push(`${svc.names.join(", ")} (Compose project ${svc.project}, service ${svc.service}: ${missing})`);
      continue;
    }
    upped.push(svc);
    const problem = (await composeUp(s, svc)) ?? (svc.running ? await composeHealthy(s, svc, t) : undefined);
    if (problem) {
      failure = `Compose service ${svc.service} of project ${svc.project}: ${problem}`;
      break;
    }
    recreated.push(...svc.names);
  }

  const leftNote = left.length > 0 ? `left ${left.join(", ")} on the previous image` : "";
  if (!failure) {
    const notes: string[] = [];
    for (const w of swaps) {
      const r = await step(s, "DELETE", containerPath(w.oldId), `removing ${w.name}-redflag-previous`, { also: [404] });
      if (r.error) notes.push(r.error);
    }
    const done = recreated.length > 0 ? `recreated ${listNames(recreated)} on ${move.target}` : "";
    return { failed: false, reason: [done, leftNote, ...notes].filter(Boolean).join("; ") };
  }

  // The way back: every container of this tag onto the previous image, the tag pinned to it.
  const problems: string[] = [];
  for (const w of [...swaps].reverse()) problems.push(...(await undo(s, w)));
  const repin = await move.repin();
  if (repin) problems.push(repin);
  for (const svc of repin ? [] : upped) {
    const again = await composeUp(s, svc);
    if (again) problems.push(again);
  }
  const restored = [...swaps.map((w) => w.name), ...upped.flatMap((u) => u.names)];
  const back =
    problems.length > 0
      ? `the rollback is incomplete: ${problems.join("; ")}`
      : `rolled back: ${move.ref.local} names the previous image again${restored.length > 0 ? ` and ${listNames(restored)} ${restored.length === 1 ? "runs" : "run"} it` : ""}`;
  return { failed: true, reason: [failure, back, leftNote].filter(Boolean).join("; ") };
}

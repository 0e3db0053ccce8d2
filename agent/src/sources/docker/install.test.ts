import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseImageRef } from "./registry.ts";
import { createDockerInstaller, isHeld } from "./install.ts";
import { OPT_OUT_LABEL } from "./recreate.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";
import { fakeTools, type FakeTools, removeFakeTools } from "../../../test/support/fake-tools.ts";

// ---------------------------------------------------------------------------------------------
// Fakes: a Docker Engine API on a Unix socket that keeps image state and records every request,
// and a token-auth registry on 127.0.0.1.

const sha = (text: string) => createHash("sha256").update(text).digest("hex");
const digestOf = (text: string) => `sha256:${sha(text)}`;

interface Image {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Created: number;
  Size: number;
}

type PullPlan = { digest: string } | { error: string } | { status: number; message: string } | { hang: true };

// What a started container does, as its state is looked at: keeps running (no HEALTHCHECK),
// exits at once, or has a HEALTHCHECK that says starting once and then healthy or unhealthy.
type Behaviour = "runs" | "exits" | "healthy" | "unhealthy";

interface Endpoint {
  Aliases?: string[] | null;
  NetworkID?: string;
  IPAddress?: string;
  IPAMConfig?: unknown;
}

interface Container {
  Id: string;
  Name: string;
  // Image ID.
  Image: string;
  Config: Record<string, unknown> & { Image: string; Labels?: Record<string, string>; Hostname?: string };
  HostConfig: Record<string, unknown>;
  NetworkSettings: { Networks: Record<string, Endpoint> };
  Mounts: { Type: string; Name?: string; Source: string; Destination: string; Driver?: string; RW: boolean }[];
  State: { Status: string; Running: boolean; Restarting: boolean; ExitCode: number; Error: string; Health?: { Status: string; Log: { ExitCode: number; Output: string }[] } };
  RestartCount: number;
  looks: number;
}

interface FakeEngine {
  socketPath: string;
  images: Image[];
  containers: Container[];
  // By container name, else by image ID; "runs" when neither is there.
  behaviour: Map<string, Behaviour>;
  // Bodies of POST /containers/create, as sent.
  created: Record<string, unknown>[];
  // Requests that fail: "METHOD /path" (no version prefix, no query) → the daemon's answer.
  failing: Map<string, { status: number; message: string }>;
  // Called before each request is answered (a fake `docker compose` acts through it).
  onRequest?: (() => void) | undefined;
  // "repo:tag" or "repo@digest" → what pulling it does.
  pulls: Map<string, PullPlan>;
  requests: { method: string; url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

let containerCount = 0;
// A container as `docker run` leaves it: the image's Env and Cmd merged into its Config, its
// short ID as hostname and as an alias on user-defined networks.
function container(name: string, img: Image, from: string, extra: { labels?: Record<string, string>; running?: boolean } = {}): Container {
  const Id = sha(`container ${name} ${++containerCount}`);
  return {
    Id,
    Name: `/${name}`,
    Image: img.Id,
    Config: {
      Hostname: Id.slice(0, 12),
      Image: from,
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", `ROLE=${name}`],
      Cmd: ["serve"],
      Labels: { "org.opencontainers.image.version": "old", ...extra.labels },
      StopTimeout: 30,
    },
    HostConfig: { NetworkMode: "bridge", RestartPolicy: { Name: "unless-stopped", MaximumRetryCount: 0 }, PortBindings: {}, Binds: null, Mounts: null },
    NetworkSettings: { Networks: { bridge: { Aliases: null, NetworkID: sha("bridge"), IPAddress: "172.17.0.2" } } },
    Mounts: [],
    State: extra.running === false ? { Status: "exited", Running: false, Restarting: false, ExitCode: 0, Error: "" } : { Status: "running", Running: true, Restarting: false, ExitCode: 0, Error: "" },
    RestartCount: 0,
    looks: 0,
  };
}

const summary = (c: Container) => ({ Id: c.Id, Names: [c.Name], Image: c.Config.Image, ImageID: c.Image, State: c.State.Status, Labels: c.Config.Labels ?? {} });

const imageId = (repo: string, digest: string) => `sha256:${sha(`config ${repo} ${digest}`)}`;
const image = (repo: string, tags: string[], digest: string): Image => ({
  Id: imageId(repo, digest),
  RepoTags: tags.map((t) => `${repo}:${t}`),
  RepoDigests: [`${repo}@${digest}`],
  Created: 1_728_493_843,
  Size: 191_670_474,
});

async function startEngine(dir: string, images: Image[]): Promise<FakeEngine> {
  const socketPath = path.join(dir, "docker.sock");
  const find = (name: string) =>
    state.images.find((i) => i.RepoTags.includes(name) || i.RepoTags.includes(`${name}:latest`) || i.RepoDigests.includes(name) || i.Id === name);
  const moveTag = (tag: string, to: Image) => {
    for (const other of state.images) other.RepoTags = other.RepoTags.filter((t) => t !== tag);
    to.RepoTags.push(tag);
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => answer(req, res, Buffer.concat(chunks).toString("utf8")));
  });
  const answer = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse, text: string) => {
    state.onRequest?.();
    state.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    const url = new URL(req.url ?? "/", "http://docker");
    const p = url.pathname.replace(/^\/v1\.\d+/, "");
    const json = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json", "api-version": "1.47" }).end(`${JSON.stringify(body)}\n`);
    const failing = state.failing.get(`${req.method} ${p}`);
    if (failing) return json(failing.status, { message: failing.message });
    if (req.method === "GET" && p === "/version") return json(200, { Version: "27.3.1", ApiVersion: "1.47", MinAPIVersion: "1.24", Os: "linux", Arch: "amd64" });
    if (req.method === "GET" && p === "/images/json") return json(200, state.images.map((i) => ({ ...i, Containers: -1, SharedSize: -1, ParentId: "", Labels: null })));
    if (req.method === "GET" && p === "/containers/json") {
      const labels: string[] = JSON.parse(url.searchParams.get("filters") ?? "{}").label ?? [];
      const matches = (c: Container) => labels.every((l) => c.Config.Labels?.[l.split("=")[0]!] === l.split("=").slice(1).join("="));
      return json(200, state.containers.filter(matches).map(summary));
    }
    if (p.startsWith("/containers/") || p.startsWith("/networks/")) return containers(req.method ?? "", p, url, text, json);
    const inspect = /^\/images\/(.+)\/json$/.exec(p);
    if (req.method === "GET" && inspect) {
      const name = decodeURIComponent(inspect[1]!);
      const found = find(name);
      if (!found) return json(404, { message: `No such image: ${name}` });
      return json(200, { ...found, Architecture: "amd64", Os: "linux", Config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] }, RootFS: { Type: "layers", Layers: [] } });
    }
    if (req.method === "POST" && p === "/images/create") {
      const repo = url.searchParams.get("fromImage") ?? "";
      const tag = url.searchParams.get("tag") ?? "latest";
      const byDigest = tag.startsWith("sha256:");
      const key = byDigest ? `${repo}@${tag}` : `${repo}:${tag}`;
      const plan = state.pulls.get(key) ?? { status: 404, message: `pull access denied for ${repo}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied` };
      if ("hang" in plan) return;
      if ("status" in plan) return json(plan.status, { message: plan.message });
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`{"status":"Pulling from ${repo.includes("/") ? repo : `library/${repo}`}","id":"${tag}"}\r\n`);
      if ("error" in plan) {
        res.end(`{"errorDetail":{"message":${JSON.stringify(plan.error)}},"error":${JSON.stringify(plan.error)}}\r\n`);
        return;
      }
      const existing = state.images.find((i) => i.RepoDigests.includes(`${repo}@${plan.digest}`));
      const target = existing ?? { Id: imageId(repo, plan.digest), RepoTags: [], RepoDigests: [`${repo}@${plan.digest}`], Created: 1_730_000_000, Size: 192_000_000 };
      if (!existing) {
        state.images.push(target);
        const layer = sha(`layer ${plan.digest}`).slice(0, 12);
        res.write(`{"status":"Pulling fs layer","progressDetail":{},"id":"${layer}"}\r\n`);
        // A progress line split across two writes, as the socket may deliver it.
        const downloading = `{"status":"Downloading","progressDetail":{"current":1048576,"total":29126484},"progress":"[=>                                                 ]  1.049MB/29.13MB","id":"${layer}"}\r\n`;
        res.write(downloading.slice(0, 40));
        res.write(downloading.slice(40));
        res.write(`{"status":"Download complete","progressDetail":{},"id":"${layer}"}\r\n{"status":"Pull complete","progressDetail":{},"id":"${layer}"}\r\n`);
      }
      const upToDate = !byDigest && target.RepoTags.includes(key);
      if (!byDigest) moveTag(key, target);
      res.end(`{"status":"Digest: ${plan.digest}"}\r\n{"status":"Status: ${upToDate ? "Image is up to date" : "Downloaded newer image"} for ${key}"}\r\n`);
      return;
    }
    const tagMatch = /^\/images\/(.+)\/tag$/.exec(p);
    if (req.method === "POST" && tagMatch) {
      const found = find(decodeURIComponent(tagMatch[1]!));
      if (!found) return json(404, { message: `No such image: ${decodeURIComponent(tagMatch[1]!)}` });
      moveTag(`${url.searchParams.get("repo")}:${url.searchParams.get("tag") || "latest"}`, found);
      return res.writeHead(201).end();
    }
    json(404, { message: "page not found" });
  };
  const byRef = (ref: string) => state.containers.find((c) => c.Id === ref || c.Name === `/${ref}` || (ref.length >= 12 && c.Id.startsWith(ref)));
  const look = (c: Container) => {
    if (!c.State.Running) return;
    c.looks++;
    const behaviour = state.behaviour.get(c.Name.slice(1)) ?? state.behaviour.get(c.Image) ?? "runs";
    if (behaviour === "exits") c.State = { Status: "exited", Running: false, Restarting: false, ExitCode: 1, Error: "" };
    if (behaviour === "healthy" || behaviour === "unhealthy") {
      const status = c.looks < 2 ? "starting" : behaviour;
      c.State.Health = { Status: status, Log: status === "unhealthy" ? [{ ExitCode: 1, Output: "curl: (7) Failed to connect to localhost port 80\n" }] : [] };
    }
  };
  const containers = (method: string, p: string, url: URL, text: string, json: (status: number, body: unknown) => void) => {
    if (method === "POST" && p === "/containers/create") {
      const body = JSON.parse(text) as Record<string, unknown> & { HostConfig: Record<string, unknown>; NetworkingConfig?: { EndpointsConfig: Record<string, Endpoint> } };
      state.created.push(body);
      const name = url.searchParams.get("name") ?? "";
      if (byRef(name)) return json(409, { message: `Conflict. The container name "/${name}" is already in use` });
      const img = find(body.Image as string);
      if (!img) return json(404, { message: `No such image: ${String(body.Image)}` });
      const { HostConfig, NetworkingConfig, ...config } = body;
      const mounts = ((HostConfig.Mounts ?? []) as { Type: string; Source: string; Target: string; ReadOnly?: boolean }[]).map((m) => ({
        Type: m.Type,
        Name: m.Source,
        Source: `/var/lib/docker/volumes/${m.Source}/_data`,
        Destination: m.Target,
        Driver: "local",
        RW: !m.ReadOnly,
      }));
      const c: Container = {
        Id: sha(`container ${name} ${++containerCount}`),
        Name: `/${name}`,
        Image: img.Id,
        Config: config as Container["Config"],
        HostConfig,
        NetworkSettings: { Networks: { ...NetworkingConfig?.EndpointsConfig } },
        Mounts: mounts,
        State: { Status: "created", Running: false, Restarting: false, ExitCode: 0, Error: "" },
        RestartCount: 0,
        looks: 0,
      };
      state.containers.push(c);
      return json(201, { Id: c.Id, Warnings: [] });
    }
    const connect = /^\/networks\/([^/]+)\/connect$/.exec(p);
    if (method === "POST" && connect) {
      const body = JSON.parse(text) as { Container: string; EndpointConfig: Endpoint };
      const c = byRef(body.Container);
      if (!c) return json(404, { message: `No such container: ${body.Container}` });
      c.NetworkSettings.Networks[decodeURIComponent(connect[1]!)] = body.EndpointConfig;
      return json(200, {});
    }
    const m = /^\/containers\/([^/]+)(\/[a-z]+)?$/.exec(p);
    const c = m ? byRef(decodeURIComponent(m[1]!)) : undefined;
    if (!m || !c) return json(404, { message: `No such container: ${m?.[1] ?? p}` });
    const action = `${method} ${m[2] ?? ""}`;
    if (action === "GET /json") {
      look(c);
      const { looks: _, ...inspected } = c;
      return json(200, inspected);
    }
    if (action === "POST /stop") {
      if (!c.State.Running) return json(304, {});
      c.State = { Status: "exited", Running: false, Restarting: false, ExitCode: 0, Error: "" };
      return json(204, {});
    }
    if (action === "POST /start") {
      if (c.State.Running) return json(304, {});
      c.State = { Status: "running", Running: true, Restarting: false, ExitCode: 0, Error: "" };
      c.looks = 0;
      return json(204, {});
    }
    if (action === "POST /rename") {
      const name = url.searchParams.get("name") ?? "";
      if (byRef(name)) return json(409, { message: `Conflict. The container name "/${name}" is already in use` });
      c.Name = `/${name}`;
      return json(204, {});
    }
    if (action === "DELETE ") {
      if (c.State.Running && url.searchParams.get("force") !== "1") return json(409, { message: `cannot remove container "${c.Name}": container is running: stop the container before removing or force remove` });
      state.containers = state.containers.filter((x) => x !== c);
      return json(204, {});
    }
    json(404, { message: "page not found" });
  };
  const state: FakeEngine = {
    socketPath,
    images,
    containers: [],
    behaviour: new Map(),
    created: [],
    failing: new Map(),
    pulls: new Map(),
    requests: [],
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return state;
}

interface FakeRegistry {
  url: string;
  // "path:tag" → digest.
  tags: Map<string, string>;
  requests: { method: string; url: string }[];
  close(): Promise<void>;
}

async function startRegistry(): Promise<FakeRegistry> {
  const server = createServer((req, res) => {
    state.requests.push({ method: req.method ?? "", url: req.url ?? "" });
    const url = new URL(req.url ?? "/", "http://registry");
    if (url.pathname === "/token") return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `t.${url.searchParams.get("scope")}` }));
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (!m) return res.writeHead(404).end();
    if (req.headers.authorization !== `Bearer t.repository:${m[1]}:pull`) {
      return res.writeHead(401, { "www-authenticate": `Bearer realm="${state.url}/token",service="registry.docker.io",scope="repository:${m[1]}:pull"` }).end();
    }
    const digest = state.tags.get(`${m[1]}:${m[2]}`);
    if (!digest) return res.writeHead(404).end();
    res.writeHead(200, { "docker-content-digest": digest, "content-type": "application/vnd.oci.image.index.v1+json" }).end();
  });
  const state: FakeRegistry = {
    url: "",
    tags: new Map(),
    requests: [],
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

// ---------------------------------------------------------------------------------------------

describe("holds", () => {
  it("match a tag or a whole repository, in any spelling", () => {
    const ref = parseImageRef("nginx:1.27")!;
    expect(isHeld(ref, new Set(["nginx:1.27"]))).toBe(true);
    expect(isHeld(ref, new Set(["nginx"]))).toBe(true);
    expect(isHeld(ref, new Set(["docker.io/library/nginx"]))).toBe(true);
    expect(isHeld(ref, new Set(["docker.io/library/nginx:1.27"]))).toBe(true);
    expect(isHeld(ref, new Set(["nginx:latest", "redis", "ghcr.io/x/nginx"]))).toBe(false);
    expect(isHeld(parseImageRef("localhost:5000/app:2")!, new Set(["localhost:5000/app"]))).toBe(true);
  });
});

describe("docker installer against a fake Engine API", () => {
  let dir: string;
  let engine: FakeEngine;
  let hub: FakeRegistry;
  const app1 = digestOf("acme/app stable 1");
  const app2 = digestOf("acme/app stable 2");
  const nginx1 = digestOf("nginx 1.27.1");
  const nginx2 = digestOf("nginx 1.27.2");
  const redis = digestOf("redis 7.4.1");
  const opts = (extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: { HOME: dir }, isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "docker", name, version });
  // The clock new containers are watched by: each wait moves it on, nothing sleeps.
  let clock = 0;
  const timing = {
    now: () => clock,
    sleep: async (ms: number) => {
      clock += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
    pollMs: 1000,
    settleMs: 5000,
    healthTimeoutMs: 60_000,
  };
  const installer = () => createDockerInstaller({ socketPath: engine.socketPath, registryUrl: () => hub.url, configPath: path.join(dir, "config.json"), recreateTiming: timing });
  const engineCalls = () => engine.requests.filter((r) => r.method === "POST").map((r) => r.url);
  const imageCalls = () => engineCalls().filter((u) => u.includes("/images/"));

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-docker-install-"));
    hub = await startRegistry();
    engine = await startEngine(dir, [image("acme/app", ["stable"], app1), image("nginx", ["1.27"], nginx1), image("redis", ["7.4"], redis)]);
    engine.containers = [container("web", engine.images[1]!, "nginx:1.27"), container("proxy", engine.images[1]!, "nginx:1.27"), container("cache", engine.images[2]!, "redis:7.4")];
    hub.tags.set("acme/app:stable", app2);
    hub.tags.set("library/nginx:1.27", nginx2);
    hub.tags.set("library/redis:7.4", redis);
    hub.tags.set("library/alpine:3.20", digestOf("alpine 3.20.3"));
  });
  afterEach(async () => {
    await Promise.all([engine.close(), hub.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it("is present only with the Engine socket", async () => {
    expect(await installer().present({})).toBe(true);
    expect(await createDockerInstaller({ socketPath: path.join(dir, "none.sock") }).present({})).toBe(false);
    const out = await createDockerInstaller({ socketPath: path.join(dir, "none.sock") }).install([ref("nginx:1.27")], opts());
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: `Docker is not installed or its socket is missing (${path.join(dir, "none.sock")})` });
  });

  it("previews everything pending minus holds from the registry, pulling nothing", async () => {
    const sim = await installer().dryRun!([], opts({ holds: new Set(["acme/app"]) }));
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.kind, c.source, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "docker", "nginx:1.27", nginx1, nginx2]]);
    expect(engineCalls()).toEqual([]);
  });

  it("previews named images: upgrades, nothing for current ones, a new tag as an install, a pinned digest as given", async () => {
    const pinned = digestOf("acme/app stable 3");
    const sim = await installer().dryRun!([ref("nginx:1.27"), ref("redis:7.4"), ref("alpine:3.20"), ref("acme/app:stable", pinned)], opts());
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "nginx:1.27", nginx1, nginx2],
      [PackageChangeKind.INSTALL, "alpine:3.20", "", digestOf("alpine 3.20.3")],
      [PackageChangeKind.UPGRADE, "acme/app:stable", app1, pinned],
    ]);
    // Only the unpinned tags were asked of the registry.
    expect(hub.requests.filter((r) => r.method === "HEAD").map((r) => r.url)).not.toContain("/v2/acme/app/manifests/stable");
    expect(engineCalls()).toEqual([]);
  });

  it("says which named image it could not check, and refuses what is not an image or a digest", async () => {
    const sim = await installer().dryRun!([ref("nginx:1.27"), ref("acme/gone:1")], opts());
    expect(sim).toEqual({ changes: [], output: [], error: "could not check acme/gone:1: tag not found on docker.io (HTTP 404)" });
    expect((await installer().dryRun!([ref("nginx@sha256:abc")], opts())).error).toBe('"nginx@sha256:abc" is not an image reference like "nginx:1.27" or "ghcr.io/org/app:latest"');
    expect((await installer().dryRun!([ref("nginx:1.27", "1.27.2")], opts())).error).toBe('a Docker image version is its digest (sha256:<64 hex>), not "1.27.2"');
  });

  it("pulls the new image and reports both digests; an image already current is skipped", async () => {
    engine.pulls.set("nginx:1.27", { digest: nginx2 });
    engine.pulls.set("redis:7.4", { digest: redis });
    const out = await installer().install([ref("nginx:1.27"), ref("redis:7.4")], opts());
    expect(out.error).toBeUndefined();
    expect(out.rebootRequired).toBe(false);
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["nginx:1.27", PackageResultState.INSTALLED, nginx1, nginx2, "recreated web, proxy on the new image"],
      ["redis:7.4", PackageResultState.SKIPPED, redis, redis, "already up to date"],
    ]);
    expect(out.output.filter((o) => o.argv[1]!.includes("/images/")).map((o) => [o.argv, o.exitCode])).toEqual([
      [["POST", "/v1.41/images/create?fromImage=nginx&tag=1.27"], 0],
      [["POST", "/v1.41/images/create?fromImage=redis&tag=7.4"], 0],
    ]);
    expect(out.output[0]!.stdoutTail).toBe(`Pulling from library/nginx\n${sha(`layer ${nginx2}`).slice(0, 12)}: Pull complete\nDigest: ${nginx2}\nStatus: Downloaded newer image for nginx:1.27`);
    expect(imageCalls()).toEqual(["/v1.41/images/create?fromImage=nginx&tag=1.27", "/v1.41/images/create?fromImage=redis&tag=7.4"]);
    // The redis container's image did not change: it was not even looked at.
    const cache = engine.containers.find((c) => c.Name === "/cache")!;
    expect(engine.requests.filter((r) => r.url.includes(cache.Id))).toEqual([]);
  });

  it("installs everything pending except held images", async () => {
    engine.pulls.set("nginx:1.27", { digest: nginx2 });
    engine.pulls.set("acme/app:stable", { digest: app2 });
    const out = await installer().install([], opts({ holds: new Set(["acme/app:stable"]) }));
    expect(out.packages.map((p) => [p.name, p.state, p.toVersion])).toEqual([["nginx:1.27", PackageResultState.INSTALLED, nginx2]]);
    expect(imageCalls()).toEqual(["/v1.41/images/create?fromImage=nginx&tag=1.27"]);
    expect(out.packages[0]!.reason).toBe("recreated web, proxy on the new image");
  });

  it("reports the daemon's own reason for an image that fails while the others install", async () => {
    engine.pulls.set("acme/app:stable", { error: "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit" });
    engine.pulls.set("nginx:1.27", { digest: nginx2 });
    // The private image is new on this host: allowed here as a dependency of a confirmed update.
    const out = await installer().install([ref("acme/app:stable"), ref("ghcr.io/acme/private:1"), ref("nginx:1.27")], opts({ newPackages: new Set(["ghcr.io/acme/private:1"]) }));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.reason])).toEqual([
      ["acme/app:stable", PackageResultState.FAILED, app1, "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"],
      [
        "ghcr.io/acme/private:1",
        PackageResultState.FAILED,
        "",
        "the Docker daemon refused the pull (HTTP 404): pull access denied for ghcr.io/acme/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
      ],
      ["nginx:1.27", PackageResultState.INSTALLED, nginx1, "recreated web, proxy on the new image"],
    ]);
    expect(out.output[0]).toMatchObject({ exitCode: 1, stderrTail: expect.stringMatching(/^toomanyrequests/) });
    expect(out.output[1]).toMatchObject({ exitCode: 1 });
  });

  it("never pulls an image the host does not have, from whatever registry, nor re-pins one it has not", async () => {
    engine.pulls.set("evil.example/miner:latest", { digest: digestOf("miner") });
    const out = await installer().install([ref("evil.example/miner:latest"), ref("alpine:3.20", digestOf("alpine 3.20.3"))], opts());
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["evil.example/miner:latest", PackageResultState.SKIPPED, NOT_INSTALLED],
      ["alpine:3.20", PackageResultState.SKIPPED, NOT_INSTALLED],
    ]);
    const back = await installer().rollback!(ref("alpine:3.20", digestOf("alpine 3.20.3")), opts());
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect(engineCalls()).toEqual([]);
  });

  it("sends registry credentials from the Docker config with the pull, and none without them", async () => {
    engine.pulls.set("acme/app:stable", { digest: app2 });
    await installer().install([ref("acme/app:stable")], opts());
    expect(engine.requests.find((r) => r.url.includes("/images/create"))!.headers["x-registry-auth"]).toBeUndefined();

    await writeFile(path.join(dir, "config.json"), JSON.stringify({ auths: { "https://index.docker.io/v1/": { auth: Buffer.from("bot:pa$$w0rd").toString("base64") } } }));
    engine.images[0]!.RepoTags = ["acme/app:stable"];
    engine.pulls.set("acme/app:stable", { digest: app2 });
    await installer().install([ref("acme/app:stable")], opts());
    const header = engine.requests.filter((r) => r.url.includes("/images/create")).at(-1)!.headers["x-registry-auth"] as string;
    expect(JSON.parse(Buffer.from(header, "base64url").toString())).toEqual({ username: "bot", password: "pa$$w0rd", serveraddress: "https://index.docker.io/v1/" });
  });

  it("installs exactly a pinned digest: pulled by digest, then tagged", async () => {
    engine.pulls.set(`acme/app@${app2}`, { digest: app2 });
    const out = await installer().install([ref("acme/app:stable", app2)], opts());
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: app1, toVersion: app2 });
    expect(engineCalls()).toEqual([`/v1.41/images/create?fromImage=acme%2Fapp&tag=${app2.replace(":", "%3A")}`, `/v1.41/images/acme/app@${app2}/tag?repo=acme%2Fapp&tag=stable`]);
    const again = await installer().install([ref("acme/app:stable", app2)], opts());
    expect(again.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: `acme/app:stable already names ${app2}` });
  });

  it("rolls back by re-pinning the tag to the earlier digest, pulling it only when it is gone", async () => {
    engine.pulls.set("acme/app:stable", { digest: app2 });
    await installer().install([ref("acme/app:stable")], opts());
    engine.requests.length = 0;
    // The earlier image is still here, untagged: only the tag moves.
    const out = await installer().rollback!(ref("acme/app:stable", app1), opts());
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: app2, toVersion: app1, reason: "no container used the previous image" });
    expect(engineCalls()).toEqual([`/v1.41/images/acme/app@${app1}/tag?repo=acme%2Fapp&tag=stable`]);
    expect(engine.images.find((i) => i.RepoTags.includes("acme/app:stable"))!.RepoDigests).toEqual([`acme/app@${app1}`]);

    // Gone locally: pulled by digest first.
    engine.images = engine.images.filter((i) => !i.RepoDigests.includes(`acme/app@${app1}`));
    engine.images.push(image("acme/app", ["stable"], app2));
    engine.pulls.set(`acme/app@${app1}`, { digest: app1 });
    engine.requests.length = 0;
    const pulled = await installer().rollback!(ref("acme/app:stable", app1), opts());
    expect(pulled.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: app2, toVersion: app1 });
    expect(engineCalls()).toEqual([`/v1.41/images/create?fromImage=acme%2Fapp&tag=${app1.replace(":", "%3A")}`, `/v1.41/images/acme/app@${app1}/tag?repo=acme%2Fapp&tag=stable`]);
  });

  it("refuses a rollback target that is not a digest and a name that is not a tag, touching nothing", async () => {
    const bad = await installer().rollback!(ref("acme/app:stable", "1.2.3"), opts());
    expect(bad.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: 'rollback needs the earlier image digest: a Docker image version is its digest (sha256:<64 hex>), not "1.2.3"' });
    const gone = await installer().rollback!(ref("acme/app:stable", digestOf("never pushed")), opts());
    expect(gone.packages[0]).toMatchObject({ state: PackageResultState.FAILED, fromVersion: app1 });
    expect(gone.packages[0]!.reason).toMatch(/^the Docker daemon refused the pull \(HTTP 404\)/);
    const weird = await installer().install([ref("Not/A:Ref:x")], opts());
    expect(weird.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: '"Not/A:Ref:x" is not an image reference like "nginx:1.27" or "ghcr.io/org/app:latest"' });
    expect(engine.requests.filter((r) => r.url.includes("/tag?"))).toEqual([]);
  });

  it("gives up on a pull that does not finish in time, and says so", async () => {
    engine.pulls.set("nginx:1.27", { hang: true });
    const started = Date.now();
    const out = await installer().install([ref("nginx:1.27"), ref("redis:7.4")], opts({ timeoutMs: 800 }));
    expect(Date.now() - started).toBeLessThan(3000);
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, fromVersion: nginx1 });
    expect(out.packages[0]!.reason).toMatch(/^pulling nginx:1\.27 failed: the Docker Engine API did not answer in time/);
    expect(out.output[0]).toMatchObject({ timedOut: true, exitCode: -1 });
    expect(out.packages[1]).toMatchObject({ state: PackageResultState.FAILED, reason: expect.stringMatching(/no time left/) });
  });
  describe("recreating the containers of a moved tag", () => {
    const oldNginx = () => engine.images[1]!.Id;
    const newNginx = imageId("nginx", nginx2);
    const named = (name: string) => engine.containers.find((c) => c.Name === `/${name}`);
    // What changed anything besides the pull.
    const containerCalls = () => engine.requests.filter((r) => r.method !== "GET" && !r.url.includes("/images/create")).map((r) => `${r.method} ${r.url.replace(/^\/v1\.\d+/, "")}`);
    beforeEach(() => engine.pulls.set("nginx:1.27", { digest: nginx2 }));
    // The same containers as before the install, under their names, on the previous image, running.
    const expectAsBefore = (ids: string[]) =>
      expect(engine.containers.map((c) => [c.Id, c.Name, c.Image, c.State.Running])).toEqual([
        [ids[0], "/web", oldNginx(), true],
        [ids[1], "/proxy", oldNginx(), true],
        [ids[2], "/cache", engine.images[2]!.Id, true],
      ]);

    it("recreates each container with its own configuration, volumes and networks, then removes the previous one", async () => {
      const web = engine.containers[0]!;
      const proxy = engine.containers[1]!;
      const short = web.Id.slice(0, 12);
      web.HostConfig.NetworkMode = "frontend";
      web.HostConfig.Binds = ["/srv/web/conf:/etc/nginx/conf.d:ro", "webdata:/data"];
      web.Mounts = [
        { Type: "bind", Source: "/srv/web/conf", Destination: "/etc/nginx/conf.d", RW: false },
        { Type: "volume", Name: "webdata", Source: "/var/lib/docker/volumes/webdata/_data", Destination: "/data", Driver: "local", RW: true },
        { Type: "volume", Name: sha("anonymous"), Source: `/var/lib/docker/volumes/${sha("anonymous")}/_data`, Destination: "/var/cache/nginx", Driver: "local", RW: true },
      ];
      web.NetworkSettings.Networks = {
        frontend: { Aliases: ["web", short], NetworkID: sha("frontend"), IPAddress: "172.20.0.5", IPAMConfig: { IPv4Address: "172.20.0.5" } },
        backend: { Aliases: [short, "www"], NetworkID: sha("backend"), IPAddress: "172.21.0.5" },
      };
      // A stopped container is recreated too, and stays stopped.
      proxy.State = { Status: "exited", Running: false, Restarting: false, ExitCode: 0, Error: "" };
      const [webId, proxyId] = [web.Id, proxy.Id];

      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: nginx1, toVersion: nginx2, reason: "recreated web, proxy on the new image" });
      expect(engine.created[0]).toEqual({
        Image: "nginx:1.27",
        // The image's own PATH is left to the new image; the hostname was the old short ID.
        Env: ["ROLE=web"],
        Cmd: ["serve"],
        Labels: { "org.opencontainers.image.version": "old" },
        StopTimeout: 30,
        HostConfig: {
          NetworkMode: "frontend",
          RestartPolicy: { Name: "unless-stopped", MaximumRetryCount: 0 },
          PortBindings: {},
          Binds: ["/srv/web/conf:/etc/nginx/conf.d:ro", "webdata:/data"],
          // The anonymous volume is carried over by name; the named one already is, by its bind.
          Mounts: [{ Type: "volume", Source: sha("anonymous"), Target: "/var/cache/nginx", ReadOnly: false }],
        },
        NetworkingConfig: { EndpointsConfig: { frontend: { IPAMConfig: { IPv4Address: "172.20.0.5" }, Aliases: ["web"] } } },
      });
      const newWeb = named("web")!;
      const newProxy = named("proxy")!;
      expect(containerCalls()).toEqual([
        "POST /containers/create?name=web-redflag-next",
        "POST /networks/backend/connect",
        `POST /containers/${webId}/stop?t=30`,
        `POST /containers/${webId}/rename?name=web-redflag-previous`,
        `POST /containers/${newWeb.Id}/rename?name=web`,
        `POST /containers/${newWeb.Id}/start`,
        "POST /containers/create?name=proxy-redflag-next",
        `POST /containers/${proxyId}/rename?name=proxy-redflag-previous`,
        `POST /containers/${newProxy.Id}/rename?name=proxy`,
        `DELETE /containers/${webId}`,
        `DELETE /containers/${proxyId}`,
      ]);
      expect(newWeb).toMatchObject({ Image: newNginx, State: { Running: true } });
      expect(newWeb.NetworkSettings.Networks.backend).toEqual({ Aliases: ["www"] });
      expect(newWeb.Mounts.map((m) => m.Name)).toEqual([sha("anonymous")]);
      expect(newProxy).toMatchObject({ Image: newNginx, State: { Status: "created", Running: false } });
      expect(engine.containers.map((c) => c.Name).sort()).toEqual(["/cache", "/proxy", "/web"]);
      // Running without a HEALTHCHECK: watched for the settle time, on the injected clock.
      expect(clock).toBeGreaterThanOrEqual(5000);
    });

    it("waits for a HEALTHCHECK to say healthy", async () => {
      engine.behaviour.set(newNginx, "healthy");
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "recreated web, proxy on the new image" });
      expect(named("web")!.State.Health?.Status).toBe("healthy");
    });

    it("puts the previous container and tag back when the new image exits at once", async () => {
      engine.behaviour.set(newNginx, "exits");
      const before = engine.containers.map((c) => c.Id);
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({
        state: PackageResultState.FAILED,
        fromVersion: nginx1,
        reason: "container web: the new container stopped (exited, exit code 1); rolled back: nginx:1.27 names the previous image again and web runs it",
      });
      expectAsBefore(before);
      expect(engine.images.find((i) => i.RepoTags.includes("nginx:1.27"))!.Id).toBe(oldNginx());
      expect(containerCalls().slice(-4)).toEqual([
        expect.stringMatching(/^DELETE \/containers\/[0-9a-f]{64}\?force=1$/),
        `POST /containers/${before[0]}/rename?name=web`,
        `POST /containers/${before[0]}/start`,
        `POST /images/${oldNginx()}/tag?repo=nginx&tag=1.27`,
      ]);
    });

    it("puts every container of the tag back when one turns unhealthy after another came up", async () => {
      engine.behaviour.set("web", "healthy");
      engine.behaviour.set("proxy", "unhealthy");
      const before = engine.containers.map((c) => c.Id);
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({
        state: PackageResultState.FAILED,
        reason:
          "container proxy: the new container is unhealthy (curl: (7) Failed to connect to localhost port 80); " +
          "rolled back: nginx:1.27 names the previous image again and web, proxy run it",
      });
      expectAsBefore(before);
    });

    it("gives up on a HEALTHCHECK that never answers, within its bound", async () => {
      engine.behaviour.set(newNginx, "healthy");
      // Looked at once per poll: still "starting" until the bound passes.
      const never = { ...timing, healthTimeoutMs: 0 };
      const out = await createDockerInstaller({ socketPath: engine.socketPath, registryUrl: () => hub.url, recreateTiming: never }).install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: expect.stringMatching(/^container web: the new container was not healthy within 0ms; rolled back/) });
    });

    it("fails and puts things back when the daemon refuses a step", async () => {
      engine.failing.set("POST /containers/create", { status: 400, message: 'invalid mount config for type "volume": field Source must not be specified' });
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({
        state: PackageResultState.FAILED,
        reason:
          'container web: creating the new web failed (HTTP 400): invalid mount config for type "volume": field Source must not be specified; ' +
          "rolled back: nginx:1.27 names the previous image again and web runs it",
      });
      // Nothing was stopped: only the tag moved back.
      expect(containerCalls()).toEqual(["POST /containers/create?name=web-redflag-next", `POST /images/${oldNginx()}/tag?repo=nginx&tag=1.27`]);
      expect(out.output.at(-2)).toMatchObject({ argv: ["POST", "/v1.41/containers/create?name=web-redflag-next"], exitCode: 1 });
    });

    it("leaves containers that opted out, were created from another name of the image, or are held", async () => {
      engine.containers[0]!.Config.Labels![OPT_OUT_LABEL] = "false";
      engine.containers[1]!.Config.Image = `nginx@${nginx1}`;
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({
        state: PackageResultState.INSTALLED,
        reason: `left web (io.redflag.recreate=false), proxy (created from nginx@${nginx1}) on the previous image`,
      });
      expect(containerCalls()).toEqual([]);

      engine.images = [image("nginx", ["1.27"], nginx1), image("redis", ["7.4"], redis)];
      engine.containers = [container("web", engine.images[0]!, "nginx:1.27")];
      const held = await installer().install([ref("nginx:1.27")], opts({ holds: new Set(["nginx"]) }));
      expect(held.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "left web (held) on the previous image" });
      expect(containerCalls()).toEqual([]);
    });

    it("removes a stopped <name>-redflag-next left by an interrupted update, and stops at one that runs", async () => {
      // Left by an agent killed between creating the new container and naming it.
      engine.containers.push(container("web-redflag-next", engine.images[2]!, "redis:7.4", { running: false }));
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "recreated web, proxy on the new image" });
      expect(containerCalls()[0]).toBe("DELETE /containers/web-redflag-next");
      expect(named("web-redflag-next")).toBeUndefined();
    });

    it("refuses to touch a <name>-redflag-next that runs, and puts the tag back", async () => {
      engine.containers.push(container("web-redflag-next", engine.images[2]!, "redis:7.4"));
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
      expect(out.packages[0]!.reason).toContain("a container web-redflag-next is running (left by an interrupted update and started since): remove or rename it, then update again");
      expect(named("web-redflag-next")!.State.Running).toBe(true);
      expect(named("web")!.Image).toBe(oldNginx());
    });

    it("removes a stopped <name>-redflag-previous left by an update the agent did not finish, and stops at one that runs", async () => {
      // Left by an agent killed after the swap, before it removed the replaced container: without
      // this, renaming web to web-redflag-previous would meet a name in use, on every update.
      engine.containers.push(container("web-redflag-previous", engine.images[2]!, "redis:7.4", { running: false }));
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "recreated web, proxy on the new image" });
      expect(containerCalls()[0]).toBe("DELETE /containers/web-redflag-previous");
      expect(named("web-redflag-previous")).toBeUndefined();
    });

    it("refuses to touch a <name>-redflag-previous that runs, and puts the tag back", async () => {
      engine.containers.push(container("web-redflag-previous", engine.images[2]!, "redis:7.4"));
      const out = await installer().install([ref("nginx:1.27")], opts());
      expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
      expect(out.packages[0]!.reason).toContain("a container web-redflag-previous is running (left by an interrupted update and started since): remove or rename it, then update again");
      expect(named("web-redflag-previous")!.State.Running).toBe(true);
      expect(named("web")!.Image).toBe(oldNginx());
    });

    it("recreates the containers on the earlier image when the tag is rolled back", async () => {
      await installer().install([ref("nginx:1.27")], opts());
      engine.requests.length = 0;
      const back = await installer().rollback!(ref("nginx:1.27", nginx1), opts());
      expect(back.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: nginx2, toVersion: nginx1, reason: "recreated web, proxy on the earlier image" });
      expect(named("web")!.Image).toBe(oldNginx());
    });

    describe("Compose", () => {
      let tools: FakeTools;
      const files = () => [path.join(dir, "shop", "compose.yaml"), path.join(dir, "shop", "compose.override.yaml")];
      let ups = 0;
      beforeEach(async () => {
        ups = 0;
        const app = container("shop-app-1", engine.images[0]!, "acme/app:stable", {
          labels: {
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "app",
            "com.docker.compose.project.config_files": files().join(","),
            "com.docker.compose.project.working_dir": path.join(dir, "shop"),
          },
        });
        engine.containers = [app];
        engine.pulls.set("acme/app:stable", { digest: app2 });
        tools = await fakeTools("docker", { docker: 'if [ -f "$D/fail" ]; then echo "service app failed to start" >&2; exit 1; fi' });
        // The fake `docker compose up` replaces the service's container with one on the image the
        // tag names now, as Compose does when the image changed.
        engine.onRequest = () => {
          const runs = readFileSync(tools.file("docker.argv"), "utf8").split("@@end\n").length - 1;
          for (; ups < runs; ups++) {
            const old = engine.containers.find((c) => c.Config.Labels?.["com.docker.compose.service"] === "app")!;
            const current = engine.images.find((i) => i.RepoTags.includes("acme/app:stable"))!;
            engine.containers = engine.containers.filter((c) => c !== old);
            engine.containers.push({ ...container("shop-app-1", current, "acme/app:stable", { labels: old.Config.Labels }), looks: 0 });
          }
        };
        await writeFile(tools.file("docker.argv"), "");
      });
      afterEach(() => removeFakeTools(tools));
      const withFiles = async () => {
        await mkdir(path.join(dir, "shop"));
        for (const f of files()) await writeFile(f, "services: {}\n");
      };
      const composeArgv = () => ["compose", "--project-name", "shop", "--project-directory", path.join(dir, "shop"), "-f", files()[0]!, "-f", files()[1]!, "up", "-d", "--no-deps", "app"];

      it("recreates a Compose container through docker compose with the project's own files", async () => {
        await withFiles();
        const out = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "recreated shop-app-1 on the new image" });
        expect(await tools.calls("docker")).toEqual([composeArgv()]);
        expect(engine.containers.map((c) => [c.Name, c.Image])).toEqual([["/shop-app-1", imageId("acme/app", app2)]]);
        // Compose made the container; the Engine API was only asked about it.
        expect(containerCalls()).toEqual([]);
      });

      it("recreates a stopped Compose service without starting it", async () => {
        await withFiles();
        engine.containers[0]!.State = { Status: "exited", Running: false, Restarting: false, ExitCode: 0, Error: "" };
        const out = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, reason: "recreated shop-app-1 on the new image" });
        expect(await tools.calls("docker")).toEqual([composeArgv().map((a) => (a === "-d" ? "--no-start" : a))]);
      });

      it("re-pins the tag and runs docker compose up again when the new container turns unhealthy", async () => {
        await withFiles();
        engine.behaviour.set(imageId("acme/app", app2), "unhealthy");
        const out = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(out.packages[0]).toMatchObject({
          state: PackageResultState.FAILED,
          reason:
            "Compose service app of project shop: shop-app-1: the new container is unhealthy (curl: (7) Failed to connect to localhost port 80); " +
            "rolled back: acme/app:stable names the previous image again and shop-app-1 runs it",
        });
        expect(await tools.calls("docker")).toEqual([composeArgv(), composeArgv()]);
        engine.onRequest!();
        expect(engine.containers.map((c) => [c.Name, c.Image])).toEqual([["/shop-app-1", imageId("acme/app", app1)]]);
      });

      it("says why docker compose failed and puts the tag back", async () => {
        await withFiles();
        await tools.write("fail", "");
        const out = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
        expect(out.packages[0]!.reason).toMatch(/^Compose service app of project shop: docker compose up app failed \(exit 1\): service app failed to start; the rollback is incomplete: docker compose up app failed/);
        expect(engine.images.find((i) => i.RepoTags.includes("acme/app:stable"))!.Id).toBe(imageId("acme/app", app1));
      });

      it("leaves a whole Compose service when one of its containers opts out", async () => {
        await withFiles();
        const labels = { ...engine.containers[0]!.Config.Labels, [OPT_OUT_LABEL]: "false" };
        engine.containers.push(container("shop-app-2", engine.images[0]!, "acme/app:stable", { labels }));
        const out = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(out.packages[0]).toMatchObject({
          state: PackageResultState.INSTALLED,
          reason: "left shop-app-2 (io.redflag.recreate=false), shop-app-1 (Compose service app of project shop has a container with io.redflag.recreate=false) on the previous image",
        });
        expect(await tools.calls("docker")).toEqual([]);
      });

      it("leaves a Compose container as it is without the docker CLI or the project's files, and says so", async () => {
        const out = await installer().install([ref("acme/app:stable")], opts());
        expect(out.packages[0]).toMatchObject({
          state: PackageResultState.INSTALLED,
          reason: "left shop-app-1 (Compose project shop, service app: the docker CLI is not installed) on the previous image",
        });
        engine.images[0]!.RepoTags = ["acme/app:stable"];
        engine.images = engine.images.filter((i) => i.Id !== imageId("acme/app", app2));
        const noFiles = await installer().install([ref("acme/app:stable")], opts({ env: { HOME: dir, PATH: tools.env().PATH } }));
        expect(noFiles.packages[0]).toMatchObject({
          state: PackageResultState.INSTALLED,
          reason: `left shop-app-1 (Compose project shop, service app: ${path.join(dir, "shop")} is missing) on the previous image`,
        });
        expect(await tools.calls("docker")).toEqual([]);
        expect(containerCalls()).toEqual([]);
        expect(engine.containers.map((c) => c.Image)).toEqual([imageId("acme/app", app1)]);
      });
    });
  });
});

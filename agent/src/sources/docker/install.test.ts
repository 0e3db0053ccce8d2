import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseImageRef } from "./registry.ts";
import { CONTAINER_NOTE, createDockerInstaller, isHeld } from "./install.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

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

interface FakeEngine {
  socketPath: string;
  images: Image[];
  containers: { Id: string; Names: string[]; Image: string; ImageID: string; State: string }[];
  // "repo:tag" or "repo@digest" → what pulling it does.
  pulls: Map<string, PullPlan>;
  requests: { method: string; url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

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
    state.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    const url = new URL(req.url ?? "/", "http://docker");
    const p = url.pathname.replace(/^\/v1\.\d+/, "");
    const json = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json", "api-version": "1.47" }).end(`${JSON.stringify(body)}\n`);
    if (req.method === "GET" && p === "/version") return json(200, { Version: "27.3.1", ApiVersion: "1.47", MinAPIVersion: "1.24", Os: "linux", Arch: "amd64" });
    if (req.method === "GET" && p === "/images/json") return json(200, state.images.map((i) => ({ ...i, Containers: -1, SharedSize: -1, ParentId: "", Labels: null })));
    if (req.method === "GET" && p === "/containers/json") return json(200, state.containers);
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
  });
  const state: FakeEngine = {
    socketPath,
    images,
    containers: [],
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
  const installer = () => createDockerInstaller({ socketPath: engine.socketPath, registryUrl: () => hub.url, configPath: path.join(dir, "config.json") });
  const engineCalls = () => engine.requests.filter((r) => r.method === "POST").map((r) => r.url);

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-docker-install-"));
    hub = await startRegistry();
    engine = await startEngine(dir, [image("acme/app", ["stable"], app1), image("nginx", ["1.27"], nginx1), image("redis", ["7.4"], redis)]);
    engine.containers = [
      { Id: sha("c web"), Names: ["/web"], Image: "nginx:1.27", ImageID: engine.images[1]!.Id, State: "running" },
      { Id: sha("c proxy"), Names: ["/proxy"], Image: "nginx:1.27", ImageID: engine.images[1]!.Id, State: "running" },
      { Id: sha("c cache"), Names: ["/cache"], Image: "redis:7.4", ImageID: engine.images[2]!.Id, State: "running" },
    ];
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
      ["nginx:1.27", PackageResultState.INSTALLED, nginx1, nginx2, `${CONTAINER_NOTE}: 2 containers (web, proxy) keep running the previous image until they are recreated`],
      ["redis:7.4", PackageResultState.SKIPPED, redis, redis, "already up to date"],
    ]);
    expect(out.output.map((o) => [o.argv, o.exitCode])).toEqual([
      [["POST", "/v1.41/images/create?fromImage=nginx&tag=1.27"], 0],
      [["POST", "/v1.41/images/create?fromImage=redis&tag=7.4"], 0],
    ]);
    expect(out.output[0]!.stdoutTail).toBe(`Pulling from library/nginx\n${sha(`layer ${nginx2}`).slice(0, 12)}: Pull complete\nDigest: ${nginx2}\nStatus: Downloaded newer image for nginx:1.27`);
    // Nothing restarted, nothing removed: only pulls.
    expect(engineCalls()).toEqual(["/v1.41/images/create?fromImage=nginx&tag=1.27", "/v1.41/images/create?fromImage=redis&tag=7.4"]);
    expect(engine.requests.some((r) => r.url.includes("/containers/") && r.method !== "GET")).toBe(false);
  });

  it("installs everything pending except held images", async () => {
    engine.pulls.set("nginx:1.27", { digest: nginx2 });
    engine.pulls.set("acme/app:stable", { digest: app2 });
    const out = await installer().install([], opts({ holds: new Set(["acme/app:stable"]) }));
    expect(out.packages.map((p) => [p.name, p.state, p.toVersion])).toEqual([["nginx:1.27", PackageResultState.INSTALLED, nginx2]]);
    expect(engineCalls()).toEqual(["/v1.41/images/create?fromImage=nginx&tag=1.27"]);
    expect(out.packages[0]!.reason).toContain("web, proxy");
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
      ["nginx:1.27", PackageResultState.INSTALLED, nginx1, expect.stringContaining("containers are not restarted")],
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
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: app2, toVersion: app1, reason: `${CONTAINER_NOTE}; no container used the previous image` });
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
});

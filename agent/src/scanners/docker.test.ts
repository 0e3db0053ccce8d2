import { SubsystemRunState } from "@redflag/gen/command_pb";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf, startFakeEngine, startFakeRegistry, type FakeEngine, type FakeRegistry } from "../../test/support/fake-docker.ts";
import { localDigest, parseChallenge, parseImageRef } from "./docker-api.ts";
import { scanDocker, trackedImages } from "./docker.ts";

describe("image references", () => {
  it.each([
    ["nginx:1.27", { registry: "docker.io", path: "library/nginx", tag: "1.27", repository: "nginx" }],
    ["nginx", { registry: "docker.io", path: "library/nginx", tag: "latest", local: "nginx:latest" }],
    ["grafana/grafana:11.3.0", { registry: "docker.io", path: "grafana/grafana", tag: "11.3.0" }],
    ["ghcr.io/home-assistant/home-assistant:stable", { registry: "ghcr.io", path: "home-assistant/home-assistant", repository: "ghcr.io/home-assistant/home-assistant" }],
    ["localhost:5000/team/app:v2", { registry: "localhost:5000", path: "team/app", tag: "v2" }],
  ])("%s", (text, expected) => {
    expect(parseImageRef(text)).toMatchObject(expected);
  });

  it("refuses what is not a reference", () => {
    expect(parseImageRef("nginx@sha256:abc")).toBeUndefined();
    expect(parseImageRef("UPPER/case:1")).toBeUndefined();
    expect(parseImageRef("a:$(id)")).toBeUndefined();
  });

  it("matches RepoDigests across spellings of Docker Hub names", () => {
    expect(localDigest({ RepoDigests: ["docker.io/library/nginx@sha256:aa"] }, "nginx")).toBe("sha256:aa");
    expect(localDigest({ RepoDigests: ["other@sha256:bb"] }, "nginx")).toBeUndefined();
  });

  it("reads auth challenges", () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/nginx:pull" },
    });
  });

  it("skips locally built and dangling images", () => {
    const { tracked, untracked } = trackedImages([
      { Id: "1", RepoTags: ["myapp:dev"], RepoDigests: [] },
      { Id: "2", RepoTags: ["<none>:<none>"], RepoDigests: null },
      { Id: "3", RepoTags: ["nginx:1.27", "nginx:latest"], RepoDigests: ["nginx@sha256:11"] },
    ]);
    expect(tracked.map((t) => t.ref.local)).toEqual(["nginx:1.27", "nginx:latest"]);
    expect(untracked).toBe(1);
  });
});

describe("scanDocker against a fake engine and registries", () => {
  let dir: string;
  let engine: FakeEngine;
  let hub: FakeRegistry;
  let ghcr: FakeRegistry;
  let privateRegistry: FakeRegistry;
  const old = digestOf("nginx 1.27 old");
  const current = digestOf("nginx 1.27 new");

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-docker-"));
    hub = await startFakeRegistry({ auth: "bearer" });
    ghcr = await startFakeRegistry({ auth: "bearer" });
    privateRegistry = await startFakeRegistry({ auth: "basic", credentials: { username: "ci", password: "s3cret" } });
    engine = await startFakeEngine(dir, [
      { Id: "sha256:i1", RepoTags: ["nginx:1.27"], RepoDigests: [`nginx@${old}`], Size: 1 },
      { Id: "sha256:i2", RepoTags: ["redis:7"], RepoDigests: [`redis@${digestOf("redis")}`], Size: 1 },
      { Id: "sha256:i3", RepoTags: ["ghcr.io/acme/api:latest"], RepoDigests: [`ghcr.io/acme/api@${digestOf("api old")}`], Size: 1 },
      { Id: "sha256:i4", RepoTags: ["registry.acme.test:5000/team/worker:2"], RepoDigests: [`registry.acme.test:5000/team/worker@${digestOf("worker old")}`], Size: 1 },
      { Id: "sha256:i5", RepoTags: ["myapp:dev"], RepoDigests: [], Size: 1 },
    ]);
    hub.tags.set("library/nginx:1.27", current);
    hub.tags.set("library/redis:7", digestOf("redis"));
    ghcr.tags.set("acme/api:latest", digestOf("api new"));
    privateRegistry.tags.set("team/worker:2", digestOf("worker new"));
  });
  afterAll(async () => {
    await Promise.all([engine?.close(), hub?.close(), ghcr?.close(), privateRegistry?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  const registryUrl = (host: string) =>
    ({ "registry-1.docker.io": hub.url, "ghcr.io": ghcr.url, "registry.acme.test:5000": privateRegistry.url })[host] ?? "http://127.0.0.1:9";
  const opts = { refresh: false, timeoutMs: 10_000, env: { HOME: "/nonexistent" }, isRoot: true };

  it("is not present without the Engine socket", async () => {
    const scan = await scanDocker(opts, { socketPath: path.join(dir, "missing.sock") });
    expect(scan.run).toMatchObject({ subsystem: "docker", state: SubsystemRunState.NOT_PRESENT });
    expect(scan.run.message).toContain("missing.sock is missing");
  });

  it("finds images whose tag now names another digest, using token auth and config credentials", async () => {
    const config = path.join(dir, "config.json");
    await writeFile(config, JSON.stringify({ auths: { "registry.acme.test:5000": { auth: Buffer.from("ci:s3cret").toString("base64") } } }));
    const scan = await scanDocker(opts, { socketPath: engine.socketPath, registryUrl, configPath: config });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.message).toBe("3 update(s), 0 security; 4 image(s) checked; 1 local-only tag(s) skipped (built here, no registry digest)");
    expect(scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository])).toEqual([
      ["nginx:1.27", old, current, "docker.io"],
      ["ghcr.io/acme/api:latest", digestOf("api old"), digestOf("api new"), "ghcr.io"],
      ["registry.acme.test:5000/team/worker:2", digestOf("worker old"), digestOf("worker new"), "registry.acme.test:5000"],
    ]);
    // Docker Hub: an anonymous token for exactly this repository, then the HEAD with it.
    expect(hub.requests.filter((r) => r.url.startsWith("/token")).map((r) => new URL(r.url, hub.url).searchParams.get("scope"))).toContain("repository:library/nginx:pull");
    expect(hub.requests.filter((r) => r.method === "HEAD").at(-1)?.authorization).toMatch(/^Bearer tok-/);
    expect(privateRegistry.requests.at(-1)?.authorization).toBe(`Basic ${Buffer.from("ci:s3cret").toString("base64")}`);
  });

  it("notes images it could not check (no credentials, rate limit) without failing the scan", async () => {
    const limited = await startFakeRegistry({ auth: "none", status: 429 });
    try {
      const scan = await scanDocker(opts, {
        socketPath: engine.socketPath,
        registryUrl: (host) => (host === "registry-1.docker.io" ? limited.url : registryUrl(host)),
        configPath: path.join(dir, "none.json"),
      });
      expect(scan.run.state).toBe(SubsystemRunState.RAN);
      expect(scan.updates.map((u) => u.name)).toEqual(["ghcr.io/acme/api:latest"]);
      expect(scan.run.message).toContain("3 could not be checked: docker.io rate-limited the check (HTTP 429)");
      expect(scan.run.message).toContain("registry.acme.test:5000 needs credentials for team/worker (none in the Docker config)");
    } finally {
      await limited.close();
    }
  });

  it("fails when the Engine API itself fails", async () => {
    engine.failImagesList = 500;
    try {
      const scan = await scanDocker(opts, { socketPath: engine.socketPath, registryUrl });
      expect(scan.run.state).toBe(SubsystemRunState.FAILED);
      expect(scan.run.message).toBe("listing images failed: GET /v1.41/images/json answered 500: Error response from daemon: layer does not exist");
    } finally {
      engine.failImagesList = undefined;
    }
  });

  it("reports an unreachable registry as a note", async () => {
    const scan = await scanDocker({ ...opts, timeoutMs: 3000 }, { socketPath: engine.socketPath, registryUrl: () => "http://127.0.0.1:9" });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.updates).toEqual([]);
    expect(scan.run.message).toMatch(/4 could not be checked: docker\.io: connect ECONNREFUSED/);
  });

  it("refuses a remote DOCKER_HOST clearly", async () => {
    const scan = await scanDocker({ ...opts, env: { DOCKER_HOST: "tcp://10.0.0.5:2375" } });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "DOCKER_HOST=tcp://10.0.0.5:2375 is not a unix socket; only the local Engine API socket is supported" });
  });
});

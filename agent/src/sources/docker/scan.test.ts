import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runProcess } from "../../run-process.ts";
import {
  digestsFor,
  HttpFailure,
  loadDockerConfig,
  MANIFEST_ACCEPT,
  parseChallenge,
  parseImageRef,
  registryAuthHeader,
  registryOfAuthKey,
} from "./registry.ts";
import {
  describeUnchecked,
  engineFailure,
  localTags,
  pickApiPrefix,
  scanDocker,
  supersededContainers,
  type EngineContainer,
  type EngineImage,
} from "./scan.ts";

// ---------------------------------------------------------------------------------------------
// Fakes: a Docker Engine API on a Unix socket, registries on 127.0.0.1

const sha = (text: string) => createHash("sha256").update(text).digest("hex");
const digestOf = (text: string) => `sha256:${sha(text)}`;
// An OCI image index as registries serve it; its digest is the hash of these bytes.
const index = (name: string) =>
  JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: digestOf(`${name} amd64`), size: 1786, platform: { architecture: "amd64", os: "linux" } },
      { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: digestOf(`${name} arm64`), size: 1786, platform: { architecture: "arm64", os: "linux", variant: "v8" } },
    ],
  });
const digestOfIndex = (name: string) => digestOf(index(name));

// `GET /version` of Docker Engine 27.3 (API 1.47).
const VERSION_27 = {
  Platform: { Name: "Docker Engine - Community" },
  Version: "27.3.1",
  ApiVersion: "1.47",
  MinAPIVersion: "1.24",
  GitCommit: "41ca978",
  GoVersion: "go1.22.7",
  Os: "linux",
  Arch: "amd64",
  KernelVersion: "6.8.0-48-generic",
  BuildTime: "2024-09-20T11:41:08.000000000+00:00",
};

// `GET /images/json` entries as Engine 27 writes them.
const image = (id: string, tags: string[], digests: string[], size = 191_670_474): EngineImage & Record<string, unknown> => ({
  Containers: -1,
  Created: 1_728_493_843,
  Id: `sha256:${sha(id)}`,
  Labels: { maintainer: "NGINX Docker Maintainers <docker-maint@nginx.com>" },
  ParentId: "",
  RepoDigests: digests,
  RepoTags: tags,
  SharedSize: -1,
  Size: size,
});

// `GET /containers/json?all=1` entries.
const container = (name: string, imageName: string, imageId: string, state = "running"): EngineContainer & Record<string, unknown> => ({
  Id: sha(`container ${name}`),
  Names: [`/${name}`],
  Image: imageName,
  ImageID: imageId,
  Command: "/docker-entrypoint.sh nginx -g 'daemon off;'",
  Created: 1_729_000_000,
  Ports: [{ IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8080, Type: "tcp" }],
  Labels: { "com.docker.compose.project": "home" },
  State: state,
  Status: state === "running" ? "Up 3 days" : "Exited (0) 2 days ago",
  HostConfig: { NetworkMode: "bridge" },
  NetworkSettings: { Networks: {} },
  Mounts: [],
});

interface FakeEngine {
  socketPath: string;
  version: { ApiVersion: string; MinAPIVersion: string } & Record<string, unknown>;
  images: unknown[];
  containers: unknown[];
  // Unversioned path → status to answer with.
  fail: Map<string, number>;
  hang: Set<string>;
  requests: { method: string; url: string }[];
  close(): Promise<void>;
}

const apiNumber = (v: string) => Number(v.split(".")[0]) * 1000 + Number(v.split(".")[1]);

async function startEngine(dir: string, name: string, images: unknown[], containers: unknown[]): Promise<FakeEngine> {
  const socketPath = path.join(dir, `${name}.sock`);
  const server: Server = createServer((req, res) => {
    state.requests.push({ method: req.method ?? "", url: req.url ?? "" });
    const url = new URL(req.url ?? "/", "http://docker");
    const versioned = /^\/v(\d+\.\d+)(\/.*)$/.exec(url.pathname);
    const p = versioned ? versioned[2]! : url.pathname;
    const json = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json", "api-version": state.version.ApiVersion }).end(`${JSON.stringify(body)}\n`);
    if (versioned && apiNumber(versioned[1]!) < apiNumber(state.version.MinAPIVersion)) {
      return json(400, { message: `client version ${versioned[1]} is too old. Minimum supported API version is ${state.version.MinAPIVersion}, please upgrade your client to a newer version` });
    }
    if (versioned && apiNumber(versioned[1]!) > apiNumber(state.version.ApiVersion)) {
      return json(400, { message: `client version ${versioned[1]} is too new. Maximum supported API version is ${state.version.ApiVersion}` });
    }
    if (state.hang.has(p)) return;
    const failing = state.fail.get(p);
    if (failing) return json(failing, { message: "Error response from daemon: layer does not exist" });
    if (req.method === "GET" && p === "/version") return json(200, state.version);
    if (req.method === "GET" && p === "/images/json") return json(200, state.images);
    if (req.method === "GET" && p === "/containers/json") return json(200, url.searchParams.get("all") === "1" ? state.containers : state.containers.filter((c) => (c as EngineContainer).State === "running"));
    json(404, { message: "page not found" });
  });
  const state: FakeEngine = {
    socketPath,
    version: { ...VERSION_27 },
    images,
    containers,
    fail: new Map(),
    hang: new Set(),
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
  // "path:tag" → manifest body served; its digest is sha256 of the body.
  manifests: Map<string, string>;
  // Repository path → status answered instead of the manifest (after auth).
  status: Map<string, number>;
  hang: Set<string>;
  // Bearer registries: repositories an anonymous token does not open.
  privatePaths: Set<string>;
  noDigestHeader: boolean;
  delayMs: number;
  requests: { method: string; url: string; authorization?: string | undefined; accept?: string | undefined }[];
  inFlight: number;
  maxInFlight: number;
  close(): Promise<void>;
}

async function startRegistry(auth: "bearer" | "basic" | "none", users: Record<string, string> = {}): Promise<FakeRegistry> {
  const userOf = (headers: IncomingHttpHeaders): string | null | undefined => {
    const m = /^Basic (.+)$/.exec(headers.authorization ?? "");
    if (!m) return undefined;
    const [user, ...rest] = Buffer.from(m[1]!, "base64").toString().split(":");
    return users[user!] !== undefined && users[user!] === rest.join(":") ? user : null;
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://registry");
    state.requests.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, accept: req.headers.accept });
    if (url.pathname === "/token") {
      const user = userOf(req.headers);
      if (user === null) return res.writeHead(401, { "content-type": "application/json" }).end('{"details":"incorrect username or password"}\n');
      const token = Buffer.from(JSON.stringify({ scope: url.searchParams.get("scope"), user: user ?? "" })).toString("base64url");
      return res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: "2024-11-02T10:00:00.000Z" }));
    }
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (!m) return res.writeHead(404).end();
    const [repoPath, tag] = [m[1]!, decodeURIComponent(m[2]!)];
    let allowed = auth === "none";
    if (auth === "basic") allowed = typeof userOf(req.headers) === "string";
    if (auth === "bearer") {
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
      const claims = bearer ? (JSON.parse(Buffer.from(bearer[1]!, "base64url").toString()) as { scope: string; user: string }) : undefined;
      allowed = claims?.scope === `repository:${repoPath}:pull` && (!state.privatePaths.has(repoPath) || claims.user !== "");
    }
    if (!allowed) {
      const challenge =
        auth === "bearer" ? `Bearer realm="${state.url}/token",service="registry.fake.test",scope="repository:${repoPath}:pull"` : 'Basic realm="Registry Realm"';
      return res
        .writeHead(401, { "www-authenticate": challenge, "content-type": "application/json", "docker-distribution-api-version": "registry/2.0" })
        .end();
    }
    if (state.hang.has(repoPath)) return;
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    setTimeout(() => {
      state.inFlight--;
      const status = state.status.get(repoPath);
      if (status) return res.writeHead(status, { "content-type": "application/json" }).end();
      const body = state.manifests.get(`${repoPath}:${tag}`);
      if (!body) return res.writeHead(404, { "content-type": "application/json" }).end();
      res.writeHead(200, {
        "content-type": "application/vnd.oci.image.index.v1+json",
        "content-length": Buffer.byteLength(body),
        ...(state.noDigestHeader ? {} : { "docker-content-digest": digestOf(body) }),
        "docker-distribution-api-version": "registry/2.0",
        etag: `"${digestOf(body)}"`,
      });
      res.end(req.method === "GET" ? body : undefined);
    }, state.delayMs);
  });
  const state: FakeRegistry = {
    url: "",
    manifests: new Map(),
    status: new Map(),
    hang: new Set(),
    privatePaths: new Set(),
    noDigestHeader: false,
    delayMs: 0,
    requests: [],
    inFlight: 0,
    maxInFlight: 0,
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
// Parsers

describe("image references", () => {
  it.each([
    ["nginx:1.27", { local: "nginx:1.27", repository: "nginx", registry: "docker.io", path: "library/nginx", tag: "1.27" }],
    ["nginx", { local: "nginx:latest", repository: "nginx", registry: "docker.io", path: "library/nginx", tag: "latest" }],
    ["grafana/grafana:11.3.0", { registry: "docker.io", path: "grafana/grafana", tag: "11.3.0" }],
    ["docker.io/library/nginx:1.27", { registry: "docker.io", path: "library/nginx", repository: "docker.io/library/nginx" }],
    ["index.docker.io/nginx:1.27", { registry: "docker.io", path: "library/nginx" }],
    ["ghcr.io/home-assistant/home-assistant:stable", { registry: "ghcr.io", path: "home-assistant/home-assistant", repository: "ghcr.io/home-assistant/home-assistant" }],
    ["localhost:5000/team/app:v2", { registry: "localhost:5000", path: "team/app", tag: "v2" }],
    ["localhost:5000/app", { registry: "localhost:5000", path: "app", tag: "latest", local: "localhost:5000/app:latest" }],
    ["quay.io/prometheus/node-exporter:v1.8.2", { registry: "quay.io", path: "prometheus/node-exporter", tag: "v1.8.2" }],
  ])("%s", (text, expected) => {
    expect(parseImageRef(text)).toMatchObject(expected);
  });

  it.each(["nginx@sha256:abc", "library/NGINX:1", "a:$(id)", "-rm:1", "nginx:", "nginx:-x", "a//b:1", ""])("refuses %j", (text) => {
    expect(parseImageRef(text)).toBeUndefined();
  });

  it("finds a repository's digests in RepoDigests whatever spelling of the name it uses", () => {
    const nginx = parseImageRef("nginx:1.27")!;
    const d1 = digestOf("a");
    const d2 = digestOf("b");
    expect(digestsFor([`nginx@${d1}`], nginx)).toEqual([d1]);
    expect(digestsFor([`docker.io/library/nginx@${d2}`, `nginx@${d1}`, `nginx@${d1}`], nginx)).toEqual([d2, d1]);
    expect(digestsFor([`other@${d1}`, "nginx@sha256:short", "garbage"], nginx)).toEqual([]);
    expect(digestsFor(null, nginx)).toEqual([]);
  });
});

describe("registry protocol details", () => {
  it("reads auth challenges, quoted commas included", () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/nginx:pull" },
    });
    expect(parseChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull,push"')!.params.scope).toBe("repository:org/app:pull,push");
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: "basic", params: { realm: "Registry Realm" } });
    expect(parseChallenge("")).toBeUndefined();
  });

  it("normalises auths keys to registries", () => {
    expect(registryOfAuthKey("https://index.docker.io/v1/")).toBe("docker.io");
    expect(registryOfAuthKey("registry-1.docker.io")).toBe("docker.io");
    expect(registryOfAuthKey("https://Registry.Example.com:5000/v2/")).toBe("registry.example.com:5000");
    expect(registryOfAuthKey("ghcr.io")).toBe("ghcr.io");
  });

  it("reads credentials from the Docker config, noting helpers and leaving identity tokens alone", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "rf-docker-config-"));
    try {
      const file = path.join(dir, "config.json");
      await writeFile(
        file,
        JSON.stringify({
          auths: {
            "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hub:pass").toString("base64") },
            "ghcr.io": { username: "octo", password: "ghp_x" },
            "myregistry.azurecr.io": { auth: "", identitytoken: "eyJ..." },
            "quay.io": {},
          },
          credsStore: "desktop",
          credHelpers: { "123456789.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login" },
        }),
      );
      const config = await loadDockerConfig(file);
      expect([...config.auths]).toEqual([
        ["docker.io", { username: "hubuser", password: "hub:pass", serverAddress: "https://index.docker.io/v1/" }],
        ["ghcr.io", { username: "octo", password: "ghp_x", serverAddress: "ghcr.io" }],
      ]);
      expect(config.helpers).toEqual(['credsStore "desktop"', 'credHelpers "123456789.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"']);
      expect(config.problem).toBeUndefined();
      expect(await loadDockerConfig(path.join(dir, "missing.json"))).toEqual({ file: path.join(dir, "missing.json"), auths: new Map(), helpers: [] });
      await writeFile(file, "{not json");
      expect((await loadDockerConfig(file)).problem).toBe(`${file} is not valid JSON`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("encodes X-Registry-Auth in Go's padded URL-safe base64", () => {
    const header = registryAuthHeader({ username: "bot", password: "p>?w", serverAddress: "docker.io" })["x-registry-auth"]!;
    expect(header).toMatch(/^[A-Za-z0-9_-]+=*$/);
    expect(header.length % 4).toBe(0);
    expect(JSON.parse(Buffer.from(header, "base64url").toString())).toEqual({ username: "bot", password: "p>?w", serveraddress: "docker.io" });
    expect(registryAuthHeader(undefined)).toEqual({});
  });

  it("speaks API 1.41 where the daemon still accepts it, else the daemon's own version", () => {
    expect(pickApiPrefix({ ApiVersion: "1.47", MinAPIVersion: "1.24" })).toBe("/v1.41");
    expect(pickApiPrefix({ ApiVersion: "1.41", MinAPIVersion: "1.12" })).toBe("/v1.41");
    expect(pickApiPrefix({ ApiVersion: "1.52", MinAPIVersion: "1.44" })).toBe("/v1.52");
    expect(pickApiPrefix({ ApiVersion: "1.40", MinAPIVersion: "1.12" })).toBe("/v1.40");
    expect(pickApiPrefix({})).toBe("");
  });

  it("says why the Engine API could not be reached", () => {
    expect(engineFailure("/var/run/docker.sock", new HttpFailure("EACCES", "connect EACCES /var/run/docker.sock"))).toBe(
      "permission denied on /var/run/docker.sock; run the agent as root or in the docker group",
    );
    expect(engineFailure("/s", new HttpFailure("ECONNREFUSED", "connect ECONNREFUSED /s"))).toBe("nothing answers on /s; is the Docker daemon running?");
  });
});

describe("local images and containers", () => {
  const old = digestOf("old");
  const images = [
    image("nginx", ["nginx:1.27", "nginx:latest"], [`nginx@${old}`]),
    image("built", ["myapp:dev"], []),
    image("loaded", ["<none>:<none>"], ["<none>@<none>"]),
    image("dangling", [], [`nginx@${digestOf("older")}`]),
    image("pinned", [], [`redis@${digestOf("pinned")}`]),
  ];

  it("keeps tags with a registry digest and counts the rest", () => {
    const local = localTags(images);
    expect(local.tags.map((t) => [t.ref.local, t.digests])).toEqual([
      ["nginx:1.27", [old]],
      ["nginx:latest", [old]],
    ]);
    expect(local).toMatchObject({ withoutDigest: ["myapp:dev"], unreadable: [], untagged: 3 });
  });

  it("finds containers left on an image whose tag moved on, not ones pinned by digest", () => {
    const stale = supersededContainers(images, [
      container("web", "nginx:1.27", images[0]!.Id),
      container("old-web", images[3]!.Id, images[3]!.Id, "exited"),
      container("cache", `redis@${digestOf("pinned")}`, images[4]!.Id),
    ]);
    expect(stale.map((c) => c.Names)).toEqual([["/old-web"]]);
  });

  it("groups registry failures by reason", () => {
    const tags = localTags([image("a", ["a:1", "b:1", "c:1"], [`a@${old}`, `b@${old}`, `c@${old}`])]).tags;
    expect(
      describeUnchecked([
        { tag: tags[0]!, error: "docker.io rate limit reached (HTTP 429)" },
        { tag: tags[1]!, error: "docker.io rate limit reached (HTTP 429)" },
        { tag: tags[2]!, error: "tag not found on docker.io (HTTP 404)" },
      ]),
    ).toBe("3 tags could not be checked: a:1, b:1: docker.io rate limit reached (HTTP 429); c:1: tag not found on docker.io (HTTP 404)");
  });
});

// ---------------------------------------------------------------------------------------------
// Whole scans

describe("scanDocker against a fake Engine API and registries", () => {
  let dir: string;
  let engine: FakeEngine;
  let hub: FakeRegistry;
  let ghcr: FakeRegistry;
  let acme: FakeRegistry;
  let configPath: string;
  const nginxOld = digestOfIndex("nginx 1.27.1");
  const nginxNew = digestOfIndex("nginx 1.27.2");
  const apiOld = digestOfIndex("api 2024-10");
  const apiNew = digestOfIndex("api 2024-11");
  const workerOld = digestOfIndex("worker 2.0");
  const workerNew = digestOfIndex("worker 2.1");
  const images = [
    image("nginx", ["nginx:1.27"], [`nginx@${nginxOld}`]),
    image("redis", ["redis:7.4"], [`redis@${digestOfIndex("redis 7.4.1")}`], 117_000_000),
    // The containerd image store writes fully qualified names.
    image("grafana", ["grafana/grafana:11.3.0"], [`docker.io/grafana/grafana@${digestOfIndex("grafana 11.3.0")}`]),
    image("api", ["ghcr.io/acme/api:latest"], [`ghcr.io/acme/api@${apiOld}`]),
    image("worker", ["registry.acme.test:5000/team/worker:2"], [`registry.acme.test:5000/team/worker@${workerOld}`]),
    image("myapp", ["myapp:dev"], []),
    image("nginx-previous", [], [`nginx@${digestOfIndex("nginx 1.27.0")}`]),
  ];
  const containers = [
    container("web", "nginx:1.27", images[0]!.Id),
    container("api", "ghcr.io/acme/api:latest", images[3]!.Id),
    container("cache", "redis:7.4", images[1]!.Id),
    container("old-web", images[6]!.Id, images[6]!.Id, "exited"),
  ];
  const registryUrl = (host: string) =>
    ({ "registry-1.docker.io": hub.url, "ghcr.io": ghcr.url, "registry.acme.test:5000": acme.url })[host] ?? "http://127.0.0.1:9";
  const opts = (extra: Partial<Parameters<typeof scanDocker>[0]> = {}) => ({ refresh: false, timeoutMs: 10_000, env: { HOME: dir }, isRoot: true, ...extra });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-docker-scan-"));
    [hub, ghcr, acme] = await Promise.all([startRegistry("bearer"), startRegistry("bearer"), startRegistry("basic", { ci: "s3cret" })]);
    engine = await startEngine(dir, "docker", images, containers);
    hub.manifests.set("library/nginx:1.27", index("nginx 1.27.2"));
    hub.manifests.set("library/redis:7.4", index("redis 7.4.1"));
    hub.manifests.set("grafana/grafana:11.3.0", index("grafana 11.3.0"));
    ghcr.manifests.set("acme/api:latest", index("api 2024-11"));
    acme.manifests.set("team/worker:2", index("worker 2.1"));
    configPath = path.join(dir, "config.json");
    await writeFile(configPath, JSON.stringify({ auths: { "registry.acme.test:5000": { auth: Buffer.from("ci:s3cret").toString("base64") } } }));
  });
  afterAll(async () => {
    await Promise.all([engine?.close(), hub?.close(), ghcr?.close(), acme?.close()]);
    await rm(dir, { recursive: true, force: true });
  });
  const reset = () => {
    for (const r of [hub, ghcr, acme]) {
      r.requests.length = 0;
      r.status.clear();
      r.hang.clear();
      r.privatePaths.clear();
      r.noDigestHeader = false;
      r.delayMs = 0;
      r.maxInFlight = 0;
    }
    engine.requests.length = 0;
    engine.fail.clear();
    engine.hang.clear();
    engine.images = images;
    engine.version = { ...VERSION_27 };
  };

  it("is not present without the Engine socket", async () => {
    const missing = path.join(dir, "missing.sock");
    const scan = await scanDocker(opts(), { socketPath: missing });
    expect(scan.run).toMatchObject({ subsystem: "docker", state: SubsystemRunState.NOT_PRESENT, message: `Docker is not installed or its socket is missing (${missing})` });
    expect(scan.updates).toEqual([]);
    const viaEnv = await scanDocker(opts({ env: { DOCKER_HOST: `unix://${missing}` } }));
    expect(viaEnv.run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("refuses a DOCKER_HOST that is not a Unix socket, and a socket path that is a plain file", async () => {
    const tcp = await scanDocker(opts({ env: { DOCKER_HOST: "tcp://10.0.0.5:2375" } }));
    expect(tcp.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "DOCKER_HOST=tcp://10.0.0.5:2375 is not a Unix socket; the agent only talks to the local Engine API socket (unix://…)" });
    const file = path.join(dir, "plain-file");
    await writeFile(file, "");
    const plain = await scanDocker(opts(), { socketPath: file });
    expect(plain.run).toMatchObject({ state: SubsystemRunState.FAILED, message: `${file} exists but is not a socket` });
  });

  it("fails clearly when the socket is not ours to use", async () => {
    // Root ignores socket modes: then the scan runs as nobody in a child process.
    const open = await mkdtemp(path.join(tmpdir(), "rf-docker-perm-"));
    await chmod(open, 0o755);
    const locked = await startEngine(open, "locked", [], []);
    try {
      await chmod(locked.socketPath, 0o600);
      let state: SubsystemRunState;
      let message: string;
      if (process.getuid?.() === 0) {
        const script = `import { scanDocker } from ${JSON.stringify(path.join(import.meta.dirname, "scan.ts"))};
const scan = await scanDocker({ refresh: false, timeoutMs: 5000, env: {}, isRoot: false }, { socketPath: process.argv[1] });
process.stdout.write(JSON.stringify({ state: scan.run.state, message: scan.run.message }));`;
        const child = await runProcess([process.execPath, "--input-type=module", "-e", script, locked.socketPath], { timeoutMs: 20_000, uid: 65534, gid: 65534, env: { PATH: "/usr/bin:/bin" } });
        expect(child.stderr).toBe("");
        ({ state, message } = JSON.parse(child.stdout) as { state: SubsystemRunState; message: string });
      } else {
        ({ state, message } = (await scanDocker(opts(), { socketPath: locked.socketPath })).run);
      }
      expect({ state, message }).toEqual({ state: SubsystemRunState.FAILED, message: `permission denied on ${locked.socketPath}; run the agent as root or in the docker group` });
    } finally {
      await locked.close();
      await rm(open, { recursive: true, force: true });
    }
  });

  it("finds tags that now name another digest: Docker Hub with an anonymous token, ghcr.io, a private registry with config credentials", async () => {
    reset();
    const scan = await scanDocker(opts({ env: { HOME: dir, DOCKER_HOST: `unix://${engine.socketPath}` } }), { registryUrl, configPath });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.updateCount).toBe(3);
    expect(scan.run.message).toBe(
      "3 updates, 0 security; 5 tags checked; 2 outdated images used by containers (an install recreates them); " +
        "1 tag without a registry digest skipped (built or loaded locally); 1 untagged image ignored; " +
        "1 container still runs an image its tag no longer names (old-web); recreate it to use the pulled image",
    );
    expect(scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository])).toEqual([
      ["nginx:1.27", nginxOld, nginxNew, "docker.io"],
      ["ghcr.io/acme/api:latest", apiOld, apiNew, "ghcr.io"],
      ["registry.acme.test:5000/team/worker:2", workerOld, workerNew, "registry.acme.test:5000"],
    ]);
    expect(scan.updates[0]).toMatchObject({ source: "docker", severity: UpdateSeverity.UNKNOWN, security: false, sizeBytes: 0n, rebootRequired: false, architecture: "" });

    // The Engine API in version 1.41, containers included.
    expect(engine.requests.map((r) => `${r.method} ${r.url}`)).toEqual(["GET /version", "GET /v1.41/images/json", "GET /v1.41/containers/json?all=1"]);
    // Docker Hub: official images under library/, a token for exactly that repository, every
    // manifest kind accepted.
    const tokenScopes = hub.requests.filter((r) => r.url.startsWith("/token")).map((r) => new URL(r.url, hub.url).searchParams.get("scope"));
    expect(tokenScopes.sort()).toEqual(["repository:grafana/grafana:pull", "repository:library/nginx:pull", "repository:library/redis:pull"]);
    const nginxHeads = hub.requests.filter((r) => r.method === "HEAD" && r.url === "/v2/library/nginx/manifests/1.27");
    expect(nginxHeads).toHaveLength(2);
    expect(nginxHeads[0]!.authorization).toBeUndefined();
    expect(nginxHeads[1]!.authorization).toMatch(/^Bearer /);
    expect(nginxHeads[1]!.accept).toBe(MANIFEST_ACCEPT);
    expect(MANIFEST_ACCEPT).toContain("application/vnd.oci.image.index.v1+json");
    expect(MANIFEST_ACCEPT).toContain("application/vnd.docker.distribution.manifest.list.v2+json");
    expect(MANIFEST_ACCEPT).toContain("application/vnd.docker.distribution.manifest.v2+json");
    // The private registry: a Basic challenge answered with the config's credentials.
    expect(acme.requests.map((r) => r.authorization)).toEqual([undefined, `Basic ${Buffer.from("ci:s3cret").toString("base64")}`]);
  });

  it("reports everything current as no updates", async () => {
    reset();
    engine.images = [images[1]!, images[2]!];
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0, message: "no updates; 2 tags checked" });
  });

  it("asks one token per repository, and at most four registry requests at a time", async () => {
    reset();
    const many = Array.from({ length: 10 }, (_, i) => image(`app${i}`, [`acme/app:v${i}`], [`acme/app@${digestOfIndex(`app v${i}`)}`]));
    for (let i = 0; i < 10; i++) hub.manifests.set(`acme/app:v${i}`, index(`app v${i}${i % 2 ? " rebuilt" : ""}`));
    hub.delayMs = 50;
    engine.images = many;
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(scan.run.message).toBe("5 updates, 0 security; 10 tags checked");
    expect(hub.requests.filter((r) => r.url.startsWith("/token"))).toHaveLength(1);
    expect(hub.maxInFlight).toBeGreaterThan(1);
    expect(hub.maxInFlight).toBeLessThanOrEqual(4);
  });

  it("notes tags it could not check (no credentials, wrong credentials, 404, 429) without failing the scan", async () => {
    reset();
    hub.privatePaths.add("library/redis");
    hub.status.set("grafana/grafana", 429);
    ghcr.status.set("acme/api", 404);
    const noCredentials = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath: path.join(dir, "none.json") });
    expect(noCredentials.run.state).toBe(SubsystemRunState.RAN);
    expect(noCredentials.updates.map((u) => u.name)).toEqual(["nginx:1.27"]);
    expect(noCredentials.run.message).toContain(
      "1 tag checked; 1 outdated image used by containers (an install recreates them); 4 tags could not be checked: " +
        "redis:7.4: docker.io denied anonymous access (private or missing repository) and the Docker config has no credentials for it; grafana/grafana:11.3.0: docker.io rate limit reached (HTTP 429); " +
        "ghcr.io/acme/api:latest: tag not found on ghcr.io (HTTP 404); and 1 other reason",
    );

    // Wrong credentials, and a credential helper the agent does not run.
    reset();
    hub.privatePaths.add("library/redis");
    const wrong = path.join(dir, "wrong.json");
    await writeFile(wrong, JSON.stringify({ auths: { "registry.acme.test:5000": { username: "ci", password: "nope" } }, credsStore: "desktop" }));
    const refused = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath: wrong });
    expect(refused.run.message).toContain(
      "2 tags could not be checked: redis:7.4: docker.io denied anonymous access (private or missing repository) and the Docker config has no credentials for it; " +
        "registry.acme.test:5000/team/worker:2: registry.acme.test:5000 refused the credentials from the Docker config",
    );
    expect(refused.run.message).toContain('credential helpers (credsStore "desktop") are not run; registries behind them cannot be checked');
  });

  it("answers a Basic challenge only with credentials, noting the tag otherwise", async () => {
    reset();
    engine.images = [images[4]!];
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath: path.join(dir, "none.json") });
    expect(scan.run).toMatchObject({
      state: SubsystemRunState.RAN,
      message:
        "no updates; 0 tags checked; 1 tag could not be checked: registry.acme.test:5000/team/worker:2: " +
        "registry.acme.test:5000 requires credentials and the Docker config has none for it",
    });
    expect(acme.requests.map((r) => r.authorization)).toEqual([undefined]);
  });

  it("computes the digest from the manifest when the registry sends no Docker-Content-Digest", async () => {
    reset();
    ghcr.noDigestHeader = true;
    engine.images = [images[3]!];
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(scan.updates.map((u) => u.availableVersion)).toEqual([apiNew]);
    expect(ghcr.requests.filter((r) => r.url === "/v2/acme/api/manifests/latest").map((r) => r.method)).toEqual(["HEAD", "HEAD", "GET"]);
  });

  it("speaks the daemon's own API version when it no longer accepts 1.41", async () => {
    reset();
    engine.version = { ...VERSION_27, Version: "29.0.0", ApiVersion: "1.52", MinAPIVersion: "1.44" };
    engine.images = [images[1]!];
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(engine.requests.map((r) => r.url)).toEqual(["/version", "/v1.52/images/json", "/v1.52/containers/json?all=1"]);
  });

  it("fails when the Engine API itself fails", async () => {
    reset();
    engine.fail.set("/images/json", 500);
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(scan.run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "the Docker Engine API answered 500 to GET /images/json: Error response from daemon: layer does not exist",
    });
    expect(hub.requests).toEqual([]);
    engine.fail.clear();
    engine.fail.set("/containers/json", 500);
    const containersFail = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(containersFail.run.message).toBe("the Docker Engine API answered 500 to GET /containers/json: Error response from daemon: layer does not exist");
  });

  it("fails within its time when the Engine API does not answer", async () => {
    reset();
    engine.hang.add("/images/json");
    const started = Date.now();
    const scan = await scanDocker(opts({ timeoutMs: 700 }), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/^the Docker Engine API did not answer in time \(no answer within \d+ms\)$/);
  });

  it("keeps to its time when a registry does not answer, noting the tags left unchecked", async () => {
    reset();
    ghcr.hang.add("acme/api");
    const started = Date.now();
    const scan = await scanDocker(opts({ timeoutMs: 1500 }), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(Date.now() - started).toBeLessThan(4000);
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.updates.map((u) => u.name)).toEqual(["nginx:1.27", "registry.acme.test:5000/team/worker:2"]);
    expect(scan.run.message).toMatch(/1 tag could not be checked: ghcr\.io\/acme\/api:latest: ghcr\.io did not answer: no answer within \d+m?s/);
  });

  it("reports an unreachable registry per tag", async () => {
    reset();
    engine.images = [images[0]!, images[1]!];
    const scan = await scanDocker(opts(), { socketPath: engine.socketPath, registryUrl: () => "http://127.0.0.1:9", configPath });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.message).toBe("no updates; 0 tags checked; 2 tags could not be checked: nginx:1.27, redis:7.4: docker.io refused the connection");
  });

  it("stops when the agent stops it", async () => {
    reset();
    hub.delayMs = 2000;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const started = Date.now();
    const scan = await scanDocker(opts({ signal: controller.signal }), { socketPath: engine.socketPath, registryUrl, configPath });
    expect(Date.now() - started).toBeLessThan(1500);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "scan stopped" });
  });
});

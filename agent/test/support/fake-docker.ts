import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

// A fake Docker Engine API on a Unix socket and fake registries on 127.0.0.1, speaking the
// same HTTP the real ones do: /images/json, /images/{name}/json, /images/create (streamed JSON
// progress lines, errors as errorDetail), /images/{name}/tag; and a registry answering HEAD
// /v2/<path>/manifests/<tag> with Docker-Content-Digest behind Bearer-token or Basic auth.

export const digestOf = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

export interface FakeImage {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Size: number;
}

export interface FakeEngine {
  socketPath: string;
  images: FakeImage[];
  // What a pull of "repo:tag" (or "repo@digest") brings: the digest, or an error to stream.
  pulls: Map<string, { digest: string } | { error: string }>;
  requests: { method: string; url: string; headers: IncomingMessage["headers"] }[];
  failImagesList?: number;
  close(): Promise<void>;
}

export async function startFakeEngine(dir: string, images: FakeImage[]): Promise<FakeEngine> {
  const socketPath = path.join(dir, "docker.sock");
  const state: FakeEngine = {
    socketPath,
    images,
    pulls: new Map(),
    requests: [],
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
  };
  const find = (name: string) =>
    state.images.find((i) => i.RepoTags.includes(name) || i.RepoDigests.includes(name) || i.Id === name);
  const server: Server = createServer((req, res) => {
    state.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    const url = new URL(req.url ?? "/", "http://docker");
    const p = url.pathname.replace(/^\/v1\.\d+/, "");
    if (req.method === "GET" && p === "/images/json") {
      if (state.failImagesList) return json(res, state.failImagesList, { message: "Error response from daemon: layer does not exist" });
      return json(res, 200, state.images);
    }
    const inspect = /^\/images\/(.+)\/json$/.exec(p);
    if (req.method === "GET" && inspect) {
      const image = find(decodeURIComponent(inspect[1]!));
      return image ? json(res, 200, image) : json(res, 404, { message: `No such image: ${decodeURIComponent(inspect[1]!)}` });
    }
    if (req.method === "POST" && p === "/images/create") {
      const repo = url.searchParams.get("fromImage")!;
      const tag = url.searchParams.get("tag")!;
      const key = tag.startsWith("sha256:") ? `${repo}@${tag}` : `${repo}:${tag}`;
      const plan = state.pulls.get(key);
      res.writeHead(200, { "content-type": "application/json" });
      res.write(`{"status":"Pulling from ${repo}","id":"${tag}"}\n`);
      if (!plan || "error" in plan) {
        const message = plan && "error" in plan ? plan.error : `manifest for ${key} not found: manifest unknown`;
        res.end(`{"errorDetail":{"message":${JSON.stringify(message)}},"error":${JSON.stringify(message)}}\n`);
        return;
      }
      const tagged = tag.startsWith("sha256:") ? [] : [`${repo}:${tag}`];
      // Already here (same digest): the daemon keeps the image and says so.
      const existing = state.images.find((i) => i.RepoDigests.some((d) => d.endsWith(`@${plan.digest}`) && d.split("@")[0]!.endsWith(repo)));
      for (const image of state.images) image.RepoTags = image.RepoTags.filter((t) => !tagged.includes(t));
      if (existing) existing.RepoTags.push(...tagged);
      else state.images.push({ Id: digestOf(`image ${key} ${plan.digest}`), RepoTags: tagged, RepoDigests: [`${repo}@${plan.digest}`], Size: 1000 });
      const news = existing ? `Image is up to date for ${key}` : `Downloaded newer image for ${key}`;
      res.end(`{"status":"Digest: ${plan.digest}"}\n{"status":"Status: ${news}"}\n`);
      return;
    }
    const tagMatch = /^\/images\/(.+)\/tag$/.exec(p);
    if (req.method === "POST" && tagMatch) {
      const image = find(decodeURIComponent(tagMatch[1]!));
      if (!image) return json(res, 404, { message: "No such image" });
      const name = `${url.searchParams.get("repo")}:${url.searchParams.get("tag")}`;
      for (const other of state.images) other.RepoTags = other.RepoTags.filter((t) => t !== name);
      image.RepoTags.push(name);
      res.writeHead(201).end();
      return;
    }
    json(res, 404, { message: "page not found" });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return state;
}

export interface FakeRegistry {
  url: string;
  // "path:tag" → digest served for it.
  tags: Map<string, string>;
  requests: { method: string; url: string; authorization?: string | undefined }[];
  close(): Promise<void>;
}

// auth "bearer": 401 with a token challenge pointing at its own /token endpoint, which hands a
// token to anyone (or only to `credentials` when given). auth "basic": 401 Basic challenge.
export async function startFakeRegistry(opts: { auth: "bearer" | "basic" | "none"; credentials?: { username: string; password: string }; status?: number }): Promise<FakeRegistry> {
  const state: FakeRegistry = { url: "", tags: new Map(), requests: [], close: () => new Promise((r) => server.close(() => r())) };
  const expectedBasic = opts.credentials ? `Basic ${Buffer.from(`${opts.credentials.username}:${opts.credentials.password}`).toString("base64")}` : undefined;
  const server = createServer((req, res) => {
    state.requests.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization });
    const url = new URL(req.url ?? "/", state.url);
    if (url.pathname === "/token") {
      if (expectedBasic && req.headers.authorization !== expectedBasic) return res.writeHead(401).end('{"details":"incorrect username or password"}');
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `tok-${url.searchParams.get("scope")}` }));
      return;
    }
    const m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (!m) return res.writeHead(404).end();
    const authorised =
      opts.auth === "none" ||
      (opts.auth === "bearer" && req.headers.authorization === `Bearer tok-repository:${m[1]}:pull`) ||
      (opts.auth === "basic" && expectedBasic !== undefined && req.headers.authorization === expectedBasic);
    if (!authorised) {
      const challenge =
        opts.auth === "bearer"
          ? `Bearer realm="${state.url}/token",service="fake-registry",scope="repository:${m[1]}:pull"`
          : `Basic realm="fake-registry"`;
      res.writeHead(401, { "www-authenticate": challenge }).end();
      return;
    }
    if (opts.status) return res.writeHead(opts.status).end();
    const digest = state.tags.get(`${m[1]}:${decodeURIComponent(m[2]!)}`);
    if (!digest) return res.writeHead(404).end();
    res.writeHead(200, { "docker-content-digest": digest, "content-type": "application/vnd.oci.image.index.v1+json" }).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

import { readFile, stat } from "node:fs/promises";
import { request } from "node:http";
import { request as httpsRequest } from "node:https";
import os from "node:os";
import path from "node:path";

// The small part of the Docker Engine API and the registry HTTP API (v2, OCI distribution) the
// docker source needs, on node:http: no Docker CLI, no SDK.

export const DEFAULT_SOCKET = "/var/run/docker.sock";

export interface DockerDeps {
  // Engine API socket; default from DOCKER_HOST=unix://… or /var/run/docker.sock.
  socketPath?: string;
  // Base URL of a registry host ("registry-1.docker.io" → "https://registry-1.docker.io").
  // Tests point hosts at local plain-http fakes.
  registryUrl?: (host: string) => string;
  // Docker client config with registry credentials; default $DOCKER_CONFIG/config.json or
  // ~/.docker/config.json.
  configPath?: string;
}

export function socketPathFrom(env: NodeJS.ProcessEnv, deps: DockerDeps): { path?: string; error?: string } {
  if (deps.socketPath) return { path: deps.socketPath };
  const host = env.DOCKER_HOST;
  if (!host) return { path: DEFAULT_SOCKET };
  if (host.startsWith("unix://")) return { path: host.slice("unix://".length) };
  return { error: `DOCKER_HOST=${host} is not a unix socket; only the local Engine API socket is supported` };
}

export async function socketExists(socketPath: string): Promise<boolean> {
  try {
    return (await stat(socketPath)).isSocket();
  } catch {
    return false;
  }
}

export class EngineError extends Error {
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.name = "EngineError";
    this.status = status;
  }
}

export interface EngineResponse {
  status: number;
  body: string;
}

// One Engine API call; `onLine` receives each line of a streamed (JSON lines) response.
export function engine(
  socketPath: string,
  method: string,
  apiPath: string,
  opts: { signal?: AbortSignal | undefined; timeoutMs: number; headers?: Record<string, string>; onLine?: (line: string) => void },
): Promise<EngineResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method, path: apiPath, headers: { host: "docker", ...opts.headers }, signal: opts.signal, timeout: opts.timeoutMs },
      (res) => {
        let body = "";
        let partial = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (!opts.onLine) {
            if (body.length < 16 * 1024 * 1024) body += chunk;
            return;
          }
          partial += chunk;
          let nl: number;
          while ((nl = partial.indexOf("\n")) >= 0) {
            const line = partial.slice(0, nl).trim();
            partial = partial.slice(nl + 1);
            if (line) opts.onLine(line);
          }
        });
        res.on("end", () => {
          if (opts.onLine && partial.trim()) opts.onLine(partial.trim());
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`the Docker Engine API did not answer within ${Math.round(opts.timeoutMs / 1000)}s`)));
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EACCES") reject(new Error(`permission denied on ${socketPath}; run the agent as root or in the docker group`));
      else if (err.code === "ECONNREFUSED" || err.code === "ENOENT") reject(new Error(`the Docker daemon is not running (${socketPath}: ${err.code})`));
      else reject(err);
    });
    req.end();
  });
}

export async function engineJson<T>(socketPath: string, apiPath: string, opts: { signal?: AbortSignal | undefined; timeoutMs: number }): Promise<T> {
  const res = await engine(socketPath, "GET", apiPath, opts);
  if (res.status !== 200) throw new EngineError(`GET ${apiPath.split("?")[0]} answered ${res.status}: ${engineMessage(res.body)}`, res.status);
  try {
    return JSON.parse(res.body) as T;
  } catch {
    throw new EngineError(`GET ${apiPath.split("?")[0]} answered something that is not JSON`, res.status);
  }
}

export function engineMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") return parsed.message.slice(0, 300);
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 300);
}

export interface EngineImage {
  Id: string;
  RepoTags: string[] | null;
  RepoDigests: string[] | null;
  Size?: number;
}

// A reference as Docker normalises it: "nginx:1.25" → docker.io, "library/nginx", "1.25".
export interface ImageRef {
  // As written locally, "nginx:1.25" or "ghcr.io/org/app:latest".
  local: string;
  // The repository as written locally, without the tag: "nginx", "ghcr.io/org/app".
  repository: string;
  registry: string;
  path: string;
  tag: string;
}

export function parseImageRef(text: string): ImageRef | undefined {
  if (text.includes("@")) return undefined;
  const slash = text.indexOf("/");
  const first = slash >= 0 ? text.slice(0, slash) : "";
  const hasRegistry = slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost");
  const rest = hasRegistry ? text.slice(slash + 1) : text;
  const colon = rest.lastIndexOf(":");
  const repoPath = colon >= 0 ? rest.slice(0, colon) : rest;
  const tag = colon >= 0 ? rest.slice(colon + 1) : "latest";
  if (!/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(repoPath) || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag)) return undefined;
  const registry = hasRegistry ? first : "docker.io";
  const normalisedPath = registry === "docker.io" && !repoPath.includes("/") ? `library/${repoPath}` : repoPath;
  const repository = hasRegistry ? `${first}/${repoPath}` : repoPath;
  return { local: `${repository}:${tag}`, repository, registry, path: normalisedPath, tag };
}

// The digest a RepoDigests entry records for this repository ("nginx@sha256:…").
export function localDigest(image: Pick<EngineImage, "RepoDigests">, repository: string): string | undefined {
  for (const entry of image.RepoDigests ?? []) {
    const at = entry.lastIndexOf("@");
    if (at > 0 && sameRepository(entry.slice(0, at), repository)) return entry.slice(at + 1);
  }
  return undefined;
}

const sameRepository = (a: string, b: string) => normaliseRepository(a) === normaliseRepository(b);
const normaliseRepository = (repo: string) => {
  const ref = parseImageRef(`${repo}:x`);
  return ref ? `${ref.registry}/${ref.path}` : repo;
};

export interface Credentials {
  username: string;
  password: string;
}

// "auths" of the Docker client config, by registry host; Docker Hub is stored under its
// legacy index URL. Credential helpers (credsStore, credHelpers) are not run.
export async function loadCredentials(env: NodeJS.ProcessEnv, deps: DockerDeps): Promise<{ byHost: Map<string, Credentials>; helper: boolean }> {
  const file = deps.configPath ?? path.join(env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), ".docker"), "config.json");
  const byHost = new Map<string, Credentials>();
  let raw: { auths?: Record<string, { auth?: string; username?: string; password?: string }>; credsStore?: string; credHelpers?: object };
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch {
    return { byHost, helper: false };
  }
  for (const [key, entry] of Object.entries(raw.auths ?? {})) {
    let username = entry.username;
    let password = entry.password;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) [username, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
    }
    if (!username || password === undefined) continue;
    const host = key.replace(/^https?:\/\//, "").replace(/\/.*$/, "");
    byHost.set(host === "index.docker.io" ? "docker.io" : host, { username, password });
  }
  return { byHost, helper: Boolean(raw.credsStore || (raw.credHelpers && Object.keys(raw.credHelpers).length)) };
}

const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
].join(", ");

export const registryHost = (registry: string) => (registry === "docker.io" ? "registry-1.docker.io" : registry);

export class RegistryError extends Error {
  readonly status: number;
  constructor(message: string, status = 0) {
    super(message);
    this.name = "RegistryError";
    this.status = status;
  }
}

interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function httpCall(url: string, method: string, headers: Record<string, string>, signal: AbortSignal | undefined, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith("https:") ? httpsRequest : request;
    const req = send(url, { method, headers, signal, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        if (body.length < 1024 * 1024) body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)}s`)));
    req.on("error", reject);
    req.end();
  });
}

// `Bearer realm="…",service="…",scope="…"` → its parameters.
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const m of header.slice(space + 1).matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  return { scheme, params };
}

// The registry's current manifest digest for a tag, answering its auth challenge once
// (anonymous token, or with the credentials from the Docker config).
export async function remoteDigest(
  ref: ImageRef,
  opts: { credentials: Map<string, Credentials>; registryUrl: (host: string) => string; signal?: AbortSignal | undefined; timeoutMs: number },
): Promise<string> {
  const url = `${opts.registryUrl(registryHost(ref.registry))}/v2/${ref.path}/manifests/${encodeURIComponent(ref.tag)}`;
  const creds = opts.credentials.get(ref.registry);
  const call = (auth?: string) =>
    httpCall(url, "HEAD", { accept: MANIFEST_ACCEPT, ...(auth ? { authorization: auth } : {}) }, opts.signal, opts.timeoutMs).catch((err: Error) => {
      throw new RegistryError(`${ref.registry}: ${err.message}`);
    });
  let res = await call();
  if (res.status === 401) {
    const challenge = parseChallenge(String(res.headers["www-authenticate"] ?? ""));
    let auth: string | undefined;
    if (challenge.scheme === "bearer" && challenge.params.realm) {
      auth = `Bearer ${await bearerToken(challenge.params, ref, creds, opts)}`;
    } else if (challenge.scheme === "basic" && creds) {
      auth = basic(creds);
    }
    if (!auth) throw new RegistryError(`${ref.registry} needs credentials for ${ref.path} (none in the Docker config)`, 401);
    res = await call(auth);
  }
  if (res.status === 401 || res.status === 403) throw new RegistryError(`${ref.registry} refused access to ${ref.path} (HTTP ${res.status})`, res.status);
  if (res.status === 404) throw new RegistryError(`${ref.local} no longer exists on ${ref.registry}`, 404);
  if (res.status === 429) throw new RegistryError(`${ref.registry} rate-limited the check (HTTP 429)`, 429);
  if (res.status !== 200) throw new RegistryError(`${ref.registry} answered HTTP ${res.status} for ${ref.local}`, res.status);
  const digest = res.headers["docker-content-digest"];
  if (typeof digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new RegistryError(`${ref.registry} sent no content digest for ${ref.local}`);
  return digest;
}

const basic = (c: Credentials) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;

async function bearerToken(
  params: Record<string, string>,
  ref: ImageRef,
  creds: Credentials | undefined,
  opts: { signal?: AbortSignal | undefined; timeoutMs: number },
): Promise<string> {
  const url = new URL(params.realm!);
  if (params.service) url.searchParams.set("service", params.service);
  url.searchParams.set("scope", params.scope ?? `repository:${ref.path}:pull`);
  const res = await httpCall(url.toString(), "GET", creds ? { authorization: basic(creds) } : {}, opts.signal, opts.timeoutMs).catch((err: Error) => {
    throw new RegistryError(`${ref.registry} token service: ${err.message}`);
  });
  if (res.status !== 200) throw new RegistryError(`${ref.registry} token service refused (HTTP ${res.status})`, res.status);
  try {
    const body = JSON.parse(res.body) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (token) return token;
  } catch {
    // fall through
  }
  throw new RegistryError(`${ref.registry} token service sent no token`);
}

// The X-Registry-Auth header a pull needs for a private registry.
export function registryAuthHeader(registry: string, creds: Credentials | undefined): Record<string, string> {
  if (!creds) return {};
  const json = JSON.stringify({ username: creds.username, password: creds.password, serveraddress: registry });
  return { "x-registry-auth": Buffer.from(json).toString("base64url") };
}

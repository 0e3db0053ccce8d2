import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import os from "node:os";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";

// The parts of HTTP, image references, the Docker client config and the registry API (OCI
// distribution v2) that the docker source needs, on node:http alone: no Docker CLI, no SDK.

// ---------------------------------------------------------------------------------------------
// HTTP with a hard deadline per request (node's own `timeout` is an idle timer, not a deadline)

export class HttpFailure extends Error {
  // "TIMEOUT", "ABORTED", "INCOMPLETE" or node's errno code ("ECONNREFUSED", "EACCES" …).
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "HttpFailure";
    this.code = code;
  }
}

export interface HttpRequest {
  // http(s)://host/path; with `socketPath` the host part is ignored.
  url: string;
  socketPath?: string | undefined;
  method: string;
  headers?: Record<string, string> | undefined;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  // Body bytes kept; the rest is read and dropped.
  maxBodyBytes?: number | undefined;
  // For streamed JSON-lines answers (a pull's progress): each line of a 2xx body goes here
  // instead of into `body`.
  onLine?: ((line: string) => void) | undefined;
  // Request body (sent as JSON by the Engine API callers).
  body?: string | undefined;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export const formatMs = (ms: number) => (ms < 1000 ? `${Math.max(0, Math.round(ms))}ms` : `${Math.round(ms / 1000)}s`);

export function httpCall(req: HttpRequest): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) {
      reject(new HttpFailure("ABORTED", "stopped"));
      return;
    }
    const url = new URL(req.url);
    const send = url.protocol === "https:" && !req.socketPath ? httpsRequest : httpRequest;
    const maxBody = req.maxBodyBytes ?? 1024 * 1024;
    let settled = false;
    const finish = (err: HttpFailure | undefined, answer?: HttpAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      if (err) {
        outgoing.destroy();
        reject(err);
      } else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new HttpFailure("TIMEOUT", `no answer within ${formatMs(req.timeoutMs)}`)), Math.max(1, req.timeoutMs));
    const onAbort = () => finish(new HttpFailure("ABORTED", "stopped"));
    req.signal?.addEventListener("abort", onAbort, { once: true });

    const outgoing = send(
      url,
      { method: req.method, headers: req.headers ?? {}, ...(req.socketPath ? { socketPath: req.socketPath } : {}) },
      (res) => {
        const status = res.statusCode ?? 0;
        const streaming = req.onLine !== undefined && status >= 200 && status < 300;
        const chunks: Buffer[] = [];
        let size = 0;
        const decoder = new StringDecoder("utf8");
        let partial = "";
        const emit = (text: string, last: boolean) => {
          partial += text;
          let nl: number;
          while ((nl = partial.indexOf("\n")) >= 0) {
            const line = partial.slice(0, nl).trim();
            partial = partial.slice(nl + 1);
            if (line) req.onLine!(line);
          }
          if (last && partial.trim()) req.onLine!(partial.trim());
        };
        res.on("data", (chunk: Buffer) => {
          if (settled) return;
          if (streaming) return emit(decoder.write(chunk), false);
          if (size >= maxBody) return;
          chunks.push(chunk.subarray(0, maxBody - size));
          size += Math.min(chunk.length, maxBody - size);
        });
        res.on("end", () => {
          if (settled) return;
          if (streaming) emit(decoder.end(), true);
          finish(undefined, { status, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on("close", () => {
          if (!res.complete) finish(new HttpFailure("INCOMPLETE", "the connection closed before the answer was complete"));
        });
        res.on("error", (err: NodeJS.ErrnoException) => finish(new HttpFailure(err.code ?? "ERROR", err.message)));
      },
    );
    outgoing.on("error", (err: NodeJS.ErrnoException) => finish(new HttpFailure(err.code ?? "ERROR", err.message)));
    outgoing.end(req.body);
  });
}

const TLS_CODES = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT|HOSTNAME_MISMATCH|ERR_SSL)/;

// A network failure in words; `what` names the other side ("ghcr.io").
export function describeNetworkFailure(what: string, err: unknown): string {
  const failure = err instanceof HttpFailure ? err : new HttpFailure("ERROR", String((err as Error)?.message ?? err));
  switch (failure.code) {
    case "TIMEOUT":
      return `${what} did not answer: ${failure.message}`;
    case "ABORTED":
      return `${what}: stopped`;
    case "ECONNREFUSED":
      return `${what} refused the connection`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `${what} could not be resolved (DNS)`;
    case "ECONNRESET":
    case "INCOMPLETE":
    case "EPIPE":
      return `${what} dropped the connection`;
    case "ENETUNREACH":
    case "EHOSTUNREACH":
      return `${what} is unreachable (${failure.code})`;
    default:
      if (TLS_CODES.test(failure.code)) return `${what}: TLS certificate not trusted (${failure.code})`;
      return `${what}: ${failure.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Image references, normalised the way Docker does ("nginx:1.25" → docker.io/library/nginx)

export interface Repository {
  // As written locally: "nginx", "grafana/grafana", "ghcr.io/org/app", "localhost:5000/app".
  repository: string;
  // "docker.io", "ghcr.io", "localhost:5000".
  registry: string;
  // Path on the registry: "library/nginx", "org/app".
  path: string;
}

export interface ImageRef extends Repository {
  // "repo:tag" as written locally ("nginx:1.25", "ghcr.io/org/app:latest").
  local: string;
  tag: string;
}

const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const PATH = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*(?::[0-9]{1,5})?$`);
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
export const DIGEST = /^sha256:[0-9a-f]{64}$/;
const ANY_DIGEST = /^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$/;

const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]);

// A repository without tag or digest; undefined when it is not one.
export function parseRepository(text: string): Repository | undefined {
  const slash = text.indexOf("/");
  const first = slash > 0 ? text.slice(0, slash) : "";
  // Docker's rule: the first component is a registry when it has a dot, a port or upper case,
  // or is "localhost"; otherwise the name is on Docker Hub.
  const hasDomain = slash > 0 && (/[.:]/.test(first) || first === "localhost" || first !== first.toLowerCase());
  const domain = hasDomain ? first : "docker.io";
  const rest = hasDomain ? text.slice(slash + 1) : text;
  if (!DOMAIN.test(domain) || !PATH.test(rest) || text.length > 255) return undefined;
  const registry = DOCKER_HUB_ALIASES.has(domain.toLowerCase()) ? "docker.io" : domain.toLowerCase();
  return { repository: text, registry, path: registry === "docker.io" && !rest.includes("/") ? `library/${rest}` : rest };
}

// "repo[:tag]" (tag "latest" when absent); digest references ("repo@sha256:…") are not tags
// and give undefined.
export function parseImageRef(text: string): ImageRef | undefined {
  if (text.includes("@")) return undefined;
  const colon = text.lastIndexOf(":");
  const hasTag = colon > text.lastIndexOf("/");
  const tag = hasTag ? text.slice(colon + 1) : "latest";
  if (!TAG.test(tag)) return undefined;
  const repo = parseRepository(hasTag ? text.slice(0, colon) : text);
  return repo && { ...repo, local: hasTag ? text : `${text}:latest`, tag };
}

export const canonicalName = (r: Pick<Repository, "registry" | "path">) => `${r.registry}/${r.path}`;

// The host that serves a registry's API: Docker Hub's is registry-1.docker.io.
export const registryHost = (registry: string) => (registry === "docker.io" ? "registry-1.docker.io" : registry);

// The digests a RepoDigests list ("nginx@sha256:…", "docker.io/library/nginx@sha256:…")
// records for this repository, whatever spelling of the name it uses.
export function digestsFor(repoDigests: readonly string[] | null | undefined, repo: Pick<Repository, "registry" | "path">): string[] {
  const want = canonicalName(repo);
  const found: string[] = [];
  for (const entry of repoDigests ?? []) {
    const at = entry.lastIndexOf("@");
    if (at <= 0) continue;
    const other = parseRepository(entry.slice(0, at));
    const digest = entry.slice(at + 1);
    if (other && canonicalName(other) === want && ANY_DIGEST.test(digest) && !found.includes(digest)) found.push(digest);
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Credentials from the Docker client config

export interface Credentials {
  username: string;
  password: string;
  // The "auths" key they were stored under ("https://index.docker.io/v1/", "ghcr.io").
  serverAddress: string;
}

export interface DockerConfig {
  file: string;
  // By registry ("docker.io", "ghcr.io", "registry.example.com:5000").
  auths: Map<string, Credentials>;
  // Credential helpers the config names (credsStore, credHelpers): never run by the agent.
  helpers: string[];
  // Set when the file exists but cannot be used.
  problem?: string | undefined;
}

export function dockerConfigPath(env: NodeJS.ProcessEnv): string {
  const dir = env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), ".docker");
  return path.join(dir, "config.json");
}

// "https://index.docker.io/v1/" → "docker.io"; "https://registry.example.com/v2/" →
// "registry.example.com".
export function registryOfAuthKey(key: string): string {
  const host = key.trim().replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "").toLowerCase();
  return DOCKER_HUB_ALIASES.has(host) ? "docker.io" : host;
}

export async function loadDockerConfig(file: string): Promise<DockerConfig> {
  const config: DockerConfig = { file, auths: new Map(), helpers: [] };
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") config.problem = `${file} could not be read (${(err as NodeJS.ErrnoException).code})`;
    return config;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    config.problem = `${file} is not valid JSON`;
    return config;
  }
  if (!raw || typeof raw !== "object") return config;
  const { auths, credsStore, credHelpers } = raw as { auths?: unknown; credsStore?: unknown; credHelpers?: unknown };
  if (typeof credsStore === "string" && credsStore) config.helpers.push(`credsStore "${credsStore}"`);
  if (credHelpers && typeof credHelpers === "object") {
    for (const [host, helper] of Object.entries(credHelpers)) config.helpers.push(`credHelpers "${host}": "${String(helper)}"`);
  }
  if (!auths || typeof auths !== "object") return config;
  for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
    if (!entry || typeof entry !== "object") continue;
    const e = entry as { auth?: unknown; username?: unknown; password?: unknown };
    let username = typeof e.username === "string" ? e.username : undefined;
    let password = typeof e.password === "string" ? e.password : undefined;
    if (typeof e.auth === "string" && e.auth) {
      const decoded = Buffer.from(e.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) [username, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
    }
    // Entries with only an "identitytoken" (OAuth refresh tokens) are not used.
    if (!username || !password) continue;
    const registry = registryOfAuthKey(key);
    if (!config.auths.has(registry)) config.auths.set(registry, { username, password, serverAddress: key });
  }
  return config;
}

// The X-Registry-Auth header of an Engine API pull: base64url of the auth JSON. Docker decodes
// it with Go's padded URL alphabet, so the "=" padding stays.
export function registryAuthHeader(creds: Credentials | undefined): Record<string, string> {
  if (!creds) return {};
  const json = JSON.stringify({ username: creds.username, password: creds.password, serveraddress: creds.serverAddress });
  return { "x-registry-auth": Buffer.from(json, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_") };
}

// ---------------------------------------------------------------------------------------------
// Registry API: the digest a tag names now

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
export function parseChallenge(header: string | undefined): Challenge | undefined {
  const match = /^\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+(.*))?$/s.exec(header ?? "");
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const m of (match[2] ?? "").matchAll(/([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))/g)) {
    params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!;
  }
  return { scheme: match[1]!.toLowerCase(), params };
}

// Accepted manifest kinds, multi-platform first: a multi-platform tag's RepoDigest is the
// digest of its index (or Docker manifest list), and only these Accept values make the registry
// answer with that one instead of converting.
export const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
].join(", ");

export type RegistryErrorKind = "auth" | "not-found" | "rate-limit" | "timeout" | "network" | "http" | "protocol" | "aborted";

export class RegistryError extends Error {
  kind: RegistryErrorKind;
  status: number;
  constructor(kind: RegistryErrorKind, message: string, status = 0) {
    super(message);
    this.name = "RegistryError";
    this.kind = kind;
    this.status = status;
  }
}

export interface RegistryClientOptions {
  credentials: (registry: string) => Credentials | undefined;
  // Base URL of a registry API host; production: https://host. Tests map hosts to local fakes.
  registryUrl?: ((host: string) => string) | undefined;
  signal?: AbortSignal | undefined;
  // Time allowed for the next request (each request of a check gets what is left).
  timeoutMs: () => number;
}

export interface RegistryClient {
  // The digest `ref`'s tag names on its registry now.
  manifestDigest(ref: ImageRef): Promise<string>;
}

export const httpsUrl = (host: string) => `https://${host}`;

export function createRegistryClient(opts: RegistryClientOptions): RegistryClient {
  const baseOf = (registry: string) => (opts.registryUrl ?? httpsUrl)(registryHost(registry)).replace(/\/+$/, "");
  // Authorization that worked, by repository: other tags of it skip the 401 round trip.
  const known = new Map<string, string>();
  // Tokens being fetched, shared by concurrent checks of the same repository.
  const tokens = new Map<string, Promise<string>>();

  const call = async (registry: string, url: string, method: string, headers: Record<string, string>, maxBodyBytes?: number) => {
    const timeoutMs = opts.timeoutMs();
    if (timeoutMs <= 0) throw new RegistryError("timeout", `not checked: no time left for ${registry}`);
    try {
      return await httpCall({ url, method, headers, timeoutMs, signal: opts.signal, maxBodyBytes });
    } catch (err) {
      const code = (err as HttpFailure).code;
      const kind = code === "TIMEOUT" ? "timeout" : code === "ABORTED" ? "aborted" : "network";
      throw new RegistryError(kind, describeNetworkFailure(registry, err));
    }
  };

  const noCredentials = (registry: string) => `${registry} requires credentials and the Docker config has none for it`;
  const refused = (registry: string) => `${registry} refused the credentials from the Docker config`;
  const anonymousDenied = (registry: string) =>
    `${registry} denied anonymous access (private or missing repository) and the Docker config has no credentials for it`;

  const bearerToken = async (ref: ImageRef, params: Record<string, string>, creds: Credentials | undefined, base: string): Promise<string> => {
    let realm: URL;
    try {
      realm = new URL(params.realm ?? "");
    } catch {
      throw new RegistryError("auth", `${ref.registry} sent a token challenge without a usable realm`);
    }
    if (realm.protocol !== "https:" && realm.protocol !== "http:") throw new RegistryError("auth", `${ref.registry} sent a token realm that is not http(s)`);
    if (params.service) realm.searchParams.set("service", params.service);
    realm.searchParams.set("scope", params.scope || `repository:${ref.path}:pull`);
    // Credentials never go to a plain-http realm of an https registry.
    const sendCreds = creds !== undefined && (realm.protocol === "https:" || base.startsWith("http:"));
    const key = `${realm} ${sendCreds ? creds!.username : ""}`;
    let pending = tokens.get(key);
    if (!pending) {
      pending = (async () => {
        const res = await call(ref.registry, realm.toString(), "GET", { accept: "application/json", ...(sendCreds ? { authorization: basic(creds!) } : {}) });
        if (res.status === 401 || res.status === 403) throw new RegistryError("auth", sendCreds ? refused(ref.registry) : noCredentials(ref.registry), res.status);
        if (res.status === 429) throw new RegistryError("rate-limit", `${ref.registry} rate limit reached (HTTP 429)`, 429);
        if (res.status !== 200) throw new RegistryError("http", `${ref.registry} token service answered HTTP ${res.status}`, res.status);
        let body: { token?: unknown; access_token?: unknown };
        try {
          body = JSON.parse(res.body.toString("utf8"));
        } catch {
          throw new RegistryError("protocol", `${ref.registry} token service answered something that is not JSON`);
        }
        const token = typeof body.token === "string" && body.token ? body.token : body.access_token;
        if (typeof token !== "string" || !token) throw new RegistryError("protocol", `${ref.registry} token service sent no token`);
        return token;
      })();
      tokens.set(key, pending);
      pending.catch(() => tokens.delete(key));
    }
    return pending;
  };

  const authorize = async (ref: ImageRef, challengeHeader: string | undefined, creds: Credentials | undefined, base: string): Promise<string> => {
    const challenge = parseChallenge(challengeHeader);
    if (challenge?.scheme === "bearer") return `Bearer ${await bearerToken(ref, challenge.params, creds, base)}`;
    if (challenge?.scheme === "basic") {
      if (!creds) throw new RegistryError("auth", noCredentials(ref.registry), 401);
      return basic(creds);
    }
    throw new RegistryError("auth", `${ref.registry} asked for authentication without a usable challenge`, 401);
  };

  return {
    async manifestDigest(ref) {
      const base = baseOf(ref.registry);
      const url = `${base}/v2/${ref.path}/manifests/${encodeURIComponent(ref.tag)}`;
      const creds = opts.credentials(ref.registry);
      const repoKey = canonicalName(ref);
      const headers = (authorization: string | undefined): Record<string, string> => ({
        accept: MANIFEST_ACCEPT,
        ...(authorization ? { authorization } : {}),
      });
      let authorization = known.get(repoKey);
      let res = await call(ref.registry, url, "HEAD", headers(authorization));
      if (res.status === 401) {
        authorization = await authorize(ref, header(res.headers, "www-authenticate"), creds, base);
        res = await call(ref.registry, url, "HEAD", headers(authorization));
        // After an anonymous token, a 401 means a private repository or one that does not exist
        // (registries answer both alike).
        if (res.status === 401) throw new RegistryError("auth", creds ? refused(ref.registry) : anonymousDenied(ref.registry), 401);
      }
      if (res.status === 200 && authorization) known.set(repoKey, authorization);
      if (res.status === 403) throw new RegistryError("auth", `${ref.registry} denied access (HTTP 403)`, 403);
      if (res.status === 404) throw new RegistryError("not-found", `tag not found on ${ref.registry} (HTTP 404)`, 404);
      if (res.status === 429) throw new RegistryError("rate-limit", `${ref.registry} rate limit reached (HTTP 429)`, 429);
      if (res.status !== 200) throw new RegistryError("http", `${ref.registry} answered HTTP ${res.status}`, res.status);
      const digest = header(res.headers, "docker-content-digest")?.trim();
      if (digest && ANY_DIGEST.test(digest)) return digest;
      // Registries need not send the header: the digest is then the hash of the manifest bytes.
      const full = await call(ref.registry, url, "GET", headers(authorization), 4 * 1024 * 1024);
      if (full.status !== 200 || full.body.length === 0) throw new RegistryError("protocol", `${ref.registry} sent no content digest`);
      return `sha256:${createHash("sha256").update(full.body).digest("hex")}`;
    },
  };
}

const basic = (c: Credentials) => `Basic ${Buffer.from(`${c.username}:${c.password}`, "utf8").toString("base64")}`;

const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
};

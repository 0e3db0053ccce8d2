import net from "node:net";
import path from "node:path";
import { envValues } from "@redflag/common/config-values";
import { isRoleName, type RoleName } from "@redflag/common/roles";

// How V8 runs the embedded database's WebAssembly (REDFLAG_EMBEDDED_COMPILER; store/embedded.ts
// says why): "baseline" keeps its memory bounded, "optimizing" makes its work faster.
const EMBEDDED_COMPILERS = ["baseline", "optimizing"] as const;
export type EmbeddedCompiler = (typeof EMBEDDED_COMPILERS)[number];
const isEmbeddedCompiler = (text: string): text is EmbeddedCompiler => (EMBEDDED_COMPILERS as readonly string[]).includes(text);

// Calls allowed per key (an IP address, a registration token, an agent): a token bucket that
// refills `perMinute` a minute up to `burst`. In memory, per replica: with N replicas behind a
// load balancer a key gets up to N times the limit, so set limit/replicas if that matters.
export interface RateLimit {
  readonly perMinute: number;
  readonly burst: number;
}

// Which value of a single sign-on claim grants which role
// ("admin=redflag-admins,operator=redflag-ops,viewer=*"): parsed once from the environment here,
// applied at every sign-in by http/oidc.ts (auth/role-map.ts, roleFor).
export type RoleMap = { role: RoleName; value: string }[];

export function parseRoleMap(text: string): RoleMap | string {
  const out: RoleMap = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [role, value] = part.split("=").map((s) => s?.trim());
    if (!role || !value || !isRoleName(role)) return `"${part}" must be role=value with role viewer, operator or admin`;
    out.push({ role, value });
  }
  return out.length > 0 ? out : "the role map is empty";
}

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  // Unset: the embedded PGlite database inside dataDir.
  readonly databaseUrl: string | undefined;
  // How V8 runs the embedded database's WebAssembly (embedded.ts, EmbeddedCompiler).
  readonly embeddedCompiler: EmbeddedCompiler;
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined;
  // Base64 of 32 bytes; unset: <dataDir>/master.key, created on first start.
  readonly masterKey: Buffer | undefined;
  readonly logLevel: string;
  readonly accessTokenTtlSeconds: number;
  readonly refreshTokenSlidingSeconds: number;
  readonly refreshTokenAbsoluteSeconds: number;
  // The URL agents reach this server at, for install commands; unset: what each caller used.
  readonly publicUrl: string | undefined;
  // The built console served at /.
  readonly consoleDir: string;
  // Agent builds here (redflag-agent-<version>-<platform>.tgz) are published to the release
  // registry at start-up; unset: none (npm start and the Docker image set it).
  readonly agentReleasesDir: string | undefined;
  // Single sign-on through OpenID Connect; unset: passwords only.
  readonly oidc: OidcConfig | undefined;
  // How long a CreateCommand idempotency key is remembered.
  readonly idempotencyKeyTtlSeconds: number;
  // The environment's defaults of runtime settings an admin can change (settings.ts). Read the
  // effective values from Settings, never these.
  readonly settingDefaults: SettingDefaults;
  // Renew payloads signed further than this from the server clock are refused.
  readonly renewMaxSkewSeconds: number;
  // The identical signed Renew sent again within this (its answer was lost) gets the same answer;
  // 0: any second use of a refresh token revokes its family.
  readonly renewRetryWindowSeconds: number;
  readonly lastSeenFlushMs: number;
  readonly sweepIntervalMs: number;
  readonly maxRequestBytes: number;
  // Timeouts and caps of the listener (server.ts).
  readonly listener: ListenerLimits;
  // Reverse proxies whose X-Forwarded-For is believed (client-address.ts); empty: none.
  readonly trustedProxies: readonly Cidr[];
  // Browser apps on these origins may call the RPCs (REDFLAG_CORS_ORIGINS); empty: none.
  readonly corsOrigins: readonly string[];
  // Updates (and install package results) one ReportResults call may carry, and updates one scan
  // may hold across its parts. Agents never send more than 1,000 per call, the lowest allowed.
  readonly maxReportUpdates: number;
  readonly maxScanUpdates: number;
  // Bearer token for /metrics; unset: /metrics answers loopback callers only.
  readonly metricsToken: string | undefined;
  // Register and Renew calls per minute and burst, per replica (see auth/rate-limit.ts).
  readonly rateLimits: {
    readonly registerPerAddress: RateLimit;
    readonly registerPerToken: RateLimit;
    readonly renewPerAddress: RateLimit;
    readonly renewPerAgent: RateLimit;
  };
}

// Single sign-on through OpenID Connect (http/oidc.ts).
export interface OidcConfig {
  issuer: string;
  clientId: string;
  clientSecret: string;
  // Where the provider sends the browser back: <public URL>/auth/oidc/callback.
  redirectUrl: string | undefined;
  // The claim holding group or role names, and which value grants which role
  // ("admin=redflag-admins,operator=redflag-ops,viewer=*"); the highest match wins.
  roleClaim: string;
  roleMap: RoleMap;
  // Allow an http:// issuer (a provider on this machine, for development and tests).
  allowHttp: boolean;
}

export interface SettingDefaults {
  readonly pollIntervalSeconds: number;
  readonly pollJitterPercent: number;
  readonly commandTimeoutSeconds: number;
  readonly commandExpirySeconds: number;
  // Sent commands with no result after this become timed_out.
  readonly resultTimeoutSeconds: number;
  // A delivered command with no result after this may be delivered again (at least once).
  readonly deliveryLeaseSeconds: number;
  // Deliveries of one command at most.
  readonly maxDeliveries: number;
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid environment:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

// Reads every REDFLAG_* setting once, reports all problems together, and returns a frozen object.
export function loadConfig(env: NodeJS.ProcessEnv, cwd = process.cwd()): Config {
  const problems: string[] = [];
  const oidcConfig = (): OidcConfig | undefined => {
    const issuer = env.REDFLAG_OIDC_ISSUER;
    if (!issuer) return undefined;
    const clientId = env.REDFLAG_OIDC_CLIENT_ID ?? "";
    const clientSecret = env.REDFLAG_OIDC_CLIENT_SECRET ?? "";
    if (!clientId || !clientSecret) problems.push("REDFLAG_OIDC_ISSUER needs REDFLAG_OIDC_CLIENT_ID and REDFLAG_OIDC_CLIENT_SECRET");
    const roleMap = parseRoleMap(env.REDFLAG_OIDC_ROLE_MAP ?? "admin=redflag-admins,operator=redflag-operators,viewer=redflag-viewers");
    if (typeof roleMap === "string") problems.push(`REDFLAG_OIDC_ROLE_MAP: ${roleMap}`);
    let url: URL | undefined;
    try {
      url = new URL(issuer);
    } catch {
      problems.push(`REDFLAG_OIDC_ISSUER=${issuer} is not a URL`);
    }
    const allowHttp = env.REDFLAG_OIDC_ALLOW_HTTP === "1";
    if (url && url.protocol !== "https:" && !allowHttp) problems.push("REDFLAG_OIDC_ISSUER must be https:// (set REDFLAG_OIDC_ALLOW_HTTP=1 for a provider on this machine)");
    return {
      issuer,
      clientId,
      clientSecret,
      redirectUrl: env.REDFLAG_OIDC_REDIRECT_URL || undefined,
      roleClaim: env.REDFLAG_OIDC_ROLE_CLAIM || "groups",
      roleMap: typeof roleMap === "string" ? [] : roleMap,
      allowHttp,
    };
  };
  const publicUrl = (text: string | undefined) => {
    if (!text) return undefined;
    try {
      const url = new URL(text);
      if (url.protocol === "http:" || url.protocol === "https:") return url.toString().replace(/\/+$/, "");
    } catch {
      // not a URL
    }
    problems.push(`REDFLAG_PUBLIC_URL=${text} must be an http(s) URL such as https://redflag.example.com`);
    return undefined;
  };
  const { duration, integer } = envValues(env, problems);

  // "PER_MINUTE:BURST" (burst defaults to twice the rate); 0 turns the limit off.
  const rate = (name: string, fallback: string): RateLimit => {
    const text = env[name] || fallback;
    const match = /^(\d{1,7})(?::(\d{1,7}))?$/.exec(text.trim());
    const perMinute = Number(match?.[1]);
    const burst = match?.[2] === undefined ? perMinute * 2 : Number(match[2]);
    if (!match || (perMinute > 0 && burst < 1)) {
      problems.push(`${name}=${text} must be CALLS_PER_MINUTE or CALLS_PER_MINUTE:BURST (for example 60:120; 0 turns it off)`);
      return rate("", fallback);
    }
    return Object.freeze({ perMinute, burst });
  };

  const [host, port] = parseAddr(env.REDFLAG_ADDR ?? "0.0.0.0:8080", problems);

  const certFile = env.REDFLAG_TLS_CERT || undefined;
  const keyFile = env.REDFLAG_TLS_KEY || undefined;
  if (Boolean(certFile) !== Boolean(keyFile)) {
    problems.push("REDFLAG_TLS_CERT and REDFLAG_TLS_KEY must be set together");
  }

  let masterKey: Buffer | undefined;
  if (env.REDFLAG_MASTER_KEY) {
    masterKey = Buffer.from(env.REDFLAG_MASTER_KEY, "base64");
    if (masterKey.length !== 32) problems.push("REDFLAG_MASTER_KEY must be 32 bytes in base64 (openssl rand -base64 32)");
  }

  const metricsToken = env.REDFLAG_METRICS_TOKEN || undefined;
  if (metricsToken !== undefined && !/^[\x21-\x7e]{16,256}$/.test(metricsToken)) {
    problems.push("REDFLAG_METRICS_TOKEN must be 16 to 256 printable characters without spaces (openssl rand -hex 32)");
  }

  const trustedProxies = parseTrustedProxies(env.REDFLAG_TRUSTED_PROXIES ?? "");
  if (typeof trustedProxies === "string") problems.push(`REDFLAG_TRUSTED_PROXIES: ${trustedProxies}`);
  const corsOrigins = parseCorsOrigins(env.REDFLAG_CORS_ORIGINS ?? "");
  if (typeof corsOrigins === "string") problems.push(`REDFLAG_CORS_ORIGINS: ${corsOrigins}`);

  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push("DATABASE_URL must be a postgres:// or postgresql:// URL");
  }

  const idleSeconds = duration("REDFLAG_IDLE_TIMEOUT", "2m", 1);

  // Read only for the embedded database, so that with DATABASE_URL it is named as unused.
  const embeddedCompiler = (!databaseUrl && env.REDFLAG_EMBEDDED_COMPILER) || "baseline";
  if (!isEmbeddedCompiler(embeddedCompiler)) {
    problems.push(
      `REDFLAG_EMBEDDED_COMPILER=${embeddedCompiler.slice(0, 64)} must be baseline (the default: bounded memory) or optimizing (faster database work, about 600 MB more for a few seconds while V8 optimizes it)`,
    );
  }

  const config: Config = {
    host,
    port,
    dataDir: path.resolve(cwd, env.REDFLAG_DATA_DIR || "data"),
    databaseUrl,
    embeddedCompiler: isEmbeddedCompiler(embeddedCompiler) ? embeddedCompiler : "baseline",
    tls: certFile && keyFile ? { certFile, keyFile } : undefined,
    masterKey,
    logLevel: env.REDFLAG_LOG_LEVEL || "info",
    accessTokenTtlSeconds: duration("REDFLAG_ACCESS_TOKEN_TTL", "1h", 60),
    refreshTokenSlidingSeconds: duration("REDFLAG_REFRESH_TOKEN_TTL", "90d", 3600),
    refreshTokenAbsoluteSeconds: duration("REDFLAG_REFRESH_TOKEN_MAX_AGE", "365d", 3600),
    publicUrl: publicUrl(env.REDFLAG_PUBLIC_URL),
    oidc: oidcConfig(),
    consoleDir: env.REDFLAG_CONSOLE_DIR ? path.resolve(cwd, env.REDFLAG_CONSOLE_DIR) : DEFAULT_CONSOLE_DIR,
    agentReleasesDir: env.REDFLAG_AGENT_RELEASES_DIR ? path.resolve(cwd, env.REDFLAG_AGENT_RELEASES_DIR) : undefined,
    idempotencyKeyTtlSeconds: duration("REDFLAG_IDEMPOTENCY_KEY_TTL", "24h", 60),
    settingDefaults: Object.freeze({
      pollIntervalSeconds: duration("REDFLAG_POLL_INTERVAL", "60s", 1),
      pollJitterPercent: integer("REDFLAG_POLL_JITTER_PERCENT", 20, 0, 100),
      commandTimeoutSeconds: duration("REDFLAG_COMMAND_TIMEOUT", "30m", 5),
      commandExpirySeconds: duration("REDFLAG_COMMAND_EXPIRY", "10m", 10),
      resultTimeoutSeconds: duration("REDFLAG_RESULT_TIMEOUT", "2h", 5),
      deliveryLeaseSeconds: duration("REDFLAG_DELIVERY_LEASE", "5m", 1),
      maxDeliveries: integer("REDFLAG_MAX_DELIVERIES", 5, 1, 20),
    }),
    renewMaxSkewSeconds: duration("REDFLAG_RENEW_MAX_SKEW", "5m", 5),
    renewRetryWindowSeconds: duration("REDFLAG_RENEW_RETRY_WINDOW", "60s", 0),
    lastSeenFlushMs: integer("REDFLAG_LAST_SEEN_FLUSH_MS", 5000, 10, 600_000),
    sweepIntervalMs: integer("REDFLAG_SWEEP_INTERVAL_MS", 15_000, 10, 3_600_000),
    maxRequestBytes: integer("REDFLAG_MAX_REQUEST_BYTES", 8 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024),
    listener: Object.freeze({
      headersTimeoutMs: duration("REDFLAG_HEADERS_TIMEOUT", "20s", 1) * 1000,
      requestTimeoutMs: duration("REDFLAG_REQUEST_TIMEOUT", "2m", 1) * 1000,
      idleTimeoutMs: idleSeconds * 1000,
      // At least a minute: a quiet WatchEvents feed writes a keep-alive every 20 s.
      responseStallMs: Math.max(idleSeconds, 60) * 1000,
      maxStreamsPerConnection: integer("REDFLAG_MAX_STREAMS_PER_CONNECTION", 100, 1, 10_000),
      maxConnections: integer("REDFLAG_MAX_CONNECTIONS", 20_000, 1, 1_000_000),
      maxHeaderBytes: integer("REDFLAG_MAX_HEADER_BYTES", 16 * 1024, 1024, 1024 * 1024),
    }),
    maxReportUpdates: integer("REDFLAG_MAX_REPORT_UPDATES", 10_000, 1000, 100_000),
    maxScanUpdates: integer("REDFLAG_MAX_SCAN_UPDATES", 50_000, 1000, 1_000_000),
    metricsToken,
    trustedProxies: Object.freeze(typeof trustedProxies === "string" ? [] : trustedProxies),
    corsOrigins: Object.freeze(typeof corsOrigins === "string" ? [] : corsOrigins),
    rateLimits: Object.freeze({
      registerPerAddress: rate("REDFLAG_REGISTER_RATE_PER_ADDRESS", "60:120"),
      registerPerToken: rate("REDFLAG_REGISTER_RATE_PER_TOKEN", "300:600"),
      renewPerAddress: rate("REDFLAG_RENEW_RATE_PER_ADDRESS", "600:1200"),
      renewPerAgent: rate("REDFLAG_RENEW_RATE_PER_AGENT", "6:12"),
    }),
  };
  if (config.listener.requestTimeoutMs < config.listener.headersTimeoutMs) {
    problems.push("REDFLAG_REQUEST_TIMEOUT must not be shorter than REDFLAG_HEADERS_TIMEOUT (the headers are part of the request)");
  }
  if (config.renewRetryWindowSeconds > 600) problems.push("REDFLAG_RENEW_RETRY_WINDOW must be at most 10m");
  if (config.refreshTokenAbsoluteSeconds < config.refreshTokenSlidingSeconds) {
    problems.push("REDFLAG_REFRESH_TOKEN_MAX_AGE must not be shorter than REDFLAG_REFRESH_TOKEN_TTL");
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

function parseAddr(text: string, problems: string[]): [string, number] {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    problems.push(`REDFLAG_ADDR=${text} must be host:port (for example 0.0.0.0:8080 or [::]:8080)`);
    return ["0.0.0.0", 8080];
  }
  return [match[1] ?? (match[2] || "0.0.0.0"), port];
}

// Where `npm run build -w @redflag/console` puts the console (REDFLAG_CONSOLE_DIR overrides it).
export const DEFAULT_CONSOLE_DIR = path.resolve(import.meta.dirname, "..", "..", "console", "build");

// Bounds on what a connection may hold and for how long; every one a setting (config.ts), so
// tests can make them small.
export interface ListenerLimits {
  // A new connection must send its first request's headers (with TLS: finish the handshake,
  // and again for the headers) within this.
  readonly headersTimeoutMs: number;
  // A request's body must have arrived this long after the request started. A long-poll or a
  // WatchEvents stream has sent its whole (small) request long before: only the upload counts.
  readonly requestTimeoutMs: number;
  // A connection with no request in flight (an HTTP/1.1 keep-alive connection, an HTTP/2
  // session without open streams) is closed after this.
  readonly idleTimeoutMs: number;
  // An HTTP/2 response the client stops reading (nothing written or read for this long once it
  // started) is reset (rpc-handler.ts).
  readonly responseStallMs: number;
  // HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
  readonly maxStreamsPerConnection: number;
  // Connections open at once; more are closed as soon as they are accepted.
  readonly maxConnections: number;
  // Request headers, all of them together (HTTP/1.1 header block, HTTP/2 header list).
  readonly maxHeaderBytes: number;
}

export interface Cidr {
  readonly address: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
}

// "10.0.0.0/8, 192.168.1.10 ::1" → CIDRs; a bare address is a /32 or /128. A string is the problem.
export function parseTrustedProxies(text: string): Cidr[] | string {
  const out: Cidr[] = [];
  for (const item of text.split(/[\s,]+/).filter(Boolean)) {
    const [address = "", bits, extra] = item.split("/");
    const version = net.isIP(address);
    const max = version === 6 ? 128 : 32;
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (version === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
      return `"${item.slice(0, 64)}" is not an IP address or CIDR (for example 10.0.0.0/8, 192.168.1.10 or fd00::/8)`;
    }
    out.push({ address, prefix, family: version === 6 ? "ipv6" : "ipv4" });
  }
  return out;
}

// The REDFLAG_* variables in `env` that the control plane does not use: misspelt
// (REDFLAG_MASTERKEY), or needing another one set (REDFLAG_OIDC_CLIENT_ID without
// REDFLAG_OIDC_ISSUER). Without this they would be ignored without a word. The CLI's own
// variables are not the server's concern.
const CLI_VARIABLES = new Set(["REDFLAG_SERVER", "REDFLAG_API_KEY", "REDFLAG_API_KEY_FILE", "REDFLAG_CONFIG_DIR", "REDFLAG_BACKUP_PASSPHRASE"]);

export function unusedVariables(env: NodeJS.ProcessEnv, cwd = process.cwd()): string[] {
  const read = new Set<string>();
  const recording = new Proxy(
    { ...env },
    {
      get(target, key) {
        if (typeof key === "string") read.add(key);
        return target[key as string];
      },
    },
  );
  try {
    loadConfig(recording, cwd);
  } catch {
    // what is wrong is loadConfig's to say
  }
  return Object.keys(env)
    .filter((k) => k.startsWith("REDFLAG_") && env[k] !== undefined && !read.has(k) && !CLI_VARIABLES.has(k))
    .sort();
}

// REDFLAG_CORS_ORIGINS (http/cors.ts): browser apps on these origins may call the RPCs.
export const MAX_CORS_ORIGINS = 32;

// "https://app.example.com" or "http://localhost:5173": a scheme, a host and maybe a port, nothing else.
const ORIGIN = /^https?:\/\/[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/;

// The origins of REDFLAG_CORS_ORIGINS (comma-separated), or the reason they are not.
export function parseCorsOrigins(text: string): string[] | string {
  const origins = text
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  if (origins.length > MAX_CORS_ORIGINS) return `at most ${MAX_CORS_ORIGINS} origins`;
  for (const o of origins) {
    if (o === "*") return `"*" is not accepted: name each origin, for example https://app.example.com`;
    if (!ORIGIN.test(o)) return `"${o.slice(0, 100)}" is not an origin: write the scheme, host and port only, for example https://app.example.com`;
  }
  return [...new Set(origins.map((o) => o.toLowerCase()))];
}

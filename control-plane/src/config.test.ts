import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, unusedVariables } from "./config.ts";

describe("loadConfig", () => {
  it("has working defaults", () => {
    const c = loadConfig({}, "/srv");
    expect(c).toMatchObject({ host: "0.0.0.0", port: 8080, dataDir: "/srv/data", databaseUrl: undefined, tls: undefined });
    expect(c.accessTokenTtlSeconds).toBe(3600);
    expect(c.settingDefaults.commandExpirySeconds).toBe(600);
    expect(c.refreshTokenSlidingSeconds).toBe(90 * 86_400);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("reads the address, TLS, database and durations", () => {
    const c = loadConfig(
      {
        REDFLAG_ADDR: "[::1]:9000",
        REDFLAG_TLS_CERT: "c.pem",
        REDFLAG_TLS_KEY: "k.pem",
        DATABASE_URL: "postgres://u@db/redflag",
        REDFLAG_COMMAND_EXPIRY: "15m",
        REDFLAG_DATA_DIR: "/var/lib/redflag",
      },
      "/srv",
    );
    expect(c).toMatchObject({ host: "::1", port: 9000, databaseUrl: "postgres://u@db/redflag", dataDir: "/var/lib/redflag" });
    expect(c.tls).toEqual({ certFile: "c.pem", keyFile: "k.pem" });
    expect(c.settingDefaults.commandExpirySeconds).toBe(900);
  });

  it("reports every problem at once", () => {
    let error: ConfigError | undefined;
    try {
      loadConfig({
        REDFLAG_ADDR: "nonsense",
        REDFLAG_TLS_CERT: "only-cert.pem",
        REDFLAG_COMMAND_EXPIRY: "soon",
        REDFLAG_MASTER_KEY: "c2hvcnQ=",
        DATABASE_URL: "mysql://x",
        REDFLAG_POLL_JITTER_PERCENT: "150",
        REDFLAG_TRUSTED_PROXIES: "10.0.0.0/8, my-proxy",
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.problems).toHaveLength(7);
    expect(error!.message).toMatch(/REDFLAG_TRUSTED_PROXIES: "my-proxy" is not an IP address or CIDR/);
    expect(error!.message).toMatch(/^invalid environment:/);
    expect(error!.message).toMatch(/REDFLAG_ADDR=nonsense/);
    expect(error!.message).toMatch(/REDFLAG_TLS_CERT and REDFLAG_TLS_KEY/);
  });

  it("reads how V8 runs the embedded database, baseline by default, and ignores it for PostgreSQL", () => {
    expect(loadConfig({}).embeddedCompiler).toBe("baseline");
    expect(loadConfig({ REDFLAG_EMBEDDED_COMPILER: "optimizing" }).embeddedCompiler).toBe("optimizing");
    expect(() => loadConfig({ REDFLAG_EMBEDDED_COMPILER: "turbo" })).toThrow(
      /REDFLAG_EMBEDDED_COMPILER=turbo must be baseline \(the default: bounded memory\) or optimizing/,
    );
    expect(unusedVariables({ DATABASE_URL: "postgres://u@db/redflag", REDFLAG_EMBEDDED_COMPILER: "optimizing" })).toEqual(["REDFLAG_EMBEDDED_COMPILER"]);
  });

  it("names the REDFLAG_ variables it does not use: a typo, or one that needs another set", () => {
    const env = { REDFLAG_MASTERKEY: "x", REDFLAG_ADDR: "127.0.0.1:9000", REDFLAG_OIDC_CLIENT_ID: "app", REDFLAG_SERVER: "http://cli-only", PATH: "/bin" };
    expect(unusedVariables(env)).toEqual(["REDFLAG_MASTERKEY", "REDFLAG_OIDC_CLIENT_ID"]);
    expect(unusedVariables({ ...env, REDFLAG_MASTERKEY: undefined, REDFLAG_OIDC_ISSUER: "https://id.example.com", REDFLAG_OIDC_CLIENT_SECRET: "s" })).toEqual([]);
  });

  it("reads REDFLAG_CORS_ORIGINS as exact origins, and refuses a wildcard, paths and too many", () => {
    expect(loadConfig({}).corsOrigins).toEqual([]);
    expect(loadConfig({ REDFLAG_CORS_ORIGINS: "https://App.example.com, http://localhost:5173" }).corsOrigins).toEqual(["https://app.example.com", "http://localhost:5173"]);
    const refused = (value: string) => {
      try {
        loadConfig({ REDFLAG_CORS_ORIGINS: value });
      } catch (err) {
        return (err as ConfigError).message;
      }
      return "accepted";
    };
    expect(refused("*")).toMatch(/REDFLAG_CORS_ORIGINS: "\*" is not accepted: name each origin/);
    expect(refused("https://app.example.com/console")).toMatch(/"https:\/\/app.example.com\/console" is not an origin: write the scheme, host and port only/);
    expect(refused(Array.from({ length: 33 }, (_, i) => `https://a${i}.example`).join(","))).toMatch(/at most 32 origins/);
  });

  it("reads Register and Renew rate limits as PER_MINUTE[:BURST], 0 turning one off", () => {
    expect(loadConfig({}).rateLimits).toEqual({
      registerPerAddress: { perMinute: 60, burst: 120 },
      registerPerToken: { perMinute: 300, burst: 600 },
      renewPerAddress: { perMinute: 600, burst: 1200 },
      renewPerAgent: { perMinute: 6, burst: 12 },
    });
    const c = loadConfig({ REDFLAG_REGISTER_RATE_PER_ADDRESS: "10", REDFLAG_RENEW_RATE_PER_AGENT: "0", REDFLAG_REGISTER_RATE_PER_TOKEN: "5:50" });
    expect(c.rateLimits.registerPerAddress).toEqual({ perMinute: 10, burst: 20 });
    expect(c.rateLimits.registerPerToken).toEqual({ perMinute: 5, burst: 50 });
    expect(c.rateLimits.renewPerAgent.perMinute).toBe(0);
    expect(() => loadConfig({ REDFLAG_RENEW_RATE_PER_ADDRESS: "lots" })).toThrow(/REDFLAG_RENEW_RATE_PER_ADDRESS=lots must be CALLS_PER_MINUTE or CALLS_PER_MINUTE:BURST/);
    expect(() => loadConfig({ REDFLAG_RENEW_RATE_PER_ADDRESS: "5:0" })).toThrow(/CALLS_PER_MINUTE:BURST/);
  });
});

describe("listener limits", () => {
  it("have defaults that keep long-polls and WatchEvents working, and can be set", () => {
    expect(loadConfig({}).listener).toEqual({
      headersTimeoutMs: 20_000,
      requestTimeoutMs: 120_000,
      idleTimeoutMs: 120_000,
      responseStallMs: 120_000,
      maxStreamsPerConnection: 100,
      maxConnections: 20_000,
      maxHeaderBytes: 16_384,
    });
    const c = loadConfig({ REDFLAG_IDLE_TIMEOUT: "5s", REDFLAG_MAX_CONNECTIONS: "500", REDFLAG_MAX_STREAMS_PER_CONNECTION: "20" });
    // A response stalls only after a minute at least: a quiet feed writes every 20 s.
    expect(c.listener).toMatchObject({ idleTimeoutMs: 5000, responseStallMs: 60_000, maxConnections: 500, maxStreamsPerConnection: 20 });
  });

  it("refuses limits that make no sense", () => {
    expect(() => loadConfig({ REDFLAG_HEADERS_TIMEOUT: "1m", REDFLAG_REQUEST_TIMEOUT: "30s" })).toThrow(/REDFLAG_REQUEST_TIMEOUT must not be shorter than REDFLAG_HEADERS_TIMEOUT/);
    expect(() => loadConfig({ REDFLAG_MAX_STREAMS_PER_CONNECTION: "0" })).toThrow(/REDFLAG_MAX_STREAMS_PER_CONNECTION=0 must be a whole number from 1 to 10000/);
    expect(() => loadConfig({ REDFLAG_IDLE_TIMEOUT: "0" })).toThrow(/REDFLAG_IDLE_TIMEOUT=0 must be at least 1s/);
  });
});

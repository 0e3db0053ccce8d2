import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "./config.ts";
import { parseDuration } from "./duration.ts";

describe("loadConfig", () => {
  it("has working defaults", () => {
    const c = loadConfig({}, "/srv");
    expect(c).toMatchObject({ host: "0.0.0.0", port: 8080, dataDir: "/srv/data", databaseUrl: undefined, tls: undefined });
    expect(c.accessTokenTtlSeconds).toBe(3600);
    expect(c.commandExpirySeconds).toBe(600);
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
    expect(c.commandExpirySeconds).toBe(900);
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
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.problems).toHaveLength(6);
    expect(error!.message).toMatch(/^invalid environment:/);
    expect(error!.message).toMatch(/REDFLAG_ADDR=nonsense/);
    expect(error!.message).toMatch(/REDFLAG_TLS_CERT and REDFLAG_TLS_KEY/);
  });
});

describe("durations", () => {
  it("parse what operators type", () => {
    expect(parseDuration("90")).toBe(90);
    expect(parseDuration("10m")).toBe(600);
    expect(parseDuration("7d")).toBe(604_800);
    expect(() => parseDuration("7 days")).toThrow(/not a duration/);
    expect(() => parseDuration("-1s")).toThrow(/not a duration/);
  });
});

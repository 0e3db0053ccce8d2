import { describe, expect, it } from "vitest";
import { parseTrustedProxies, type Cidr } from "../config.ts";
import { createClientAddress } from "./client-address.ts";

const trusted = (text: string) => parseTrustedProxies(text) as Cidr[];

describe("client address", () => {
  it("is the connection's peer when no proxy is trusted, whatever X-Forwarded-For says", () => {
    const address = createClientAddress([]);
    expect(address("203.0.113.5", "10.9.9.9")).toBe("203.0.113.5");
    expect(address("::ffff:203.0.113.5", undefined)).toBe("203.0.113.5");
    expect(address("2001:DB8::1", undefined)).toBe("2001:db8::1");
  });

  it("ignores X-Forwarded-For from a peer that is not a trusted proxy", () => {
    const address = createClientAddress(trusted("10.0.0.0/8"));
    expect(address("203.0.113.5", "198.51.100.1")).toBe("203.0.113.5");
  });

  it("takes the right-most hop that is not a trusted proxy", () => {
    const address = createClientAddress(trusted("127.0.0.1, 10.0.0.0/8 fd00::/8"));
    expect(address("127.0.0.1", "198.51.100.1")).toBe("198.51.100.1");
    // The client wrote the first hop itself: only what trusted proxies appended counts.
    expect(address("127.0.0.1", "192.0.2.66, 198.51.100.1, 10.0.0.7")).toBe("198.51.100.1");
    expect(address("::ffff:10.1.1.1", ["192.0.2.66", "198.51.100.1"])).toBe("198.51.100.1");
    expect(address("fd00::5", "[2001:db8::7]:4711, fd00::9")).toBe("2001:db8::7");
    expect(address("127.0.0.1", "198.51.100.1:5000")).toBe("198.51.100.1");
    // Only proxies all the way: the left-most of them.
    expect(address("127.0.0.1", "10.0.0.1, 10.0.0.2")).toBe("10.0.0.1");
    // No header: the proxy itself (a health check, a scraper on the proxy's host).
    expect(address("127.0.0.1", undefined)).toBe("127.0.0.1");
    // Garbage behind trusted hops: the last address that could be checked.
    expect(address("127.0.0.1", "198.51.100.1, not-an-address, 10.0.0.3")).toBe("10.0.0.3");
  });

  it("reads a list of addresses and CIDRs, and says what is wrong with a bad one", () => {
    expect(parseTrustedProxies("")).toEqual([]);
    expect(parseTrustedProxies("10.0.0.0/8, ::1")).toEqual([
      { address: "10.0.0.0", prefix: 8, family: "ipv4" },
      { address: "::1", prefix: 128, family: "ipv6" },
    ]);
    for (const bad of ["10.0.0.0/33", "proxy.local", "10.0.0.0/8/1", "::1/200", "10.0.0.0/x"]) {
      expect(parseTrustedProxies(bad)).toMatch(/is not an IP address or CIDR/);
    }
  });
});

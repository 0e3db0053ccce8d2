import type { networkInterfaces } from "node:os";
import { describe, expect, it } from "vitest";
import { lanAddress, readyLine } from "./ready-line.ts";

type Interfaces = ReturnType<typeof networkInterfaces>;
const iface = (address: string, family: "IPv4" | "IPv6", internal: boolean) => ({ address, family, internal, netmask: "", mac: "", cidr: null }) as NonNullable<Interfaces[string]>[number];
const host: Interfaces = {
  lo: [iface("127.0.0.1", "IPv4", true), iface("::1", "IPv6", true)],
  docker0: [iface("fe80::1", "IPv6", false)],
  eth0: [iface("169.254.3.4", "IPv4", false), iface("192.168.1.20", "IPv4", false)],
};
const base = { publicUrl: undefined, host: "0.0.0.0", port: 8080, tls: false, setupRequired: false, adminKeyFile: undefined, interfaces: host, inContainer: false };

describe("the ready line", () => {
  it("names this machine's LAN address on a first start, with the admin key's file", () => {
    expect(readyLine({ ...base, setupRequired: true, adminKeyFile: "/var/lib/redflag/admin.key" })).toBe(
      "RedFlag is ready: open http://192.168.1.20:8080 to create the first admin; scripts can use the admin API key in /var/lib/redflag/admin.key",
    );
    expect(readyLine({ ...base, setupRequired: true })).toBe("RedFlag is ready: open http://192.168.1.20:8080 to create the first admin");
  });

  it("is only the address once people exist", () => {
    expect(readyLine({ ...base, adminKeyFile: "/var/lib/redflag/admin.key" })).toBe("RedFlag is ready: http://192.168.1.20:8080");
  });

  it("prefers REDFLAG_PUBLIC_URL, then the address REDFLAG_ADDR names, and says https with TLS", () => {
    expect(readyLine({ ...base, publicUrl: "https://redflag.example.com" })).toBe("RedFlag is ready: https://redflag.example.com");
    expect(readyLine({ ...base, host: "10.0.0.5", port: 9443, tls: true })).toBe("RedFlag is ready: https://10.0.0.5:9443");
    expect(readyLine({ ...base, host: "fd00::5" })).toBe("RedFlag is ready: http://[fd00::5]:8080");
    expect(readyLine({ ...base, tls: true })).toBe("RedFlag is ready: https://192.168.1.20:8080");
  });

  it("falls back to 127.0.0.1 without a LAN address, and names the Docker host from inside a container", () => {
    expect(lanAddress({ lo: host.lo })).toBeUndefined();
    expect(readyLine({ ...base, interfaces: { lo: host.lo } })).toBe("RedFlag is ready: http://127.0.0.1:8080");
    expect(readyLine({ ...base, inContainer: true, setupRequired: true })).toBe("RedFlag is ready: open http://localhost:8080 on the Docker host to create the first admin");
  });
});

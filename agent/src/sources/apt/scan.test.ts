import { UpdateSeverity, SubsystemRunState } from "@redflag/gen/command_pb";
import { chmod, mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSecuritySuite, parseAptCacheSizes, parseAptListUpgradable, scanApt, toPackageUpdate } from "./scan.ts";

// Recorded from real hosts (LC_ALL=C unless noted).
const DEBIAN_BOOKWORM = `Listing...
apt-transport-https/oldstable-security 2.6.2 all [upgradable from: 2.6.1]
apt/oldstable-security 2.6.2 amd64 [upgradable from: 2.6.1]
base-files/oldstable 12.4+deb12u15 amd64 [upgradable from: 12.4+deb12u11]
krb5-locales/oldstable,oldstable-security 1.20.1-2+deb12u5 all [upgradable from: 1.20.1-2+deb12u3]
`;

const UBUNTU_JAMMY = `Listing... Done
libssl3/jammy-updates,jammy-security 3.0.2-0ubuntu1.18 amd64 [upgradable from: 3.0.2-0ubuntu1.15]
linux-image-generic/jammy-updates,jammy-security 5.15.0.122.122 amd64 [upgradable from: 5.15.0.119.119]
openssh-server/jammy-updates 1:8.9p1-3ubuntu0.10 amd64 [upgradable from: 1:8.9p1-3ubuntu0.6]
snapd/jammy-updates 2.63+22.04ubuntu0.1 amd64 [upgradable from: 2.61.3+22.04]
`;

const MULTI_ARCH = `Listing...
libc6/bookworm-security 2.36-9+deb12u9 amd64 [upgradable from: 2.36-9+deb12u7]
libc6/bookworm-security 2.36-9+deb12u9 i386 [upgradable from: 2.36-9+deb12u7]
libgcc-s1/bookworm 12.2.0-14+deb12u1 armhf [upgradable from: 12.2.0-14]
`;

// LANG=de_DE.UTF-8 and fr_FR.UTF-8: the header and the bracket text are translated.
const LOCALISED = `Auflistung… Fertig
bash/stable 5.2.15-2+b7 amd64 [aktualisierbar von: 5.2.15-2+b2]
vim/stable-security 2:9.0.1378-2+deb12u1 amd64 [pouvant être mis à jour depuis : 2:9.0.1378-2]
`;

const GARBAGE = `
WARNING: apt does not have a stable CLI interface. Use with caution in scripts.

Listing...
N: There is 1 additional version. Please use the '-a' switch to see it
curl/oldstable 7.88.1-10+deb12u15 amd64 [upgradable from: 7.88.1-10+deb12u14]
E: Could not get lock /var/lib/dpkg/lock-frontend
this line is noise
Half/Formed 1.0
UPPER/stable 1.0 amd64 [upgradable from: 0.9]
evil/stable $(rm -rf /) amd64 [upgradable from: 1]
curl/oldstable 7.88.1-10+deb12u15 amd64 [upgradable from: 7.88.1-10+deb12u14]
`;

describe("parseAptListUpgradable", () => {
  it("reads name, versions, arch and every suite; marks security pockets", () => {
    const { candidates, ignoredLines } = parseAptListUpgradable(DEBIAN_BOOKWORM);
    expect(ignoredLines).toBe(0);
    expect(candidates).toHaveLength(4);
    expect(candidates[3]).toEqual({
      name: "krb5-locales",
      architecture: "all",
      currentVersion: "1.20.1-2+deb12u3",
      availableVersion: "1.20.1-2+deb12u5",
      suites: ["oldstable", "oldstable-security"],
    });
    const updates = candidates.map((c) => toPackageUpdate(c, new Map()));
    expect(updates.map((u) => [u.name, u.security, u.repository])).toEqual([
      ["apt-transport-https", true, "oldstable-security"],
      ["apt", true, "oldstable-security"],
      ["base-files", false, "oldstable"],
      ["krb5-locales", true, "oldstable-security"],
    ]);
    expect(updates[0]).toMatchObject({ source: "apt", severity: UpdateSeverity.SECURITY });
    expect(updates[2]).toMatchObject({ severity: UpdateSeverity.UNKNOWN, sizeBytes: 0n });
  });

  it("handles Ubuntu pockets, epochs and kernel updates", () => {
    const updates = parseAptListUpgradable(UBUNTU_JAMMY).candidates.map((c) => toPackageUpdate(c, new Map()));
    expect(updates.map((u) => [u.name, u.security, u.rebootRequired])).toEqual([
      ["libssl3", true, false],
      ["linux-image-generic", true, true],
      ["openssh-server", false, false],
      ["snapd", false, false],
    ]);
    expect(updates[2]).toMatchObject({ currentVersion: "1:8.9p1-3ubuntu0.6", availableVersion: "1:8.9p1-3ubuntu0.10" });
  });

  it("keeps one update per architecture", () => {
    const { candidates } = parseAptListUpgradable(MULTI_ARCH);
    expect(candidates.map((c) => `${c.name}:${c.architecture}`)).toEqual(["libc6:amd64", "libc6:i386", "libgcc-s1:armhf"]);
  });

  it("finds nothing when nothing is upgradable", () => {
    expect(parseAptListUpgradable("Listing...\n")).toEqual({ candidates: [], ignoredLines: 0 });
    expect(parseAptListUpgradable("Listing... Done\n")).toEqual({ candidates: [], ignoredLines: 0 });
    expect(parseAptListUpgradable("")).toEqual({ candidates: [], ignoredLines: 0 });
  });

  it("tolerates translated output", () => {
    const { candidates, ignoredLines } = parseAptListUpgradable(LOCALISED);
    expect(ignoredLines).toBe(0);
    expect(candidates.map((c) => [c.name, c.currentVersion, c.availableVersion])).toEqual([
      ["bash", "5.2.15-2+b2", "5.2.15-2+b7"],
      ["vim", "2:9.0.1378-2", "2:9.0.1378-2+deb12u1"],
    ]);
  });

  it("skips warnings, apt messages and garbage, counting what it did not recognise", () => {
    const { candidates, ignoredLines } = parseAptListUpgradable(GARBAGE);
    expect(candidates.map((c) => c.name)).toEqual(["curl"]);
    expect(ignoredLines).toBe(7);
  });
});

describe("isSecuritySuite", () => {
  it.each([
    ["bookworm-security", true],
    ["oldstable-security", true],
    ["jammy-security", true],
    ["jammy-infra-security", true],
    ["bookworm", false],
    ["jammy-updates", false],
    ["securityish", false],
    ["bookworm-securityupdates", false],
  ])("%s → %s", (suite, expected) => {
    expect(isSecuritySuite(suite)).toBe(expected);
  });
});

describe("parseAptCacheSizes", () => {
  it("keys sizes by name, architecture and version", () => {
    const sizes = parseAptCacheSizes(`Package: apt
Version: 2.6.2
Architecture: amd64
Size: 1373116
SHA256: 00

Package: apt-transport-https
Source: apt
Version: 2.6.2
Architecture: all
Size: 25604
`);
    expect(sizes).toEqual(new Map([["apt:amd64=2.6.2", 1373116n], ["apt-transport-https:all=2.6.2", 25604n]]));
  });
});

describe("scanApt with fake tools", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-apt-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const bin = async (name: string, tools: Record<string, string>) => {
    const binDir = path.join(dir, name);
    await mkdir(binDir);
    for (const [tool, script] of Object.entries(tools)) {
      await writeFile(path.join(binDir, tool), `#!/bin/sh\n${script}\n`);
      await chmod(path.join(binDir, tool), 0o755);
    }
    // Only the fakes are on PATH: the scripts use shell builtins.
    return { PATH: binDir };
  };

  it("reports NOT_PRESENT without apt", async () => {
    const scan = await scanApt({ refresh: false, timeoutMs: 5000, env: await bin("none", {}), isRoot: true });
    expect(scan.run).toMatchObject({ subsystem: "apt", state: SubsystemRunState.NOT_PRESENT });
    expect(scan.updates).toEqual([]);
  });

  it("still scans when refreshing the lists fails, and says so", async () => {
    const env = await bin("refresh-fails", {
      "apt-get": 'echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1234" >&2; exit 100',
      apt: `echo "WARNING: apt does not have a stable CLI interface." >&2; printf '%s' '${DEBIAN_BOOKWORM}'`,
    });
    const scan = await scanApt({ refresh: true, timeoutMs: 5000, env, isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.updateCount).toBe(4);
    expect(scan.run.message).toMatch(/^4 updates, 3 security; package lists not refreshed: apt-get update failed \(exit status 100\): E: Could not get lock/);
  });

  it("fails the subsystem when apt itself fails, without apt's CLI warning in the reason", async () => {
    const env = await bin("apt-fails", {
      apt: 'echo "WARNING: apt does not have a stable CLI interface. Use with caution in scripts." >&2; echo "E: The package cache file is corrupted" >&2; exit 100',
    });
    const scan = await scanApt({ refresh: false, timeoutMs: 5000, env, isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toBe(
      "apt list --upgradable failed (exit status 100): E: The package cache file is corrupted; package lists not refreshed (refresh disabled)",
    );
  });
});

describe("scanApt on this machine", () => {
  it("runs the real apt and returns well-formed updates", async () => {
    const scan = await scanApt({ refresh: false, timeoutMs: 120_000, env: process.env, isRoot: process.getuid?.() === 0 });
    expect(scan.run).toMatchObject({ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: scan.updates.length });
    expect(scan.run.message).not.toMatch(/unrecognised/);
    for (const u of scan.updates) {
      expect(u.source).toBe("apt");
      expect(u.name).toMatch(/^[a-z0-9][a-z0-9+.-]+$/);
      expect(u.availableVersion).not.toBe("");
      expect(u.currentVersion).not.toBe("");
      expect(u.architecture).toMatch(/^[a-z0-9-]+$/);
      expect(u.repository).not.toBe("");
      expect(u.severity).toBe(u.security ? UpdateSeverity.SECURITY : UpdateSeverity.UNKNOWN);
      expect(u.sizeBytes).toBeGreaterThan(0n);
    }
  });
});

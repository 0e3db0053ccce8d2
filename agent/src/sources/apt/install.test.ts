import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scanApt } from "./scan.ts";
import { aptReasonFor, aptSpec, createAptInstaller, parseAptPolicy, parseAptSimulation, parseDpkgQuery } from "./install.ts";
import { fakeTools, printFile, removeFakeTools } from "../../../test/support/fake-tools.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

// Recorded `apt-get -s` output (LC_ALL=C).
const NOBLE_UPGRADE_WITH_DEPENDENCIES = `NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
      Keep also in mind that locking is deactivated,
      so don't depend on the relevance to the real current situation!
Reading package lists...
Building dependency tree...
Reading state information...
The following packages will be REMOVED:
  libcurl4
The following NEW packages will be installed:
  libcurl4t64
The following packages will be upgraded:
  curl libssl3t64
2 upgraded, 1 newly installed, 1 to remove and 117 not upgraded.
Remv libcurl4 [8.5.0-2ubuntu10.4]
Inst libcurl4t64 (8.5.0-2ubuntu10.6 Ubuntu:24.04/noble-updates [amd64])
Inst curl [8.5.0-2ubuntu10.4] (8.5.0-2ubuntu10.6 Ubuntu:24.04/noble-updates, Ubuntu:24.04/noble-security [amd64]) []
Inst libssl3t64 [3.0.13-0ubuntu3.4] (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-security [amd64])
Conf libcurl4t64 (8.5.0-2ubuntu10.6 Ubuntu:24.04/noble-updates [amd64])
Conf curl (8.5.0-2ubuntu10.6 Ubuntu:24.04/noble-updates, Ubuntu:24.04/noble-security [amd64])
Conf libssl3t64 (3.0.13-0ubuntu3.5 Ubuntu:24.04/noble-security [amd64])
`;

const BOOKWORM_DOWNGRADE = `Reading package lists...
Building dependency tree...
Reading state information...
The following packages will be DOWNGRADED:
  curl libcurl4
0 upgraded, 0 newly installed, 2 downgraded, 0 to remove and 122 not upgraded.
Inst curl [7.88.1-10+deb12u14] (7.88.1-10+deb12u5 Debian-Security:12/oldstable-security [amd64]) []
Inst libcurl4 [7.88.1-10+deb12u14] (7.88.1-10+deb12u5 Debian-Security:12/oldstable-security [amd64])
Conf curl (7.88.1-10+deb12u5 Debian-Security:12/oldstable-security [amd64])
Conf libcurl4 (7.88.1-10+deb12u5 Debian-Security:12/oldstable-security [amd64])
`;

const MULTIARCH = `The following packages will be upgraded:
  libc6 libc6:i386
Inst libc6 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian-Security:12/stable-security [amd64]) [libc6:i386 ]
Inst libc6:i386 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian-Security:12/stable-security [i386])
Remv old-tool:i386 [0.9-1]
`;

describe("parseAptSimulation", () => {
  it("reads upgrades, new dependencies and removals", () => {
    const changes = parseAptSimulation(NOBLE_UPGRADE_WITH_DEPENDENCIES);
    expect(changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion, c.architecture])).toEqual([
      [PackageChangeKind.REMOVE, "libcurl4", "8.5.0-2ubuntu10.4", "", ""],
      [PackageChangeKind.INSTALL, "libcurl4t64", "", "8.5.0-2ubuntu10.6", "amd64"],
      [PackageChangeKind.UPGRADE, "curl", "8.5.0-2ubuntu10.4", "8.5.0-2ubuntu10.6", "amd64"],
      [PackageChangeKind.UPGRADE, "libssl3t64", "3.0.13-0ubuntu3.4", "3.0.13-0ubuntu3.5", "amd64"],
    ]);
    expect(changes.every((c) => c.source === "apt")).toBe(true);
  });

  it("tells downgrades from upgrades by apt's DOWNGRADED list", () => {
    const changes = parseAptSimulation(BOOKWORM_DOWNGRADE);
    expect(changes.map((c) => [c.kind, c.name, c.toVersion])).toEqual([
      [PackageChangeKind.DOWNGRADE, "curl", "7.88.1-10+deb12u5"],
      [PackageChangeKind.DOWNGRADE, "libcurl4", "7.88.1-10+deb12u5"],
    ]);
  });

  it("keeps foreign architectures apart", () => {
    const changes = parseAptSimulation(MULTIARCH);
    expect(changes.map((c) => [c.kind, c.name, c.architecture])).toEqual([
      [PackageChangeKind.UPGRADE, "libc6", "amd64"],
      [PackageChangeKind.UPGRADE, "libc6", "i386"],
      [PackageChangeKind.REMOVE, "old-tool", "i386"],
    ]);
  });

  it("finds nothing in errors or garbage", () => {
    expect(parseAptSimulation("E: Unable to locate package nope\n")).toEqual([]);
    expect(parseAptSimulation("Inst\nInst foo\nInst (1.0)\n\u0000\u0001")).toEqual([]);
  });
});

describe("apt helpers", () => {
  it("builds specs apt-get takes", () => {
    expect(aptSpec({ name: "curl", version: "", architecture: "" })).toBe("curl");
    expect(aptSpec({ name: "curl", version: "7.88.1-10+deb12u15", architecture: "amd64" })).toBe("curl:amd64=7.88.1-10+deb12u15");
    expect(aptSpec({ name: "tzdata", version: "2024a-0+deb12u1", architecture: "all" })).toBe("tzdata=2024a-0+deb12u1");
  });

  it("reads installed versions from dpkg-query, ignoring removed packages", () => {
    const versions = parseDpkgQuery("curl amd64 7.88.1-10+deb12u14 ii \nold arm64 1.0 rc \nlibc6 i386 2.36-9 ii \n");
    expect(versions.get("curl")).toBe("7.88.1-10+deb12u14");
    expect(versions.get("curl:amd64")).toBe("7.88.1-10+deb12u14");
    expect(versions.get("libc6:i386")).toBe("2.36-9");
    expect(versions.has("old")).toBe(false);
  });

  it("finds the line that explains one package's failure", () => {
    const output = [
      "E: Unable to locate package nope",
      "E: Version '9.9' for 'curl' was not found",
      "dpkg: error processing package libfoo1:amd64 (--configure):",
      "Skipping hello, it is not installed and only upgrades are requested.",
    ].join("\n");
    expect(aptReasonFor("nope", output)).toBe("E: Unable to locate package nope");
    expect(aptReasonFor("curl", output)).toBe("E: Version '9.9' for 'curl' was not found");
    expect(aptReasonFor("libfoo1", output)).toBe("dpkg: error processing package libfoo1:amd64 (--configure):");
    expect(aptReasonFor("hello", output)).toMatch(/^Skipping hello/);
    expect(aptReasonFor("libc6", output)).toBeUndefined();
    // A name is text, not a pattern: "c.rl" must not match "curl".
    expect(aptReasonFor("c.rl", output)).toBeUndefined();
  });
});

// Fake apt-get and dpkg-query: dpkg-query answers from `before` until apt-get has run (it
// leaves a marker), then from `after`. Every argv is logged, one argument per line.
describe("apt installer with fake tools", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "redflag-apt-install-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const fake = async (name: string, spec: { before: string; after: string; install: string; simulate?: string }) => {
    const root = path.join(dir, name);
    await mkdir(root);
    const files = { before: spec.before, after: spec.after, install: spec.install, simulate: spec.simulate ?? "" };
    for (const [file, text] of Object.entries(files)) await writeFile(path.join(root, file), text);
    const log = `for a in "$@"; do printf '%s\\n' "$a"; done >> "${root}/argv"; echo "@@end" >> "${root}/argv"`;
    const print = (file: string) => `while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "${root}/${file}"`;
    const scripts = {
      "apt-get": [
        log,
        `case " $* " in *" -s "*) ${print("simulate")}; exit 0;; esac`,
        `: > "${root}/ran"`,
        `IFS= read -r status < "${root}/install"`,
        // apt prints its "E:" lines on stderr, progress on stdout.
        `{ ${print("install")}; } | { read -r first; while IFS= read -r l; do case "$l" in E:*) printf '%s\\n' "$l" >&2;; *) printf '%s\\n' "$l";; esac; done; }`,
        `exit "$status"`,
      ].join("\n"),
      "dpkg-query": `${log}\nif [ -e "${root}/ran" ]; then ${print("after")}; else ${print("before")}; fi`,
    };
    for (const [tool, script] of Object.entries(scripts)) {
      await writeFile(path.join(root, tool), `#!/bin/sh\n${script}\n`);
      await chmod(path.join(root, tool), 0o755);
    }
    return {
      opts: (extra: Partial<InstallOptions> = {}): InstallOptions => ({
        timeoutMs: 10_000,
        env: { PATH: root },
        isRoot: true,
        holds: new Set(),
        ...extra,
      }),
      argv: async () => (await readFile(path.join(root, "argv"), "utf8").catch(() => "")).split("@@end\n").filter(Boolean).map((a) => a.trimEnd().split("\n")),
    };
  };
  const ref = (name: string, version = "", architecture = "") => create(PackageRefSchema, { source: "apt", name, version, architecture });
  const installer = createAptInstaller({ rebootCheck: async () => false });

  it("installs each package and reports it from dpkg's record", async () => {
    const f = await fake("ok", {
      before: "curl amd64 7.88.1-10+deb12u14 ii \nlibcurl4 amd64 7.88.1-10+deb12u14 ii \n",
      after: "curl amd64 7.88.1-10+deb12u15 ii \nlibcurl4 amd64 7.88.1-10+deb12u15 ii \n",
      install: "0\nSetting up curl (7.88.1-10+deb12u15) ...\n",
    });
    const out = await installer.install([ref("curl"), ref("libcurl4", "", "amd64")], f.opts());
    expect(out.error).toBeUndefined();
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["curl", PackageResultState.INSTALLED, "7.88.1-10+deb12u14", "7.88.1-10+deb12u15"],
      ["libcurl4", PackageResultState.INSTALLED, "7.88.1-10+deb12u14", "7.88.1-10+deb12u15"],
    ]);
    const runs = await f.argv();
    const install = runs.find((a) => a[0] === "install")!;
    expect(install).toEqual([
      "install", "-y", "-q", "-o", expect.stringMatching(/^DPkg::Lock::Timeout=\d+$/),
      "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
      "--only-upgrade", "--", "curl", "libcurl4:amd64",
    ]);
    expect(out.output.map((o) => o.argv[1])).toEqual(["install"]);
    expect(out.output[0]).toMatchObject({ exitCode: 0, timedOut: false, stdoutTail: "Setting up curl (7.88.1-10+deb12u15) ..." });
  });

  it("reports one failing package with apt's reason while the others install", async () => {
    const f = await fake("partial", {
      before: "curl amd64 7.88.1-10+deb12u14 ii \nlibfoo1 amd64 1.0-1 ii \n",
      after: "curl amd64 7.88.1-10+deb12u15 ii \nlibfoo1 amd64 1.0-1 ii \n",
      install: [
        "100",
        "Setting up curl (7.88.1-10+deb12u15) ...",
        "dpkg: error processing package libfoo1 (--configure):",
        " installed libfoo1 package post-installation script subprocess returned error exit status 1",
        "E: Sub-process /usr/bin/dpkg returned an error code (1)",
      ].join("\n"),
    });
    const out = await installer.install([ref("curl"), ref("libfoo1")], f.opts());
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["curl", PackageResultState.INSTALLED, ""],
      ["libfoo1", PackageResultState.FAILED, "dpkg: error processing package libfoo1 (--configure):"],
    ]);
    expect(out.error).toMatch(/^apt-get install failed \(exit status 100\)/);
  });

  it("says what is already current or not installed", async () => {
    const f = await fake("skips", {
      before: "curl amd64 7.88.1-10+deb12u15 ii \n",
      after: "curl amd64 7.88.1-10+deb12u15 ii \n",
      install: "0\ncurl is already the newest version (7.88.1-10+deb12u15).\nSkipping hello, it is not installed and only upgrades are requested.\n",
    });
    const out = await installer.install([ref("curl"), ref("hello")], f.opts());
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["curl", PackageResultState.SKIPPED, "already up to date"],
      ["hello", PackageResultState.SKIPPED, NOT_INSTALLED],
    ]);
    // Only what dpkg has installed reaches apt-get.
    expect((await f.argv()).find((a) => a[0] === "install")!.slice(-2)).toEqual(["--", "curl"]);
  });

  it("never installs a package the host does not have: not pinned to a version, not as a rollback", async () => {
    const f = await fake("not-here", {
      before: "curl amd64 7.88.1-10+deb12u15 ii \nnetcat-traditional amd64 1.10-47 rc \n",
      after: "curl amd64 7.88.1-10+deb12u15 ii \n",
      install: "0\n",
    });
    // A pinned version goes to apt-get without --only-upgrade, which would install it.
    const pinned = await installer.install([ref("netcat-traditional", "1.10-47")], f.opts());
    expect(pinned.packages.map((p) => [p.name, p.state, p.reason])).toEqual([["netcat-traditional", PackageResultState.SKIPPED, NOT_INSTALLED]]);
    const back = await installer.rollback!(ref("netcat-traditional", "1.10-46"), f.opts());
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    // Another architecture of an installed package is a new package too.
    const foreign = await installer.install([ref("curl", "7.88.1-10+deb12u15", "i386")], f.opts());
    expect(foreign.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect((await f.argv()).filter((a) => a[0] === "install")).toEqual([]);
    // A dependency a confirmed update pulls in is the one exception.
    const dependency = await installer.install([ref("curl", "7.88.1-10+deb12u15"), ref("netcat-traditional", "1.10-47")], f.opts({ newPackages: new Set(["netcat-traditional"]) }));
    expect(dependency.packages[1]!.reason).not.toBe(NOT_INSTALLED);
    expect((await f.argv()).find((a) => a[0] === "install")!.slice(-3)).toEqual(["--", "curl=7.88.1-10+deb12u15", "netcat-traditional=1.10-47"]);
  });

  it("pins exact versions and allows going back when the versions come from a dry run", async () => {
    const f = await fake("pinned", {
      before: "curl amd64 7.88.1-10+deb12u15 ii \n",
      after: "curl amd64 7.88.1-10+deb12u5 ii \n",
      install: "0\n",
    });
    const out = await installer.rollback!(ref("curl", "7.88.1-10+deb12u5", "amd64"), f.opts());
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "7.88.1-10+deb12u15", toVersion: "7.88.1-10+deb12u5" });
    const install = (await f.argv()).find((a) => a[0] === "install")!;
    expect(install.slice(-3)).toEqual(["--allow-downgrades", "--", "curl:amd64=7.88.1-10+deb12u5"]);
  });

  it("fails a version apt cannot find", async () => {
    const f = await fake("missing-version", {
      before: "curl amd64 7.88.1-10+deb12u15 ii \n",
      after: "curl amd64 7.88.1-10+deb12u15 ii \n",
      install: "100\nE: Version '7.0' for 'curl' was not found\n",
    });
    const out = await installer.rollback!(ref("curl", "7.0"), f.opts());
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, toVersion: "7.0", reason: "E: Version '7.0' for 'curl' was not found" });
  });

  it("reports a lock held past its wait as the failure of every package", async () => {
    const f = await fake("locked", {
      before: "curl amd64 1 ii \n",
      after: "curl amd64 1 ii \n",
      install: "100\nE: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)\n",
    });
    const out = await installer.install([ref("curl")], f.opts());
    expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
    expect(out.packages[0]!.reason).toMatch(/Could not get lock \/var\/lib\/dpkg\/lock-frontend/);
  });

  it("refuses without root, running nothing", async () => {
    const f = await fake("not-root", { before: "", after: "", install: "0\n" });
    const out = await installer.install([ref("curl")], f.opts({ isRoot: false }));
    expect(out.error).toBe("installing with apt needs root; run the agent as root");
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "installing with apt needs root" });
    expect(await f.argv()).toEqual([]);
  });

  it("simulates with the same options the install will use", async () => {
    const f = await fake("simulate", { before: "", after: "", install: "0\n", simulate: NOBLE_UPGRADE_WITH_DEPENDENCIES });
    const sim = await installer.dryRun!([ref("curl"), ref("libssl3t64")], f.opts());
    expect(sim.error).toBeUndefined();
    expect(sim.changes).toHaveLength(4);
    expect((await f.argv())[0]).toEqual(["-s", "-q", "-o", "Debug::NoLocking=1", "install", "--only-upgrade", "--", "curl", "libssl3t64"]);
  });

  it("is killed at its time limit and says so", async () => {
    const root = path.join(dir, "hung");
    await mkdir(root);
    await writeFile(path.join(root, "apt-get"), "#!/bin/sh\nexec sleep 30\n");
    await writeFile(path.join(root, "dpkg-query"), "#!/bin/sh\necho 'curl amd64 7.88.1-1 ii '\n");
    await chmod(path.join(root, "apt-get"), 0o755);
    await chmod(path.join(root, "dpkg-query"), 0o755);
    const started = Date.now();
    const out = await installer.install([ref("curl")], { timeoutMs: 1500, env: { PATH: `${root}:/usr/bin:/bin` }, isRoot: true, holds: new Set() });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out.error).toMatch(/^apt-get install timed out after \ds$/);
    expect(out.output[0]!.timedOut).toBe(true);
    expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
  });
});

describe("apt installer on this machine (simulation only)", () => {
  const opts: InstallOptions = { timeoutMs: 120_000, env: process.env, isRoot: process.getuid?.() === 0, holds: new Set() };
  const installer = createAptInstaller();

  it("simulates the first pending update the real apt offers, or nothing when all is current", async () => {
    const scan = await scanApt({ refresh: false, timeoutMs: 120_000, env: process.env, isRoot: opts.isRoot });
    const first = scan.updates[0];
    const refs = first ? [create(PackageRefSchema, { source: "apt", name: first.name, architecture: first.architecture })] : [];
    const sim = await installer.dryRun!(refs, opts);
    expect(sim.error).toBeUndefined();
    expect(sim.output[0]!.exitCode).toBe(0);
    if (first) {
      expect(sim.changes).toContainEqual(expect.objectContaining({
        kind: PackageChangeKind.UPGRADE,
        name: first.name,
        fromVersion: first.currentVersion,
        toVersion: first.availableVersion,
      }));
    } else {
      expect(sim.changes).toEqual([]);
    }
  });

  it("fails a simulation of a package that does not exist, with apt's words", async () => {
    const sim = await installer.dryRun!([create(PackageRefSchema, { source: "apt", name: "redflag-no-such-package" })], opts);
    expect(sim.changes).toEqual([]);
    expect(sim.error).toMatch(/E: Unable to locate package redflag-no-such-package/);
  });
});

// Recorded on Debian 12 (LC_ALL=C apt-cache policy curl / libc6).
const POLICY_CURL = readFileSync(path.join(import.meta.dirname, "testdata", "apt-cache-policy-curl.txt"), "utf8");
const POLICY_LIBC6 = readFileSync(path.join(import.meta.dirname, "testdata", "apt-cache-policy-libc6.txt"), "utf8");

describe("apt rollback versions", () => {
  it("offers the older versions a repository still lists, newest first, never the newer ones", () => {
    expect(parseAptPolicy(POLICY_CURL)).toEqual({
      installed: "7.88.1-10+deb12u14",
      older: [{ version: "7.88.1-10+deb12u5", description: "from bookworm-security" }],
    });
    // The installed version is also the newest: everything below it.
    expect(parseAptPolicy(POLICY_LIBC6)).toEqual({ installed: "2.36-9+deb12u14", older: [{ version: "2.36-9+deb12u7", description: "from bookworm-security" }] });
  });

  it("offers nothing only dpkg remembers, and nothing for a package that is not installed", () => {
    const stale = POLICY_CURL.replace("500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages", "100 /var/lib/dpkg/status");
    expect(parseAptPolicy(stale).older).toEqual([]);
    const none = "hello:\n  Installed: (none)\n  Candidate: 2.10-3\n  Version table:\n     2.10-3 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n";
    expect(parseAptPolicy(none)).toEqual({ installed: "", older: [] });
    expect(parseAptPolicy("")).toEqual({ installed: "", older: [] });
  });

  it("asks apt-cache with the name after --, and the listed version rolls back as printed", async () => {
    const t = await fakeTools("apt-versions", { "apt-cache": printFile("policy.out") }, { "policy.out": POLICY_CURL });
    try {
      const installer = createAptInstaller({ rebootCheck: async () => false });
      const opts: InstallOptions = { timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set() };
      const out = await installer.versions!(create(PackageRefSchema, { source: "apt", name: "curl", architecture: "amd64" }), opts);
      expect(out.error).toBeUndefined();
      expect(out.installed).toBe("7.88.1-10+deb12u14");
      expect(out.versions.map((v) => [v.version, v.description])).toEqual([["7.88.1-10+deb12u5", "from bookworm-security"]]);
      expect(await t.calls("apt-cache")).toEqual([["policy", "--", "curl:amd64"]]);
      expect(out.output[0]!.argv.slice(1)).toEqual(["policy", "--", "curl:amd64"]);
    } finally {
      await removeFakeTools(t);
    }
  });
});

describe("apt rollback versions on this machine", () => {
  it("lists what the real apt-cache offers for an installed package", async () => {
    const installer = createAptInstaller();
    const out = await installer.versions!(create(PackageRefSchema, { source: "apt", name: "bash" }), { timeoutMs: 60_000, env: process.env, isRoot: false, holds: new Set() });
    expect(out.error).toBeUndefined();
    expect(out.installed).toMatch(/^\d/);
    for (const v of out.versions) expect(v.version).not.toBe(out.installed);
  });
});

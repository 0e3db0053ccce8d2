import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import { access, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { cachedVersions, createPacmanInstaller, findCachedPackage, pacmanReasonFor, parsePrintTargets } from "./install.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

describe("pacman helpers", () => {
  it("reads --print targets", () => {
    expect(parsePrintTargets("openssl 3.4.0-2\nlibnghttp3 1.6.0-1\n:: warning\n")).toEqual([
      { name: "openssl", version: "3.4.0-2" },
      { name: "libnghttp3", version: "1.6.0-1" },
    ]);
  });

  it("finds pacman's error about one package", () => {
    const out = "error: target not found: nosuch\nerror: failed to commit transaction (conflicting files)\nerror: openssl: signature from \"x\" is invalid\n";
    expect(pacmanReasonFor("nosuch", out)).toBe("error: target not found: nosuch");
    expect(pacmanReasonFor("openssl", out)).toBe('error: openssl: signature from "x" is invalid');
    expect(pacmanReasonFor("nosu", out)).toBeUndefined();
  });
});

describe("pacman installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "pacman", name, version });
  // pacman -Q answers from q.before until a transaction ran, then from q.after.
  const tools = async (transaction: string, files: Record<string, string>, extra: Record<string, string> = {}) => {
    const t = await fakeTools(
      "pacman-install",
      {
        pacman: `case "$1" in -Q) if [ -e "$D/ran" ]; then ${printFile("q.after")}; else ${printFile("q.before")}; fi; exit 0;; -S) case "$*" in *--print*) ${printFile("print.out")}; exit 0;; esac;; esac\n${transaction}`,
        ...extra,
      },
      { "q.before": "", "q.after": "", "print.out": "", ...files },
    );
    made.push(t);
    return t;
  };
  const installer = createPacmanInstaller();

  it("previews with --print, classifying upgrades, new dependencies and downgrades", async () => {
    const t = await tools("exit 1", { "print.out": "openssl 3.4.0-2\nlibnghttp3 1.6.0-1\nca-certificates 20240101-1\n", "q.before": "openssl 3.4.0-1\nca-certificates 20241010-1\n" }, {
      vercmp: 'case "$1 $2" in "20240101-1 20241010-1") echo -1;; *) echo 1;; esac',
    });
    const sim = await installer.dryRun!([ref("openssl")], opts(t, { holds: new Set(["linux", "glibc"]) }));
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "openssl", "3.4.0-1", "3.4.0-2"],
      [PackageChangeKind.INSTALL, "libnghttp3", "", "1.6.0-1"],
      [PackageChangeKind.DOWNGRADE, "ca-certificates", "20241010-1", "20240101-1"],
    ]);
    expect((await t.calls("pacman")).find((a) => a[0] === "-S")).toEqual(["-S", "--print", "--print-format", "%n %v", "--needed", "--noconfirm", "--ignore", "linux,glibc", "--", "openssl"]);
  });

  it("installs from the current sync databases (no -y) and reports each package", async () => {
    const t = await tools(': > "$D/ran"; exit 0', { "q.before": "openssl 3.4.0-1\nlinux 6.11.8.arch1-1\n", "q.after": "openssl 3.4.0-2\nlinux 6.11.9.arch1-1\n" });
    const out = await installer.install([ref("openssl"), ref("linux")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["openssl", PackageResultState.INSTALLED, "3.4.0-1", "3.4.0-2"],
      ["linux", PackageResultState.INSTALLED, "6.11.8.arch1-1", "6.11.9.arch1-1"],
    ]);
    expect(out.rebootRequired).toBe(true);
    expect((await t.calls("pacman")).find((a) => a[0] === "-S")).toEqual(["-S", "--needed", "--noconfirm", "--", "openssl", "linux"]);
  });

  it("fails what pacman cannot find, with its words", async () => {
    // Installed, but in no sync database (built from the AUR, say).
    const t = await tools('echo "error: target not found: nosuch" >&2; exit 1', { "q.before": "nosuch 1.0-1\n", "q.after": "nosuch 1.0-1\n" });
    const out = await installer.install([ref("nosuch")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "error: target not found: nosuch" });
  });

  it("never installs a package or group the host does not have, nor rolls one back from the cache", async () => {
    const t = await tools(': > "$D/ran"; exit 0', { "q.before": "openssl 3.4.0-1\n", "q.after": "openssl 3.4.0-2\n" });
    const out = await installer.install([ref("base-devel"), ref("openssl"), ref("nmap")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["base-devel", PackageResultState.SKIPPED, NOT_INSTALLED],
      ["openssl", PackageResultState.INSTALLED, ""],
      ["nmap", PackageResultState.SKIPPED, NOT_INSTALLED],
    ]);
    expect((await t.calls("pacman")).find((a) => a[0] === "-S")).toEqual(["-S", "--needed", "--noconfirm", "--", "openssl"]);

    const cached = await tools("exit 0", { "q.before": "openssl 3.4.0-2\n" });
    const cache = path.join(cached.dir, "cache");
    await mkdir(cache);
    await writeFile(path.join(cache, "nmap-7.95-1-x86_64.pkg.tar.zst"), "downloaded, never installed");
    const back = await createPacmanInstaller({ cacheDirs: [cache] }).rollback!(ref("nmap", "7.95-1"), opts(cached));
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect((await cached.calls("pacman")).some((a) => a[0] === "-U")).toBe(false);
  });

  it("rolls back from the package cache, and says when the version is not there", async () => {
    const t = await tools(': > "$D/ran"; exit 0', { "q.before": "openssl 3.4.0-2\n", "q.after": "openssl 3.4.0-1\n" });
    const cache = path.join(t.dir, "cache");
    await mkdir(cache);
    await writeFile(path.join(cache, "openssl-3.4.0-1-x86_64.pkg.tar.zst"), "pkg");
    await writeFile(path.join(cache, "openssl-3.4.0-1-x86_64.pkg.tar.zst.sig"), "sig");
    await writeFile(path.join(cache, "openssl-1.1-1.1.1w-1-x86_64.pkg.tar.zst"), "other package");
    expect(await findCachedPackage([cache], "openssl", "3.4.0-1")).toBe(path.join(cache, "openssl-3.4.0-1-x86_64.pkg.tar.zst"));
    expect(await findCachedPackage([cache], "openssl", "1.1")).toBeUndefined();

    const withCache = createPacmanInstaller({ cacheDirs: [cache] });
    const out = await withCache.rollback!(ref("openssl", "3.4.0-1"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "3.4.0-2", toVersion: "3.4.0-1" });
    expect((await t.calls("pacman")).find((a) => a[0] === "-U")).toEqual(["-U", "--noconfirm", "--", path.join(cache, "openssl-3.4.0-1-x86_64.pkg.tar.zst")]);

    const missing = await withCache.rollback!(ref("openssl", "3.3.0-1"), opts(t));
    expect(missing.packages[0]!.reason).toBe(`version 3.3.0-1 of openssl is not in the package cache (${cache})`);
  });

  describe("from the AUR", () => {
    const SRCINFO = [
      "pkgbase = yay-bin",
      "\tpkgver = 12.4.2",
      "\tpkgrel = 1",
      "\tarch = x86_64",
      "\tdepends = pacman>6.1",
      "\tdepends = git",
      "\tmakedepends_x86_64 = curl",
      "",
      "pkgname = yay-bin",
      "",
    ].join("\n");
    // pacman -Qqm lists yay-bin as foreign; -T names the dependencies the host lacks.
    const aurTools = async (opts: { srcinfo?: string; makepkg?: string; missing?: string; depsInstall?: string; user?: boolean } = {}) => {
      const t = await fakeTools(
        "pacman-aur",
        {
          pacman: [
            'case "$1" in',
            '  -Q) if [ -e "$D/ran" ]; then echo "yay-bin 12.4.2-1"; else echo "yay-bin 12.4.1-1"; fi; exit 0;;',
            '  -Qqm) echo yay-bin; exit 0;;',
            `  -T) ${opts.missing ? `printf '%s\\n' ${opts.missing}; exit 127` : "exit 0"};;`,
            `  -S) ${opts.depsInstall ?? "exit 0"};;`,
            '  -U) : > "$D/ran"; exit 0;;',
            "esac",
            "exit 1",
          ].join("\n"),
          runuser: 'shift 3; exec "$@"',
          getent: opts.user === false ? "exit 2" : 'echo "redflag-aur:x:970:970::$D/home:/usr/bin/nologin"',
          git: `case "$1" in clone) mkdir -p "$D/home" && mkdir "$6" && exit 0;; -C) ${printFile("srcinfo")}; exit 0;; esac; exit 1`,
          makepkg: opts.makepkg ?? ': > "$PKGDEST/yay-bin-12.4.2-1-x86_64.pkg.tar.zst"',
        },
        { srcinfo: opts.srcinfo ?? SRCINFO },
      );
      made.push(t);
      return t;
    };
    const installer = createPacmanInstaller({ arch: "x86_64" });
    const aurOpts = (t: FakeTools): InstallOptions => ({ timeoutMs: 10_000, env: t.env(true), isRoot: true, holds: new Set() });

    it("builds as the unprivileged build user, installs the result with pacman -U, and cleans up", async () => {
      const t = await aurTools({ missing: "curl" });
      const out = await installer.install([ref("yay-bin", "12.4.2-1")], aurOpts(t));
      expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([["yay-bin", PackageResultState.INSTALLED, "12.4.1-1", "12.4.2-1", ""]]);
      const git = await t.calls("git");
      expect(git[0]!.slice(0, 5)).toEqual(["clone", "--depth", "1", "--", "https://aur.archlinux.org/yay-bin.git"]);
      const buildDir = git[0]![5]!;
      expect(buildDir).toMatch(new RegExp(`^${t.dir}/home/build-yay-bin-[0-9a-f]{12}$`));
      // git and makepkg ran through runuser as redflag-aur; pacman ran as the agent.
      expect((await t.calls("runuser")).map((a) => a.slice(0, 3))).toEqual([
        ["-u", "redflag-aur", "--"],
        ["-u", "redflag-aur", "--"],
        ["-u", "redflag-aur", "--"],
      ]);
      expect((await t.calls("makepkg"))[0]).toEqual(["--dir", buildDir, "--noconfirm", "--nodeps", "--cleanbuild", "--clean", "--force"]);
      const pacman = await t.calls("pacman");
      expect(pacman.find((a) => a[0] === "-T")).toEqual(["-T", "--", "pacman>6.1", "git", "curl"]);
      expect(pacman.find((a) => a[0] === "-S")).toEqual(["-S", "--needed", "--asdeps", "--noconfirm", "--", "curl"]);
      expect(pacman.find((a) => a[0] === "-U")).toEqual(["-U", "--noconfirm", "--", `${buildDir}/yay-bin-12.4.2-1-x86_64.pkg.tar.zst`]);
      await expect(access(buildDir)).rejects.toThrow();
    });

    it("refuses a version the AUR no longer has, and names the build user when it is missing", async () => {
      const moved = await aurTools();
      const stale = await installer.install([ref("yay-bin", "12.4.1-2")], aurOpts(moved));
      expect(stale.packages[0]).toMatchObject({
        state: PackageResultState.FAILED,
        reason: "the AUR now has yay-bin 12.4.2-1, not the approved 12.4.1-2: scan again and approve the new version",
      });
      expect(await moved.calls("makepkg")).toEqual([]);

      const noUser = await aurTools({ user: false });
      const out = await installer.install([ref("yay-bin", "12.4.2-1")], aurOpts(noUser));
      expect(out.packages[0]!.reason).toBe(
        "cannot build from the AUR: AUR builds are not enabled on this host: `sudo redflag-agent install --aur` enables them (it creates redflag-aur, the unprivileged user that builds them)",
      );
      expect(await noUser.calls("git")).toEqual([]);
    });

    it("reports a failed build and a dependency that is itself in the AUR, installing nothing", async () => {
      const broken = await aurTools({ makepkg: 'echo "==> ERROR: A failure occurred in build()." >&2; exit 4' });
      const out = await installer.install([ref("yay-bin", "12.4.2-1")], aurOpts(broken));
      expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "makepkg failed (exit status 4): ==> ERROR: A failure occurred in build()." });
      expect((await broken.calls("pacman")).some((a) => a[0] === "-U")).toBe(false);

      const aurDep = await aurTools({ missing: "yay-helper-lib", depsInstall: 'echo "error: target not found: yay-helper-lib" >&2; exit 1' });
      const dep = await installer.install([ref("yay-bin", "12.4.2-1")], aurOpts(aurDep));
      expect(dep.packages[0]!.reason).toBe(
        "its dependencies yay-helper-lib could not be installed from the sync databases (one from the AUR must be installed first): pacman -S --asdeps failed (exit status 1): error: target not found: yay-helper-lib",
      );
      expect(await aurDep.calls("makepkg")).toEqual([]);
    });

    it("previews an AUR package as one upgrade to the approved version", async () => {
      const t = await aurTools();
      const sim = await installer.dryRun!([ref("yay-bin", "12.4.2-1")], aurOpts(t));
      expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "yay-bin", "12.4.1-1", "12.4.2-1"]]);
    });
  });
});

// File names as an Arch package cache holds them (ls /var/cache/pacman/pkg): packages, their
// signatures, and packages whose names start with the same word.
const CACHE_LISTING = readFileSync(path.join(import.meta.dirname, "testdata", "cache-listing.txt"), "utf8").split("\n").filter(Boolean);

describe("pacman rollback versions", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));

  it("offers the older package files in the cache, newest first, and each rolls back as listed", async () => {
    const t = await fakeTools("pacman-versions", {
      pacman: `case "$1" in -Q) if [ -e "$D/ran" ]; then echo "openssl 3.3.10-1"; else echo "openssl 3.4.0-1"; fi; exit 0;; -U) : > "$D/ran"; exit 0;; esac; exit 1`,
    });
    made.push(t);
    const cache = path.join(t.dir, "cache");
    await mkdir(cache);
    for (const name of CACHE_LISTING) await writeFile(path.join(cache, name), "pkg");
    expect(await cachedVersions([cache], "openssl")).toEqual(["3.4.1-1", "3.4.0-1", "3.3.10-1", "3.3.2-1"]);
    const installer = createPacmanInstaller({ cacheDirs: [cache] });
    const opts: InstallOptions = { timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set() };
    const out = await installer.versions!(create(PackageRefSchema, { source: "pacman", name: "openssl" }), opts);
    expect(out).toMatchObject({ installed: "3.4.0-1" });
    expect(out.error).toBeUndefined();
    // Not the installed one, not the newer one only downloaded, not openssl-1.1 or python-openssl.
    expect(out.versions.map((v) => [v.version, v.description])).toEqual([
      ["3.3.10-1", "in the package cache"],
      ["3.3.2-1", "in the package cache"],
    ]);
    const back = await installer.rollback!(create(PackageRefSchema, { source: "pacman", name: "openssl", version: out.versions[0]!.version }), opts);
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "3.4.0-1", toVersion: "3.3.10-1" });
    expect((await t.calls("pacman")).find((a) => a[0] === "-U")).toEqual(["-U", "--noconfirm", "--", path.join(cache, "openssl-3.3.10-1-x86_64.pkg.tar.zst")]);
  });

  it("offers nothing for a package that is not installed, and needs no root to look", async () => {
    const t = await fakeTools("pacman-versions-none", { pacman: `echo "error: package 'nmap' was not found" >&2; exit 1` });
    made.push(t);
    const out = await createPacmanInstaller({ cacheDirs: [t.dir] }).versions!(create(PackageRefSchema, { source: "pacman", name: "nmap" }), { timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set() });
    expect(out).toMatchObject({ installed: "", versions: [] });
    expect(out.error).toBeUndefined();
    expect(await t.calls("pacman")).toEqual([["-Q", "--", "nmap"]]);
  });
});

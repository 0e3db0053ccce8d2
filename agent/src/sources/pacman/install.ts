import type { PackageRef } from "@redflag/gen/command_pb";
import { describeFailure, which, type ProcessResult } from "../../run-process.ts";
import { C_LOCALE } from "../scan-common.ts";
import { PACMAN, PACMAN_REBOOT_PACKAGES } from "./scan.ts";
import { installedOnly, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput, VersionsOutcome } from "../types.ts";
import { compareEvr } from "../vercmp.ts";

import { buildAndInstall } from "./aur.ts";
import { cachedVersions, DEFAULT_CACHE_DIR, findCachedPackage } from "./cache.ts";

export { cachedVersions, DEFAULT_CACHE_DIR, findCachedPackage };

// `pacman -Q` lines: "name version".
export function parsePacmanQuery(text: string): Map<string, string> {
  const versions = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^(\S+) (\S+)$/.exec(line.trim());
    if (m) versions.set(m[1]!, m[2]!);
  }
  return versions;
}

// `pacman -S --print --print-format "%n %v"`: every package the transaction would install,
// dependencies included (pacman prints no removals here; replacements show as installs).
export function parsePrintTargets(text: string): { name: string; version: string }[] {
  const targets: { name: string; version: string }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-z0-9@._+][a-z0-9@._+-]*) ([A-Za-z0-9._+:~-]+)$/.exec(line.trim());
    if (m) targets.push({ name: m[1]!, version: m[2]! });
  }
  return targets;
}

// "error: target not found: foo" and friends, for one package.
export function pacmanReasonFor(name: string, output: string): string | undefined {
  const escaped = name.replace(/[.+]/g, "\\$&");
  const re = new RegExp(`^error: .*(target not found: ${escaped}$|\\b${escaped}:|'${escaped}')`);
  return output.split("\n").map((l) => l.trim()).find((l) => re.test(l));
}

// Node's name for this CPU as pacman's .SRCINFO spells it.
export const pacmanArch = (arch: string = process.arch) => ({ x64: "x86_64", arm64: "aarch64", ia32: "i686", arm: "armv7h" })[arch] ?? arch;

export interface PacmanInstallerDeps {
  // The CPU as .SRCINFO names it (x86_64, aarch64): this host's unless a test says otherwise.
  arch?: string;
  // Where rollback looks for old packages when pacman-conf is missing (tests).
  cacheDirs?: string[];
}

export function createPacmanInstaller(deps: PacmanInstallerDeps = {}): Installer {
  const session = (opts: InstallOptions) => {
    const t = toolSession(opts, C_LOCALE);
    // Held packages are ignored by pacman itself: a dependency on one fails the transaction.
    return { ...t, ignore: opts.holds.size > 0 ? ["--ignore", [...opts.holds].join(",")] : [] };
  };
  const installed = async (s: ReturnType<typeof session>, pacman: string, names: readonly string[]) =>
    names.length === 0 ? new Map<string, string>() : parsePacmanQuery((await s.run([pacman, "-Q", "--", ...new Set(names)], false)).stdout);

  // Installed packages that are in no sync database: built from the AUR (or by hand), so
  // `pacman -S` cannot upgrade them. `pacman -Qqm` exits 1 when there are none.
  const foreign = async (s: ReturnType<typeof session>, pacman: string) => {
    const res = await s.run([pacman, "-Qqm"], false);
    return new Set(res.exitCode === 0 ? res.stdout.split("\n").map((l) => l.trim()).filter(Boolean) : []);
  };

  const denied = (refs: readonly PackageRef[], s: { output: ToolOutput[] }): InstallOutcome => ({
    packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { reason: "installing with pacman needs root" })),
    output: s.output,
    rebootRequired: false,
    error: "installing with pacman needs root; run the agent as root",
  });

  const report = (refs: readonly PackageRef[], before: Map<string, string>, after: Map<string, string>, result: ProcessResult, what: string): Omit<InstallOutcome, "output"> => {
    const failedAll = result.exitCode !== 0 ? describeFailure(what, result) : undefined;
    const text = `${result.stdout}\n${result.stderr}`;
    const packages: PackageResult[] = refs.map((ref) => {
      const from = before.get(ref.name);
      const to = after.get(ref.name);
      if (to !== undefined && to !== from && (!ref.version || to === ref.version)) return packageResult(ref, PackageResultState.INSTALLED, { from, to });
      const reason = pacmanReasonFor(ref.name, text);
      if (failedAll || reason) return packageResult(ref, PackageResultState.FAILED, { from, to: ref.version || to, reason: reason ?? failedAll });
      return packageResult(ref, PackageResultState.SKIPPED, { from, to, reason: "already up to date" });
    });
    const rebootRequired = packages.some((p) => p.state === PackageResultState.INSTALLED && PACMAN_REBOOT_PACKAGES.test(p.name));
    return { packages, rebootRequired, error: failedAll };
  };

  // Where pacman keeps the packages it installed (pacman-conf CacheDir).
  const cacheDirsOf = async (s: ReturnType<typeof session>): Promise<string[]> => {
    if (deps.cacheDirs) return deps.cacheDirs;
    const conf = await which("pacman-conf", s.env.PATH ?? "");
    const res = conf ? await s.run([conf, "CacheDir"], false) : undefined;
    return res?.exitCode === 0 ? res.stdout.split("\n").map((l) => l.trim()).filter(Boolean) : [DEFAULT_CACHE_DIR];
  };

  return {
    source: PACMAN,
    present: async (env) => (await which("pacman", env.PATH ?? "")) !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const pacman = await which("pacman", s.env.PATH ?? "");
      if (!pacman) return { changes: [], output: s.output, error: "pacman is not installed on this host" };
      // AUR packages are built, not taken from the sync databases: each is one upgrade to the
      // approved version (its build dependencies are known only once its PKGBUILD is fetched).
      const aur = await foreign(s, pacman);
      const built = packages.filter((p) => aur.has(p.name));
      const builtNow = await installed(s, pacman, built.map((p) => p.name));
      const aurChanges = built.map((p) => packageChange(PackageChangeKind.UPGRADE, PACMAN, p.name, { from: builtNow.get(p.name), to: p.version }));
      const fromRepos = packages.filter((p) => !aur.has(p.name));
      if (fromRepos.length === 0) return { changes: aurChanges, output: s.output };
      const res = await s.run([pacman, "-S", "--print", "--print-format", "%n %v", "--needed", "--noconfirm", ...s.ignore, "--", ...fromRepos.map((p) => p.name)]);
      if (res.exitCode !== 0) return { changes: [], output: s.output, error: describeFailure("pacman -S --print", res) };
      const targets = parsePrintTargets(res.stdout);
      const current = await installed(s, pacman, targets.map((t) => t.name));
      const vercmp = await which("vercmp", s.env.PATH ?? "");
      const changes: PackageChange[] = [];
      for (const t of targets) {
        const from = current.get(t.name);
        let kind = from ? PackageChangeKind.UPGRADE : PackageChangeKind.INSTALL;
        if (from && vercmp) {
          const cmp = await s.run([vercmp, t.version, from], false);
          if (cmp.stdout.trim().startsWith("-")) kind = PackageChangeKind.DOWNGRADE;
        }
        changes.push(packageChange(kind, PACMAN, t.name, { from, to: t.version }));
      }
      return { changes: [...changes, ...aurChanges], output: s.output };
    },

    // Named packages from the sync databases as they are (no -y: the same view the scan and
    // the dry run had), with their dependencies. Arch supports only whole-system upgrades
    // well; "everything pending" installs the full list, which is one.
    async install(packages, opts) {
      const s = session(opts);
      const pacman = await which("pacman", s.env.PATH ?? "");
      if (!pacman) return { packages: [], output: s.output, rebootRequired: false, error: "pacman is not installed on this host" };
      if (!opts.isRoot) return denied(packages, s);
      const names = packages.map((p) => p.name);
      const before = await installed(s, pacman, names);
      // `pacman -S` installs any package or group of the sync databases: only what is
      // installed goes to it.
      const { allowed, skipped } = installedOnly(packages, (ref) => before.has(ref.name), opts);
      if (allowed.length === 0) return { packages: packages.map((p) => skipped.get(p)!), output: s.output, rebootRequired: false };
      // Packages from the AUR are built as the unprivileged build user, one at a time (aur.ts).
      const aur = await foreign(s, pacman);
      const fromRepos = allowed.filter((p) => !aur.has(p.name));
      const results = new Map<PackageRef, PackageResult>();
      let done: Omit<InstallOutcome, "output" | "packages"> = { rebootRequired: false };
      if (fromRepos.length > 0) {
        const res = await s.run([pacman, "-S", "--needed", "--noconfirm", ...s.ignore, "--", ...fromRepos.map((p) => p.name)]);
        const after = await installed(s, pacman, names);
        const repo = report(fromRepos, before, after, res, "pacman -S");
        fromRepos.forEach((ref, i) => results.set(ref, repo.packages[i]!));
        done = { rebootRequired: repo.rebootRequired, error: repo.error };
      }
      for (const ref of allowed.filter((p) => aur.has(p.name))) {
        results.set(ref, (await buildAndInstall(s, pacman, ref, before.get(ref.name), { arch: deps.arch ?? pacmanArch() })).result);
      }
      return { ...done, packages: packages.map((p) => skipped.get(p) ?? results.get(p)!), output: s.output };
    },

    // From the package cache: pacman keeps the versions it installed until `paccache` prunes them.
    async rollback(pkg, opts) {
      const s = session(opts);
      const pacman = await which("pacman", s.env.PATH ?? "");
      if (!pacman) return { packages: [], output: s.output, rebootRequired: false, error: "pacman is not installed on this host" };
      if (!opts.isRoot) return denied([pkg], s);
      const cacheDirs = await cacheDirsOf(s);
      // The cache may hold packages that were only downloaded: a rollback is of what is installed.
      const current = await installed(s, pacman, [pkg.name]);
      const { skipped } = installedOnly([pkg], (ref) => current.has(ref.name), {});
      if (skipped.size > 0) return { packages: [...skipped.values()], output: s.output, rebootRequired: false };
      const file = await findCachedPackage(cacheDirs, pkg.name, pkg.version);
      if (!file) {
        return {
          packages: [packageResult(pkg, PackageResultState.FAILED, { to: pkg.version, reason: `version ${pkg.version} of ${pkg.name} is not in the package cache (${cacheDirs.join(", ")})` })],
          output: s.output,
          rebootRequired: false,
        };
      }
      const before = await installed(s, pacman, [pkg.name]);
      const res = await s.run([pacman, "-U", "--noconfirm", "--", file]);
      const after = await installed(s, pacman, [pkg.name]);
      return { ...report([pkg], before, after, res, "pacman -U"), output: s.output };
    },

    // The older package files in the cache: exactly what `rollback` installs with pacman -U.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const pacman = await which("pacman", s.env.PATH ?? "");
      if (!pacman) return { installed: "", versions: [], output: s.output, error: "pacman is not installed on this host" };
      const installedNow = (await installed(s, pacman, [pkg.name])).get(pkg.name) ?? "";
      if (!installedNow) return { installed: "", versions: [], output: s.output };
      const dirs = await cacheDirsOf(s);
      const older = (await cachedVersions(dirs, pkg.name)).filter((v) => compareEvr(v, installedNow, true) < 0);
      return { installed: installedNow, versions: rollbackVersions(older.map((version) => ({ version, description: "in the package cache" }))), output: s.output };
    },
  };
}

export const pacmanInstaller: Installer = createPacmanInstaller();

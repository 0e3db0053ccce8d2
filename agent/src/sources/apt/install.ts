import type { PackageRef } from "@redflag/gen/command_pb";
import { describeFailure, which } from "../../run-process.ts";
import { APT, parseAptListUpgradable } from "./scan.ts";
import { rebootRequired as hostRebootRequired } from "../../system.ts";
import { installedOnly, needsRoot, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, VersionsOutcome } from "../types.ts";

// Never a prompt, never a pager, never a question from needrestart or apt-listchanges; keep
// the configuration files the admin changed (confold) and take the maintainer's for the rest.
const APT_ENV = {
  LC_ALL: "C",
  LANG: "C",
  LANGUAGE: "",
  DEBIAN_FRONTEND: "noninteractive",
  NEEDRESTART_MODE: "a",
  APT_LISTCHANGES_FRONTEND: "none",
};
const DPKG_OPTIONS = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"];
// Wait this long for another apt/dpkg (unattended-upgrades, a person) to let go of the lock.
const LOCK_WAIT_SECONDS = 120;
const APT_NOISE = /does not have a stable CLI interface/;

// Updates that need a restart to take effect (same rule as the scanner).
const REBOOT_PACKAGES = /^(linux-image-.*|linux-(generic|virtual|aws|azure|gcp|oracle|kvm|lowlatency)(-.*)?|.*-microcode|libc6|dbus)$/;

// "name", "name:arch", "name=version", "name:arch=version" as apt-get takes them.
export function aptSpec(ref: Pick<PackageRef, "name" | "version" | "architecture">): string {
  const arch = ref.architecture && ref.architecture !== "all" ? `:${ref.architecture}` : "";
  return `${ref.name}${arch}${ref.version ? `=${ref.version}` : ""}`;
}

// `apt-get -s` (simulate) output, LC_ALL=C:
//   Inst libssl3 [3.0.2-0ubuntu1.15] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-security [amd64])
//   Inst hello (2.10-3 Debian:12/stable [amd64])        ← new package (no installed version)
//   Remv oldpkg [1.2-1]                                  ← removal
// Downgrades look like upgrades in the Inst line; apt lists them under "DOWNGRADED".
const INST = /^Inst (\S+?)(?::([a-z0-9-]+))? (?:\[(\S+)\] )?\((\S+) [^[]*\[([a-z0-9-]+)\]\)/;
const REMV = /^Remv (\S+?)(?::([a-z0-9-]+))?(?: \[(\S+)\])?\s*$/;

export function parseAptSimulation(text: string): PackageChange[] {
  const downgraded = sectionNames(text, /^The following packages will be DOWNGRADED:/);
  const changes: PackageChange[] = [];
  for (const line of text.split("\n")) {
    const inst = INST.exec(line);
    if (inst) {
      const [, name, nameArch, from, to, arch] = inst as unknown as [string, string, string | undefined, string | undefined, string, string];
      const kind = !from
        ? PackageChangeKind.INSTALL
        : downgraded.has(name) || (nameArch && downgraded.has(`${name}:${nameArch}`))
          ? PackageChangeKind.DOWNGRADE
          : PackageChangeKind.UPGRADE;
      changes.push(packageChange(kind, APT, name, { from, to, architecture: nameArch ?? arch }));
      continue;
    }
    const remv = REMV.exec(line);
    if (remv) changes.push(packageChange(PackageChangeKind.REMOVE, APT, remv[1]!, { from: remv[3], architecture: remv[2] }));
  }
  return changes;
}

// The indented name list under one of apt's "The following packages will be …:" headers.
function sectionNames(text: string, header: RegExp): Set<string> {
  const names = new Set<string>();
  let inside = false;
  for (const line of text.split("\n")) {
    if (header.test(line)) inside = true;
    else if (inside && /^\s+\S/.test(line)) for (const n of line.trim().split(/\s+/)) names.add(n);
    else inside = false;
  }
  return names;
}

// `apt-cache policy <name>` (LC_ALL=C), one block per package:
//   curl:
//     Installed: 7.88.1-10+deb12u14
//     Candidate: 7.88.1-10+deb12u15
//     Version table:
//        7.88.1-10+deb12u15 500
//           500 http://deb.debian.org/debian bookworm/main amd64 Packages
//    *** 7.88.1-10+deb12u14 100
//           100 /var/lib/dpkg/status
//        7.88.1-10+deb12u5 500
//           500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
// The table is newest first and "***" marks the installed version. Older versions a repository
// still lists are what `apt-get install name=version --allow-downgrades` can go back to; one
// known only from /var/lib/dpkg/status (no repository has it any more) cannot be installed.
export function parseAptPolicy(text: string): { installed: string; older: { version: string; description: string }[] } {
  let installed = "";
  let seenInstalled = false;
  const older: { version: string; description: string; origins: string[] }[] = [];
  let current: { origins: string[] } | undefined;
  for (const line of text.split("\n")) {
    const inst = /^ {2}Installed: (\S+)$/.exec(line);
    if (inst) {
      installed = inst[1] === "(none)" ? "" : inst[1]!;
      continue;
    }
    const row = /^ (\*\*\*| {3}) (\S+) -?\d+$/.exec(line);
    if (row) {
      if (row[1] === "***") {
        seenInstalled = true;
        current = undefined;
      } else if (seenInstalled && installed) {
        current = { origins: [] };
        older.push({ version: row[2]!, description: "", origins: current.origins });
      } else {
        current = undefined;
      }
      continue;
    }
    const origin = /^ {8}-?\d+ (\S+)(?: (\S+))?/.exec(line);
    if (origin && current && origin[1] !== "/var/lib/dpkg/status") current.origins.push(origin[2] ? origin[2].replace(/\/.*$/, "") : origin[1]!);
  }
  return {
    installed,
    older: older.filter((o) => o.origins.length > 0).map((o) => ({ version: o.version, description: `from ${[...new Set(o.origins)].join(", ")}` })),
  };
}

// How parseDpkgQuery keys a ref: "name:arch", or "name" for arch-independent packages.
const dpkgKey = (ref: Pick<PackageRef, "name" | "architecture">) => (ref.architecture && ref.architecture !== "all" ? `${ref.name}:${ref.architecture}` : ref.name);

// Installed versions from `dpkg-query -W`, keyed "name" and "name:arch". Packages dpkg knows
// but that are not installed (removed, config files only) count as absent.
export function parseDpkgQuery(text: string): Map<string, string> {
  const versions = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [name, arch, version, status] = line.trim().split(/\s+/);
    if (!name || !arch || !version || !status?.startsWith("ii")) continue;
    versions.set(name, version);
    versions.set(`${name}:${arch}`, version);
  }
  return versions;
}

// The apt or dpkg line that explains why one package failed, if there is one.
export function aptReasonFor(name: string, output: string): string | undefined {
  const escaped = name.replace(/[.+]/g, "\\$&");
  const patterns = [
    new RegExp(`^E: Unable to locate package ${escaped}(:\\S+)?$`),
    new RegExp(`^E: Version '[^']*' for '${escaped}(:\\S+)?' was not found$`),
    new RegExp(`^dpkg: error processing (package|archive) ${escaped}(:\\S+)? .*$`),
    new RegExp(`^Skipping ${escaped}(:\\S+)?, it is not installed and only upgrades are requested\\.$`),
    new RegExp(`^ ${escaped}(:\\S+)? : Depends: .*$`),
  ];
  for (const line of output.split("\n")) {
    const trimmed = line.trimEnd();
    if (patterns.some((p) => p.test(trimmed))) return trimmed.trim();
  }
  return undefined;
}

// Pinned versions (a confirmed dry run's exact set) may add new packages or go back a version;
// unpinned requests are updates of what is installed, never new packages. The dry run uses the
// same options as the install it previews.
const transactionOptions = (refs: readonly PackageRef[]) =>
  refs.every((r) => r.version !== "") ? ["--allow-downgrades"] : ["--only-upgrade"];

export interface AptInstallerDeps {
  // Whether the host asks for a reboot after the transaction (default: /var/run/reboot-required).
  rebootCheck?: () => Promise<boolean>;
}

export function createAptInstaller(deps: AptInstallerDeps = {}): Installer {
  const rebootCheck = deps.rebootCheck ?? (async () => (await hostRebootRequired()).required);

  const session = (opts: InstallOptions) => toolSession(opts, APT_ENV);

  const tools = async (env: NodeJS.ProcessEnv) => {
    const path = env.PATH ?? "";
    const [aptGet, dpkgQuery, apt, aptCache] = await Promise.all(["apt-get", "dpkg-query", "apt", "apt-cache"].map((n) => which(n, path)));
    return { aptGet, dpkgQuery, apt, aptCache };
  };

  const installed = async (s: ReturnType<typeof session>, dpkgQuery: string, names: readonly string[]) => {
    if (names.length === 0) return new Map<string, string>();
    // Exit status 1 only means some names are unknown to dpkg; the rest are still printed.
    const result = await s.run([dpkgQuery, "-W", "-f=${Package} ${Architecture} ${Version} ${db:Status-Abbrev}\\n", "--", ...new Set(names)], false);
    return parseDpkgQuery(result.stdout);
  };

  // "Everything pending": what `apt list --upgradable` offers, minus the holds.
  const pending = async (s: ReturnType<typeof session>, apt: string | undefined, holds: ReadonlySet<string>) => {
    if (!apt) return { refs: [] as PackageRef[], error: "apt is not installed on this host" };
    const list = await s.run([apt, "list", "--upgradable"], false);
    if (list.exitCode !== 0) return { refs: [], error: describeFailure("apt list --upgradable", list, APT_NOISE) };
    const refs = parseAptListUpgradable(list.stdout)
      .candidates.filter((c) => !holds.has(c.name))
      .map((c) => ({ source: APT, name: c.name, version: "", architecture: c.architecture }) as PackageRef);
    return { refs, error: undefined };
  };

  const simulate = async (s: ReturnType<typeof session>, aptGet: string, specs: string[], extra: string[]) => {
    const argv = [aptGet, "-s", "-q", "-o", "Debug::NoLocking=1", "install", ...extra, "--", ...specs];
    const result = await s.run(argv);
    if (result.exitCode !== 0) return { changes: [], error: describeFailure("apt-get -s install", result, APT_NOISE), result };
    return { changes: parseAptSimulation(result.stdout), error: undefined, result };
  };

  // Installs `refs` and reports each one from dpkg's own record before and after.
  const transact = async (
    s: ReturnType<typeof session>,
    refs: readonly PackageRef[],
    extra: string[],
    opts: InstallOptions,
  ): Promise<InstallOutcome> => {
    const { aptGet, dpkgQuery } = await tools(s.env);
    if (!aptGet || !dpkgQuery) return { packages: [], output: s.output, rebootRequired: false, error: "apt-get is not installed on this host" };
    if (!opts.isRoot) return needsRoot(refs, "installing with apt", s.output);
    const names = refs.map((r) => r.name);
    const before = await installed(s, dpkgQuery, names);
    // `apt-get install` installs whatever it is named (with --allow-downgrades, without
    // --only-upgrade): only what dpkg has installed goes to it.
    const { allowed, skipped } = installedOnly(refs, (ref) => before.has(dpkgKey(ref)), opts);
    if (allowed.length === 0) return { packages: refs.map((r) => skipped.get(r)!), output: s.output, rebootRequired: false };
    const lockWait = Math.max(0, Math.min(LOCK_WAIT_SECONDS, Math.floor(s.remaining() / 1000) - 60));
    const argv = [aptGet, "install", "-y", "-q", "-o", `DPkg::Lock::Timeout=${lockWait}`, ...DPKG_OPTIONS, ...extra, "--", ...allowed.map(aptSpec)];
    const result = await s.run(argv);
    const after = await installed(s, dpkgQuery, names);
    const failedAll = result.exitCode !== 0 ? describeFailure("apt-get install", result, APT_NOISE) : undefined;
    const text = `${result.stdout}\n${result.stderr}`;
    const packages: PackageResult[] = refs.map((ref) => {
      const notInstalled = skipped.get(ref);
      if (notInstalled) return notInstalled;
      const key = dpkgKey(ref);
      const from = before.get(key) ?? before.get(ref.name);
      const to = after.get(key) ?? after.get(ref.name);
      const wanted = ref.version ? to === ref.version : to !== undefined && to !== from;
      if (wanted && to !== from) return packageResult(ref, PackageResultState.INSTALLED, { from, to });
      const reason = aptReasonFor(ref.name, text);
      if (failedAll || reason?.startsWith("E:") || reason?.startsWith("dpkg:")) {
        return packageResult(ref, PackageResultState.FAILED, { from, to: ref.version || to, reason: reason ?? failedAll });
      }
      if (reason?.startsWith("Skipping")) return packageResult(ref, PackageResultState.SKIPPED, { from, reason: "not installed; only upgrades were requested" });
      return packageResult(ref, PackageResultState.SKIPPED, { from, to, reason: "already up to date" });
    });
    const rebooting = packages.some((p) => p.state === PackageResultState.INSTALLED && REBOOT_PACKAGES.test(p.name));
    return {
      packages,
      output: s.output,
      rebootRequired: rebooting || (result.exitCode === 0 && (await rebootCheck())),
      error: failedAll,
    };
  };

  return {
    source: APT,
    present: async (env) => (await tools(env)).aptGet !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const { aptGet, apt } = await tools(s.env);
      if (!aptGet) return { changes: [], output: s.output, error: "apt-get is not installed on this host" };
      let refs = packages;
      if (refs.length === 0) {
        const all = await pending(s, apt, opts.holds);
        if (all.error) return { changes: [], output: s.output, error: all.error };
        if (all.refs.length === 0) return { changes: [], output: s.output };
        refs = all.refs;
      }
      const { changes, error } = await simulate(s, aptGet, refs.map(aptSpec), transactionOptions(refs));
      return { changes, output: s.output, error };
    },

    async install(packages, opts) {
      const s = session(opts);
      let refs = packages;
      if (refs.length === 0) {
        const { apt } = await tools(s.env);
        const all = await pending(s, apt, opts.holds);
        if (all.error) return { packages: [], output: s.output, rebootRequired: false, error: all.error };
        if (all.refs.length === 0) return { packages: [], output: s.output, rebootRequired: false };
        refs = all.refs;
      }
      return transact(s, refs, transactionOptions(refs), opts);
    },

    async rollback(pkg, opts) {
      const s = session(opts);
      return transact(s, [pkg], ["--allow-downgrades"], opts);
    },

    // Reads apt's lists as they are (no apt-get update): what `rollback` can install now.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const { aptCache } = await tools(s.env);
      if (!aptCache) return { installed: "", versions: [], output: s.output, error: "apt-cache is not installed on this host" };
      const arch = pkg.architecture && pkg.architecture !== "all" ? `:${pkg.architecture}` : "";
      const result = await s.run([aptCache, "policy", "--", `${pkg.name}${arch}`]);
      if (result.exitCode !== 0) return { installed: "", versions: [], output: s.output, error: describeFailure("apt-cache policy", result, APT_NOISE) };
      const policy = parseAptPolicy(result.stdout);
      return { installed: policy.installed, versions: policy.installed ? rollbackVersions(policy.older) : [], output: s.output };
    },
  };
}

export const aptInstaller: Installer = createAptInstaller();

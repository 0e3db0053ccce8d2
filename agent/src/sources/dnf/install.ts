import type { PackageRef } from "@redflag/gen/command_pb";
import { describeFailure } from "../../run-process.ts";
import { C_LOCALE } from "../scan-common.ts";
import { nameArch, queryRpm, RPM_ARCHES, RPM_REBOOT_PACKAGES, rpmKey } from "../rpm.ts";
import { compareEvr } from "../vercmp.ts";
import { DNF, findDnf } from "./scan.ts";
import { installedOnly, needsRoot, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, VersionsOutcome } from "../types.ts";

// "name", "name.arch", "name-version", "name-version.arch" as dnf and yum take them.
export function rpmSpec(ref: Pick<PackageRef, "name" | "version" | "architecture">): string {
  const version = ref.version ? `-${ref.version}` : "";
  return `${ref.name}${version}${ref.architecture ? `.${ref.architecture}` : ""}`;
}

const SECTIONS: [RegExp, PackageChangeKind][] = [
  [/^(Upgrading|Updating)( dependencies)?:$/, PackageChangeKind.UPGRADE],
  [/^Installing( dependencies| weak dependencies| for dependencies)?:$/, PackageChangeKind.INSTALL],
  [/^(Removing|Erasing)( dependent packages| unused dependencies| dependencies)?:$/, PackageChangeKind.REMOVE],
  [/^Downgrading( dependencies)?:$/, PackageChangeKind.DOWNGRADE],
];

// The transaction table dnf (4 and 5) and yum print before asking, as --assumeno shows it:
//   Upgrading:
//    openssl-libs      x86_64   1:3.2.2-9.fc41    updates    2.3 M
//      replacing  openssl-libs.x86_64 1:3.2.2-8.fc41        ← dnf5 only
//   Installing dependencies:
//    libfoo            x86_64   1.0-1.fc41        fedora     100 k
// A long package name wraps the rest of its row onto the next line. Sections that are not
// changes (Reinstalling, Skipping, Transaction Summary) end the current section.
export function parseDnfTransaction(text: string): PackageChange[] {
  const changes: PackageChange[] = [];
  let kind: PackageChangeKind | undefined;
  let wrapped: string | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (!line.trim()) continue;
    if (!/^\s/.test(line)) {
      kind = SECTIONS.find(([re]) => re.test(line.trim()))?.[1];
      wrapped = undefined;
      continue;
    }
    if (kind === undefined) continue;
    let tokens = line.trim().split(/\s+/);
    if (tokens[0] === "replacing" || tokens[0] === "Replacing") {
      // dnf5: the installed version this upgrade replaces.
      // "replacing curl x86_64 8.9.1-2.fc41" (dnf5) or "replacing curl.x86_64 8.9.1-2.fc41".
      const last = changes.at(-1);
      const [name, version] = RPM_ARCHES.has(tokens[2] ?? "") ? [tokens[1], tokens[3]] : [tokens[1]?.replace(/\.[^.]+$/, ""), tokens[2]];
      if (last && version && name === last.name) last.fromVersion = version;
      continue;
    }
    if (tokens.length === 1) {
      wrapped = tokens[0];
      continue;
    }
    if (wrapped) tokens = [wrapped, ...tokens];
    wrapped = undefined;
    const [name, arch, version] = tokens;
    if (!name || !arch || !version || !RPM_ARCHES.has(arch)) continue;
    changes.push(
      kind === PackageChangeKind.REMOVE
        ? packageChange(kind, DNF, name, { from: version, architecture: arch })
        : packageChange(kind, DNF, name, { to: version, architecture: arch }),
    );
  }
  return changes;
}

// The line dnf printed about one package's failure, if any.
const REASONS = [
  /No match for argument:\s*(.+)$/,
  /Unable to find a match:\s*(.+)$/,
  /Package (\S+) is already installed/,
  /Error in \S+ scriptlet in rpm package (\S+)/,
  /Problem: .*package (\S+)/,
  /Error: Package: (\S+)/,
];
export function dnfReasonFor(name: string, output: string): string | undefined {
  const escaped = name.replace(/[.+^$()[\]{}|\\*?]/g, "\\$&");
  const subject = new RegExp(`^${escaped}($|-\\d|\\.[a-z0-9_]+$|-[0-9]+:)`);
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    for (const re of REASONS) {
      const match = re.exec(line);
      if (match && match[1]!.split(/\s+/).some((s) => subject.test(s))) return line;
    }
  }
  return undefined;
}

// `dnf list --showduplicates <name>` (dnf4 and yum: "Installed Packages", dnf5: "Installed
// packages"), one row per version and repository, a long name wrapping the rest of its row:
//   Installed Packages
//   curl.x86_64          8.9.1-2.fc41          @updates
//   Available Packages
//   curl.x86_64          8.9.1-1.fc41          fedora
//   curl.x86_64          8.9.1-2.fc41          updates
// The versions older than the installed one (of its architecture, or `arch`), newest first,
// are what `dnf downgrade name-version` can go to.
export function parseDnfDuplicates(text: string, name: string, arch = ""): { installed: string; older: { version: string; description: string }[] } {
  const installed: { version: string; arch: string }[] = [];
  const available: { version: string; arch: string; repo: string }[] = [];
  let section: "installed" | "available" | undefined;
  let wrapped: string | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    if (/^Installed packages$/i.test(line)) section = "installed";
    else if (/^Available packages$/i.test(line)) section = "available";
    else if (/^\S+$/.test(line)) wrapped = line;
    else if (section) {
      const tokens = wrapped ? [wrapped, ...line.split(/\s+/)] : line.split(/\s+/);
      wrapped = undefined;
      const na = nameArch(tokens[0] ?? "");
      const version = tokens[1];
      if (!na || !version || na.name !== name || (arch && na.arch !== arch)) continue;
      if (section === "installed") installed.push({ version, arch: na.arch });
      else available.push({ version, arch: na.arch, repo: tokens[2] ?? "" });
    }
  }
  // Several installed (kernels): the newest is the one to go back from.
  const current = installed.sort((a, b) => compareEvr(b.version, a.version))[0];
  if (!current) return { installed: "", older: [] };
  const older = available
    .filter((a) => (a.arch === current.arch || a.arch === "noarch" || current.arch === "noarch") && compareEvr(a.version, current.version) < 0)
    .sort((a, b) => compareEvr(b.version, a.version))
    .map((a) => ({ version: a.version, description: a.repo ? `from ${a.repo}` : "" }));
  return { installed: current.version, older };
}

const OPERATION_ABORTED = /Operation aborted|Exiting on user command|Transaction check error|^Is this ok/m;

export function createDnfInstaller(): Installer {
  const session = (opts: InstallOptions) => {
    const t = toolSession(opts, C_LOCALE);
    // Held packages stay out of every transaction, dependencies included: dnf fails the
    // transaction rather than touch them.
    return { ...t, excludes: [...opts.holds].map((h) => `--exclude=${h}`) };
  };

  const installed = (s: ReturnType<typeof session>, names: readonly string[]) => queryRpm(s.env, names, (argv) => s.run(argv, false));

  // Pinned versions come from a dry run (install exactly these); unpinned names are updates.
  const verb = (refs: readonly PackageRef[]) => (refs.every((r) => r.version) ? "install" : "upgrade");

  const transact = async (refs: readonly PackageRef[], action: string, opts: InstallOptions): Promise<InstallOutcome> => {
    const s = session(opts);
    const found = await findDnf(s.env);
    if (!found) return { packages: [], output: s.output, rebootRequired: false, error: "dnf is not installed on this host" };
    if (!opts.isRoot) return needsRoot(refs, "installing with dnf", s.output);
    const names = refs.map((r) => r.name);
    const before = await installed(s, names);
    // `dnf install` installs whatever it is named, and dnf reads a path or URL as a package
    // file: only what rpm has installed goes to it.
    const { allowed, skipped } = installedOnly(refs, (ref) => before.has(rpmKey(ref)), opts);
    if (allowed.length === 0) return { packages: refs.map((r) => skipped.get(r)!), output: s.output, rebootRequired: false };
    const result = await s.run([found.tool, "-y", "-q", ...s.excludes, action, "--", ...allowed.map(rpmSpec)]);
    const after = await installed(s, names);
    const failedAll = result.exitCode !== 0 ? describeFailure(`${found.kind} ${action}`, result) : undefined;
    const text = `${result.stdout}\n${result.stderr}`;
    const packages: PackageResult[] = refs.map((ref) => {
      const notInstalled = skipped.get(ref);
      if (notInstalled) return notInstalled;
      const key = rpmKey(ref);
      const from = before.get(key) ?? before.get(ref.name);
      const to = after.get(key) ?? after.get(ref.name);
      const reached = ref.version ? to === ref.version || to?.replace(/^\d+:/, "") === ref.version.replace(/^\d+:/, "") : to !== undefined;
      if (reached && to !== from) return packageResult(ref, PackageResultState.INSTALLED, { from, to });
      const reason = dnfReasonFor(ref.name, text);
      if (failedAll || (reason && !/already installed/.test(reason))) {
        return packageResult(ref, PackageResultState.FAILED, { from, to: ref.version || to, reason: reason ?? failedAll });
      }
      return packageResult(ref, PackageResultState.SKIPPED, { from, to, reason: from ? "already up to date" : "not installed; only upgrades were requested" });
    });
    const changed = packages.filter((p) => p.state === PackageResultState.INSTALLED);
    let rebootRequired = changed.some((p) => RPM_REBOOT_PACKAGES.test(p.name));
    if (changed.length > 0 && !rebootRequired && found.kind === "dnf") {
      // dnf-plugins-core / dnf5: exit status 1 means "reboot required".
      const check = await s.run([found.tool, "-q", "needs-restarting", "-r"], false);
      rebootRequired = check.exitCode === 1;
    }
    return { packages, output: s.output, rebootRequired, error: failedAll };
  };

  return {
    source: DNF,
    present: async (env) => (await findDnf(env)) !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const found = await findDnf(s.env);
      if (!found) return { changes: [], output: s.output, error: "dnf is not installed on this host" };
      const action = packages.length === 0 ? "upgrade" : verb(packages);
      const result = await s.run([found.tool, "--assumeno", "-C", ...s.excludes, action, ...(packages.length ? ["--", ...packages.map(rpmSpec)] : [])]);
      const text = `${result.stdout}\n${result.stderr}`;
      // --assumeno answers "no": exit status 1 with "Operation aborted" is the normal outcome.
      const aborted = result.exitCode === 1 && OPERATION_ABORTED.test(text);
      if (result.exitCode !== 0 && !aborted) {
        return { changes: [], output: s.output, error: describeFailure(`${found.kind} ${action} (simulated)`, result) };
      }
      const changes = parseDnfTransaction(result.stdout);
      // dnf4 does not print the installed version: fill it in from rpm.
      const current = await installed(s, changes.filter((c) => c.kind !== PackageChangeKind.INSTALL && !c.fromVersion).map((c) => c.name));
      for (const c of changes) if (!c.fromVersion) c.fromVersion = current.get(`${c.name}.${c.architecture}`) ?? current.get(c.name) ?? "";
      return { changes, output: s.output };
    },

    install: (packages, opts) => transact(packages, verb(packages), opts),

    // `dnf downgrade name-version`: the version must still be in an enabled repository.
    rollback: (pkg, opts) => transact([pkg], "downgrade", opts),

    // From the metadata cached now (-C: nothing is refreshed, as in the dry run).
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const found = await findDnf(s.env);
      if (!found) return { installed: "", versions: [], output: s.output, error: "dnf is not installed on this host" };
      const result = await s.run([found.tool, "-q", "-C", "list", "--showduplicates", "--", pkg.name]);
      const listed = parseDnfDuplicates(result.stdout, pkg.name, pkg.architecture);
      // Exit status 1 with nothing listed: no such package, installed or available.
      if (result.exitCode !== 0 && !(result.exitCode === 1 && !listed.installed)) {
        return { installed: "", versions: [], output: s.output, error: describeFailure(`${found.kind} list --showduplicates`, result) };
      }
      return { installed: listed.installed, versions: rollbackVersions(listed.older), output: s.output };
    },
  };
}

export const dnfInstaller: Installer = createDnfInstaller();

import type { PackageRef } from "@redflag/gen/command_pb";
import { which } from "../../run-process.ts";
import { C_LOCALE } from "../scan-common.ts";
import { queryRpm, RPM_REBOOT_PACKAGES, rpmKey } from "../rpm.ts";
import { xmlElements, ZYPPER, ZYPPER_OK, zypperFailure, zypperMessages } from "./scan.ts";
import { installedOnly, needsRoot, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import { compareEvr } from "../vercmp.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, VersionsOutcome } from "../types.ts";

// "name", "name.arch", "name=version", "name.arch=version" as zypper takes them.
export function zypperSpec(ref: Pick<PackageRef, "name" | "version" | "architecture">): string {
  return `${ref.name}${ref.architecture ? `.${ref.architecture}` : ""}${ref.version ? `=${ref.version}` : ""}`;
}

const SUMMARY_KINDS: [string, PackageChangeKind][] = [
  ["to-upgrade", PackageChangeKind.UPGRADE],
  ["to-install", PackageChangeKind.INSTALL],
  ["to-remove", PackageChangeKind.REMOVE],
  ["to-downgrade", PackageChangeKind.DOWNGRADE],
];

// The <install-summary> zypper --xmlout prints for a (dry-run) transaction:
//   <to-upgrade><solvable type="package" name="curl" edition="8.6.0-…" edition-old="8.6.0-…" arch="x86_64"/></to-upgrade>
// plus to-install, to-remove and to-downgrade. Patches and products in it are not packages.
export function parseInstallSummary(xml: string): PackageChange[] {
  const changes: PackageChange[] = [];
  for (const summary of xmlElements(xml, "install-summary")) {
    for (const [tag, kind] of SUMMARY_KINDS) {
      for (const group of xmlElements(summary.inner, tag)) {
        for (const { attrs } of xmlElements(group.inner, "solvable")) {
          if ((attrs.type ?? "package") !== "package" || !attrs.name) continue;
          const removal = kind === PackageChangeKind.REMOVE;
          changes.push(
            packageChange(kind, ZYPPER, attrs.name, {
              from: removal ? attrs.edition : attrs["edition-old"],
              to: removal ? "" : attrs.edition,
              architecture: attrs.arch,
            }),
          );
        }
      }
    }
  }
  return changes;
}

// `zypper --xmlout search -s --match-exact -t package <name>`: one <solvable> per version and
// repository; status "installed" (repository "(System Packages)"), "other-version" or
// "not-installed". The versions older than the installed one (of its architecture, or `arch`)
// that a repository has, newest first, are what `zypper install --oldpackage` can go to.
export function parseZypperVersions(xml: string, name: string, arch = ""): { installed: string; older: { version: string; description: string }[] } {
  const rows = xmlElements(xml, "solvable")
    .map(({ attrs }) => attrs)
    .filter((a) => a.name === name && (a.kind ?? "package") === "package" && a.edition && (!arch || a.arch === arch));
  const current = rows.filter((a) => a.status === "installed").sort((a, b) => compareEvr(b.edition!, a.edition!))[0];
  if (!current) return { installed: "", older: [] };
  const fromRepos = rows.filter((a) => a.status !== "installed" && a.repository && !a.repository.startsWith("(System") && a.repository !== "@System");
  const sameArch = fromRepos.filter((a) => a.arch === current.arch || a.arch === "noarch" || current.arch === "noarch");
  const byVersion = new Map<string, string[]>();
  for (const a of sameArch) if (compareEvr(a.edition!, current.edition!) < 0) byVersion.set(a.edition!, [...(byVersion.get(a.edition!) ?? []), a.repository!]);
  const older = [...byVersion]
    .sort(([a], [b]) => compareEvr(b, a))
    .map(([version, repos]) => ({ version, description: `from ${[...new Set(repos)].join(", ")}` }));
  return { installed: current.edition!, older };
}

// The zypper message naming one package, if any ("No provider of 'foo' found.").
export function zypperReasonFor(name: string, messages: readonly string[]): string | undefined {
  const quoted = new RegExp(`'${name.replace(/[.+]/g, "\\$&")}([.=][^']*)?'|\\b${name.replace(/[.+]/g, "\\$&")}-\\d`);
  return messages.find((m) => quoted.test(m));
}

export function createZypperInstaller(): Installer {
  const session = (opts: InstallOptions) => toolSession(opts, C_LOCALE);
  const installed = (s: ReturnType<typeof session>, names: readonly string[]) => queryRpm(s.env, names, (argv) => s.run(argv, false));
  // Pinned versions come from a dry run (exactly these); unpinned names are updates only.
  const verb = (refs: readonly PackageRef[]) => (refs.every((r) => r.version) ? ["install", "--auto-agree-with-licenses", "--no-recommends"] : ["update", "--auto-agree-with-licenses", "--no-recommends"]);

  const transact = async (refs: readonly PackageRef[], action: string[], opts: InstallOptions): Promise<InstallOutcome> => {
    const s = session(opts);
    const zypper = await which("zypper", s.env.PATH ?? "");
    if (!zypper) return { packages: [], output: s.output, rebootRequired: false, error: "zypper is not installed on this host" };
    if (!opts.isRoot) return needsRoot(refs, "installing with zypper", s.output);
    const names = refs.map((r) => r.name);
    const before = await installed(s, names);
    // `zypper install` installs whatever it is named (a package, an .rpm file or URL): only
    // what rpm has installed goes to it.
    const { allowed, skipped } = installedOnly(refs, (ref) => before.has(rpmKey(ref)), opts);
    if (allowed.length === 0) return { packages: refs.map((r) => skipped.get(r)!), output: s.output, rebootRequired: false };
    const result = await s.run([zypper, "--non-interactive", "--xmlout", ...action, "--", ...allowed.map(zypperSpec)]);
    const after = await installed(s, names);
    const ok = ZYPPER_OK.has(result.exitCode ?? -1);
    const failedAll = ok ? undefined : zypperFailure(`zypper ${action[0]}`, result);
    const messages = [...zypperMessages(result.stdout, "error"), ...zypperMessages(result.stdout, "warning")];
    const packages: PackageResult[] = refs.map((ref) => {
      const notInstalled = skipped.get(ref);
      if (notInstalled) return notInstalled;
      const key = rpmKey(ref);
      const from = before.get(key) ?? before.get(ref.name);
      const to = after.get(key) ?? after.get(ref.name);
      const reached = ref.version ? to === ref.version : to !== undefined;
      if (reached && to !== from) return packageResult(ref, PackageResultState.INSTALLED, { from, to });
      const reason = zypperReasonFor(ref.name, messages);
      if (failedAll || reason) return packageResult(ref, PackageResultState.FAILED, { from, to: ref.version || to, reason: reason ?? failedAll });
      return packageResult(ref, PackageResultState.SKIPPED, { from, to, reason: from ? "already up to date" : "not installed; only updates were requested" });
    });
    // 102: "reboot needed" after this transaction.
    const rebootRequired = result.exitCode === 102 || packages.some((p) => p.state === PackageResultState.INSTALLED && RPM_REBOOT_PACKAGES.test(p.name));
    return { packages, output: s.output, rebootRequired, error: failedAll };
  };

  return {
    source: ZYPPER,
    present: async (env) => (await which("zypper", env.PATH ?? "")) !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const zypper = await which("zypper", s.env.PATH ?? "");
      if (!zypper) return { changes: [], output: s.output, error: "zypper is not installed on this host" };
      const action = verb(packages);
      const result = await s.run([zypper, "--non-interactive", "--xmlout", "--no-refresh", action[0]!, "--dry-run", ...action.slice(1), "--", ...packages.map(zypperSpec)]);
      if (!ZYPPER_OK.has(result.exitCode ?? -1)) return { changes: [], output: s.output, error: zypperFailure(`zypper ${action[0]} --dry-run`, result) };
      return { changes: parseInstallSummary(result.stdout), output: s.output };
    },

    install: (packages, opts) => transact(packages, verb(packages), opts),

    // `zypper install --oldpackage name=version`: the version must be in an enabled repository.
    rollback: (pkg, opts) => transact([pkg], ["install", "--oldpackage", "--auto-agree-with-licenses"], opts),

    // From the repository data as it is (--no-refresh), with the installed version beside it.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const zypper = await which("zypper", s.env.PATH ?? "");
      if (!zypper) return { installed: "", versions: [], output: s.output, error: "zypper is not installed on this host" };
      const result = await s.run([zypper, "--non-interactive", "--xmlout", "--no-refresh", "search", "-s", "--match-exact", "-t", "package", "--", pkg.name]);
      // 104: nothing matched, which here means not installed and in no repository.
      if (!ZYPPER_OK.has(result.exitCode ?? -1) && result.exitCode !== 104) {
        return { installed: "", versions: [], output: s.output, error: zypperFailure("zypper search", result) };
      }
      const found = parseZypperVersions(result.stdout, pkg.name, pkg.architecture);
      return { installed: found.installed, versions: rollbackVersions(found.older), output: s.output };
    },
  };
}

export const zypperInstaller: Installer = createZypperInstaller();

import { describeFailure, which } from "../../run-process.ts";
import { C_LOCALE } from "../scan-common.ts";
import { FLATPAK, type InstalledRef, LIST_COLUMNS, parseInstalled, pendingFlatpaks, versionOf } from "./scan.ts";
import { needsRoot, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, VersionsOutcome } from "../types.ts";

const COMMIT = /^[0-9a-f]{64}$/;

export function flatpakReasonFor(name: string, output: string): string | undefined {
  const escaped = name.replace(/\./g, "\\.");
  const re = new RegExp(`(^error: .*${escaped}|${escaped}.*: (error|failed))`, "i");
  return output.split("\n").map((l) => l.trim()).find((l) => re.test(l));
}

// `flatpak remote-info --log <remote> <ref>` (LC_ALL=C): the ref's details, then its commits
// newest first, each as
//       Commit: 5a1b…(64 hex)
//      Subject: Update to 131.0.3 (abc1234)
//         Date: 2024-10-15 08:12:44 +0000
// The commits after the installed one (`installed` is the commit as `flatpak list` shows it,
// possibly shortened) are what `flatpak update --commit=` can go back to.
export function parseRemoteLog(text: string, installed: string): { version: string; description: string }[] {
  const commits: { version: string; subject: string; date: string }[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(Commit|Subject|Date):\s*(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === "Commit") {
      if (COMMIT.test(m[2]!.trim()) && !commits.some((c) => c.version === m[2]!.trim())) commits.push({ version: m[2]!.trim(), subject: "", date: "" });
    } else if (commits.length > 0) {
      const last = commits.at(-1)!;
      if (m[1] === "Subject" && !last.subject) last.subject = m[2]!.trim();
      if (m[1] === "Date" && !last.date) last.date = m[2]!.trim();
    }
  }
  const at = installed ? commits.findIndex((c) => c.version.startsWith(installed)) : -1;
  if (at < 0) return [];
  return commits.slice(at + 1).map((c) => ({ version: c.version, description: [c.date, c.subject].filter(Boolean).join(": ") }));
}

export function createFlatpakInstaller(): Installer {
  const session = (opts: InstallOptions) => toolSession(opts, C_LOCALE);
  const installed = async (s: ReturnType<typeof session>, flatpak: string) =>
    parseInstalled((await s.run([flatpak, "list", "--system", `--columns=${LIST_COLUMNS}`], false)).stdout);

  const transact = async (
    refs: readonly { source: string; name: string; version: string; architecture: string }[],
    argv: (flatpak: string) => string[],
    opts: InstallOptions,
    what: string,
  ): Promise<InstallOutcome> => {
    const s = session(opts);
    const flatpak = await which("flatpak", s.env.PATH ?? "");
    if (!flatpak) return { packages: [], output: s.output, rebootRequired: false, error: "flatpak is not installed on this host" };
    if (!opts.isRoot) return needsRoot(refs, "updating system flatpaks", s.output);
    const before = await installed(s, flatpak);
    const result = await s.run(argv(flatpak));
    const after = await installed(s, flatpak);
    const failedAll = result.exitCode !== 0 ? describeFailure(what, result) : undefined;
    const text = `${result.stdout}\n${result.stderr}`;
    const label = (r: InstalledRef | undefined) => (r ? versionOf(r.version, r.commit) : undefined);
    const packages: PackageResult[] = refs.map((ref) => {
      const from = before.get(ref.name);
      const to = after.get(ref.name);
      if (to && to.commit !== from?.commit) return packageResult(ref, PackageResultState.INSTALLED, { from: label(from), to: label(to) });
      const reason = flatpakReasonFor(ref.name, text);
      if (failedAll || reason) return packageResult(ref, PackageResultState.FAILED, { from: label(from), reason: reason ?? failedAll });
      return packageResult(ref, PackageResultState.SKIPPED, { from: label(from), reason: from ? "already up to date" : "not installed" });
    });
    return { packages, output: s.output, rebootRequired: false, error: failedAll };
  };

  return {
    source: FLATPAK,
    present: async (env) => (await which("flatpak", env.PATH ?? "")) !== undefined,

    // flatpak has no simulation: the preview is the remote's list of updates for the named
    // refs. Runtimes an app needs show up in that list under their own names.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const flatpak = await which("flatpak", s.env.PATH ?? "");
      if (!flatpak) return { changes: [], output: s.output, error: "flatpak is not installed on this host" };
      const pending = await pendingFlatpaks((argv) => s.run(argv), flatpak, true);
      if (pending.error) return { changes: [], output: s.output, error: pending.error };
      const current = await installed(s, flatpak);
      const changes: PackageChange[] = [];
      for (const ref of packages) {
        const row = pending.rows.find((r) => r.application === ref.name);
        if (!row) {
          if (!current.has(ref.name)) return { changes: [], output: s.output, error: `${ref.name} is not installed` };
          continue;
        }
        const from = current.get(ref.name);
        changes.push(packageChange(PackageChangeKind.UPGRADE, FLATPAK, ref.name, { from: from ? versionOf(from.version, from.commit) : "", to: versionOf(row.version, row.commit), architecture: row.arch }));
      }
      return { changes, output: s.output };
    },

    install: (packages, opts) =>
      transact(packages, (flatpak) => [flatpak, "update", "--system", "--noninteractive", "-y", "--", ...packages.map((p) => p.name)], opts, "flatpak update"),

    // Deploys an earlier commit of the app: `flatpak update --commit=<64-hex>` (find it with
    // `flatpak remote-info --log <remote> <app>`). Versions alone do not name a commit.
    async rollback(pkg, opts) {
      if (!COMMIT.test(pkg.version)) {
        return {
          packages: [packageResult(pkg, PackageResultState.FAILED, { to: pkg.version, reason: `a flatpak rollback needs the full commit (64 hex digits, see flatpak remote-info --log), not "${pkg.version}"` })],
          output: [],
          rebootRequired: false,
        };
      }
      return transact([pkg], (flatpak) => [flatpak, "update", "--system", "--noninteractive", "-y", `--commit=${pkg.version}`, "--", pkg.name], opts, "flatpak update --commit");
    },

    // The remote's history of the installed ref, below the installed commit. Asks the remote
    // (flatpak keeps no history locally); changes nothing.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const flatpak = await which("flatpak", s.env.PATH ?? "");
      if (!flatpak) return { installed: "", versions: [], output: s.output, error: "flatpak is not installed on this host" };
      const list = await installed(s, flatpak);
      const ref = list.get(pkg.name);
      if (!ref) return { installed: "", versions: [], output: s.output };
      const label = versionOf(ref.version, ref.commit);
      if (!ref.origin || !ref.arch || !ref.branch) return { installed: label, versions: [], output: s.output, error: `flatpak list did not say where ${pkg.name} comes from` };
      const result = await s.run([flatpak, "remote-info", "--system", "--log", "--", ref.origin, `${ref.application}/${ref.arch}/${ref.branch}`]);
      if (result.exitCode !== 0) return { installed: label, versions: [], output: s.output, error: describeFailure("flatpak remote-info --log", result) };
      return { installed: label, versions: rollbackVersions(parseRemoteLog(result.stdout, ref.commit)), output: s.output };
    },
  };
}

export const flatpakInstaller: Installer = createFlatpakInstaller();

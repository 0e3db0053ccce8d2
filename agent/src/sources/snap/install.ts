import { describeFailure, which } from "../../run-process.ts";
import { C_LOCALE } from "../scan-common.ts";
import { parseSnapTable, pendingSnaps, SNAP, type SnapRow } from "./scan.ts";
import { needsRoot, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolSession } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageResult, VersionsOutcome } from "../types.ts";

// snapd prints "error: …" lines; the one naming a snap explains its failure.
export function snapReasonFor(name: string, output: string): string | undefined {
  const re = new RegExp(`^error: .*"${name}"|^error: .*\\b${name}\\b`);
  return output.split("\n").map((l) => l.trim()).find((l) => re.test(l));
}

export function createSnapInstaller(): Installer {
  const session = (opts: InstallOptions) => toolSession(opts, C_LOCALE);
  const listed = async (s: ReturnType<typeof session>, snap: string, all = false): Promise<SnapRow[]> =>
    parseSnapTable((await s.run(all ? [snap, "list", "--all"] : [snap, "list"], false)).stdout);
  const current = (rows: SnapRow[], name: string) => rows.find((r) => r.name === name && !r.notes.includes("disabled"));

  const transact = async (
    refs: readonly { source: string; name: string; version: string; architecture: string }[],
    argv: (snap: string) => string[],
    opts: InstallOptions,
    what: string,
  ): Promise<InstallOutcome> => {
    const s = session(opts);
    const snap = await which("snap", s.env.PATH ?? "");
    if (!snap) return { packages: [], output: s.output, rebootRequired: false, error: "snap is not installed on this host" };
    if (!opts.isRoot) return needsRoot(refs, "refreshing snaps", s.output);
    const before = await listed(s, snap);
    const result = await s.run(argv(snap));
    const after = await listed(s, snap);
    const failedAll = result.exitCode !== 0 ? describeFailure(what, result) : undefined;
    const text = `${result.stdout}\n${result.stderr}`;
    const packages: PackageResult[] = refs.map((ref) => {
      const from = current(before, ref.name);
      const to = current(after, ref.name);
      if (to && to.revision !== from?.revision) {
        return packageResult(ref, PackageResultState.INSTALLED, { from: from?.version, to: to.version, reason: `revision ${from?.revision ?? "-"} → ${to.revision}` });
      }
      const reason = snapReasonFor(ref.name, text);
      if (failedAll || reason) return packageResult(ref, PackageResultState.FAILED, { from: from?.version, reason: reason ?? failedAll });
      return packageResult(ref, PackageResultState.SKIPPED, { from: from?.version, reason: from ? "already up to date" : "not installed" });
    });
    return { packages, output: s.output, rebootRequired: packages.some((p) => p.state === PackageResultState.INSTALLED && /kernel/.test(p.name)), error: failedAll };
  };

  return {
    source: SNAP,
    present: async (env) => (await which("snap", env.PATH ?? "")) !== undefined,

    // Snaps carry their dependencies inside: a refresh changes exactly the snaps it names,
    // as the store's refresh list says.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const snap = await which("snap", s.env.PATH ?? "");
      if (!snap) return { changes: [], output: s.output, error: "snap is not installed on this host" };
      const pending = await pendingSnaps((argv) => s.run(argv), snap);
      if (pending.error) return { changes: [], output: s.output, error: pending.error };
      const installed = await listed(s, snap);
      const changes = [];
      for (const ref of packages) {
        const row = pending.rows.find((r) => r.name === ref.name);
        if (!row) {
          if (!current(installed, ref.name)) return { changes: [], output: s.output, error: `snap "${ref.name}" is not installed` };
          continue;
        }
        changes.push(packageChange(PackageChangeKind.UPGRADE, SNAP, ref.name, { from: current(installed, ref.name)?.version, to: row.version }));
      }
      return { changes, output: s.output };
    },

    install: (packages, opts) => transact(packages, (snap) => [snap, "refresh", "--", ...packages.map((p) => p.name)], opts, "snap refresh"),

    // `snap revert` goes back to a revision snapd kept (by default the previous one);
    // a version snapd no longer holds cannot be reached.
    async rollback(pkg, opts) {
      const s = session(opts);
      const snap = await which("snap", s.env.PATH ?? "");
      if (!snap) return { packages: [], output: s.output, rebootRequired: false, error: "snap is not installed on this host" };
      const all = await listed(s, snap, true);
      const kept = all.find((r) => r.name === pkg.name && r.notes.includes("disabled") && (r.version === pkg.version || r.revision === pkg.version));
      if (!kept) {
        const versions = all.filter((r) => r.name === pkg.name && r.notes.includes("disabled")).map((r) => `${r.version} (rev ${r.revision})`);
        return {
          packages: [packageResult(pkg, PackageResultState.FAILED, {
            to: pkg.version,
            reason: `snapd keeps no revision of ${pkg.name} at ${pkg.version}; kept: ${versions.join(", ") || "none"}`,
          })],
          output: s.output,
          rebootRequired: false,
        };
      }
      return transact([pkg], (tool) => [tool, "revert", pkg.name, "--revision", kept.revision], opts, "snap revert");
    },

    // The disabled revisions snapd kept (`snap list --all`), newest first: what `snap revert`
    // goes to. Each is named by its revision, which is unique where versions may repeat.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const snap = await which("snap", s.env.PATH ?? "");
      if (!snap) return { installed: "", versions: [], output: s.output, error: "snap is not installed on this host" };
      const result = await s.run([snap, "list", "--all"]);
      if (result.exitCode !== 0) return { installed: "", versions: [], output: s.output, error: describeFailure("snap list --all", result) };
      const rows = parseSnapTable(result.stdout).filter((r) => r.name === pkg.name);
      const now = current(rows, pkg.name);
      if (!now) return { installed: "", versions: [], output: s.output };
      const kept = rows
        .filter((r) => r.notes.includes("disabled") && /^\d+$/.test(r.revision))
        .sort((a, b) => Number(b.revision) - Number(a.revision))
        .map((r) => ({ version: r.revision, description: `version ${r.version} (revision ${r.revision})` }));
      return { installed: now.version, versions: rollbackVersions(kept), output: s.output };
    },
  };
}

export const snapInstaller: Installer = createSnapInstaller();

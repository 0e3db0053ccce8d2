import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { type PackageRef, PackageRefSchema } from "@redflag/gen/command_pb";
import { runProcess, type ProcessResult } from "../../run-process.ts";
import {
  findWinget,
  listUpgrades,
  NO_APPLICATIONS_FOUND,
  PACKAGE_IS_PINNED,
  parseListVersion,
  REBOOT_CODES,
  UPDATE_NOT_APPLICABLE,
  WINGET,
  WINGET_FLAGS,
  wingetCode,
  wingetFailure,
  type WingetHostOptions,
  type WingetRow,
} from "./scan.ts";
import { NOT_INSTALLED, packageChange, PackageChangeKind, packageResult, PackageResultState, rollbackVersions, toolOutput } from "../install-common.ts";
import { segmentCompare } from "../vercmp.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput, VersionsOutcome } from "../types.ts";

// Silent, exact, every agreement accepted, no prompt. --include-unknown lets winget upgrade
// the packages whose installed version it cannot read, which the scan reports too.
const UNATTENDED = ["--exact", "--silent", "--accept-package-agreements", ...WINGET_FLAGS];
// winget's own words when an installer asks for a restart (English; the exit codes cover the
// cases where winget fails because of it).
const RESTART_TEXT = /Restart your PC to finish installation|Your PC will restart to finish installation/i;
// Exit statuses winget counts as success: 0, and "restart to finish" from older releases.
const SUCCESS = new Set([0, 0x8a150109, 0x8a15010b]);

// Versions winget cannot read: "Unknown" (translated) or only bounded ("< 1.7.0").
const unreadable = (version: string | undefined) => !!version && (version.startsWith("<") || !/\d/.test(version));

// `winget show --id X --exact --versions`: a heading line, then (in any language) a one-column
// table whose header is underlined with dashes, one version a line, newest first:
//   Found 7-Zip [7zip.7zip]
//   Version
//   -------
//   24.08
//   23.01
export function parseShowVersions(text: string): string[] {
  const lines = text.split(/\r?\n/).map((l) => l.replace(/^.*\r/, "").trim());
  const rule = lines.findIndex((l) => /^-{3,}$/.test(l));
  if (rule < 0) return [];
  return lines.slice(rule + 1).filter((l) => /^[0-9A-Za-z][0-9A-Za-z._+-]*$/.test(l));
}

export function createWingetInstaller(host: WingetHostOptions = {}): Installer {
  const exec = host.exec ?? runProcess;

  const session = (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const output: ToolOutput[] = [];
    const remaining = () => deadline - Date.now();
    const run = async (argv: string[], record = true): Promise<ProcessResult> => {
      const result = await exec(argv, { env: opts.env, signal: opts.signal, timeoutMs: Math.max(1000, remaining()) });
      if (record) output.push(toolOutput(argv, result));
      return result;
    };
    return { output, run, remaining };
  };
  type Session = ReturnType<typeof session>;

  const installedVersion = async (s: Session, winget: string, id: string) =>
    parseListVersion((await s.run([winget, "list", "--id", id, "--exact", ...WINGET_FLAGS], false)).stdout, id);

  const pendingRefs = (rows: readonly WingetRow[], holds: ReadonlySet<string>) =>
    rows.filter((r) => !holds.has(r.id)).map((r) => create(PackageRefSchema, { source: WINGET, name: r.id }));

  // One winget run per package (winget takes one package per call), each judged by the
  // installed version `winget list` shows before and after it, then by winget's exit code.
  const transact = async (
    s: Session,
    winget: string,
    refs: readonly PackageRef[],
    argvFor: (ref: PackageRef) => string[],
    opts: InstallOptions,
    rollback: boolean,
  ): Promise<InstallOutcome> => {
    const packages: PackageResult[] = [];
    let rebootRequired = false;
    let stopped: string | undefined;
    for (const ref of refs) {
      if (stopped || opts.signal?.aborted || s.remaining() <= 0) {
        stopped ??= opts.signal?.aborted ? "the operation was stopped" : "out of time";
        packages.push(packageResult(ref, PackageResultState.SKIPPED, { to: ref.version, reason: `not attempted: ${stopped}` }));
        continue;
      }
      if (ref.name.startsWith("-")) {
        packages.push(packageResult(ref, PackageResultState.FAILED, { reason: `"${ref.name}" is not a valid package ID` }));
        continue;
      }
      const from = await installedVersion(s, winget, ref.name);
      // `winget install` (how a rollback goes back) installs any package of the sources.
      if (rollback && !from) {
        packages.push(packageResult(ref, PackageResultState.SKIPPED, { to: ref.version, reason: NOT_INSTALLED }));
        continue;
      }
      const result = await s.run(argvFor(ref));
      if (result.timedOut || result.aborted) {
        stopped = result.aborted ? "the operation was stopped" : "out of time";
        packages.push(packageResult(ref, PackageResultState.FAILED, { from, to: ref.version, reason: wingetFailure(`winget ${rollback ? "install" : "upgrade"}`, result) }));
        continue;
      }
      const to = await installedVersion(s, winget, ref.name);
      const code = wingetCode(result);
      const restart = (code !== undefined && REBOOT_CODES.has(code)) || RESTART_TEXT.test(result.stdout);
      rebootRequired ||= restart;
      const succeeded = code !== undefined && SUCCESS.has(code);
      const changed = !!to && to !== from && (!ref.version || to === ref.version);
      if (succeeded && changed) packages.push(packageResult(ref, PackageResultState.INSTALLED, { from, to }));
      else if (succeeded && ref.version && to === ref.version) packages.push(packageResult(ref, PackageResultState.SKIPPED, { from, reason: `already at ${ref.version}` }));
      else if (succeeded && restart) {
        packages.push(packageResult(ref, PackageResultState.INSTALLED, { from, to: ref.version || to, reason: `a restart is needed to finish; winget list still shows ${to ?? "no version"}` }));
      } else if (succeeded && unreadable(from)) {
        packages.push(packageResult(ref, PackageResultState.INSTALLED, { from, to: ref.version || to, reason: `winget reported success; it cannot read the installed version (${to ?? from})` }));
      } else if (succeeded) {
        packages.push(packageResult(ref, PackageResultState.FAILED, { from, to: ref.version, reason: `winget reported success, but winget list still shows ${to ?? "no installed version"}` }));
      } else if (code === UPDATE_NOT_APPLICABLE) packages.push(packageResult(ref, PackageResultState.SKIPPED, { from, reason: "already up to date" }));
      else if (code === NO_APPLICATIONS_FOUND && !from && !rollback) packages.push(packageResult(ref, PackageResultState.SKIPPED, { reason: "not installed; only upgrades were requested" }));
      else if (code === PACKAGE_IS_PINNED) packages.push(packageResult(ref, PackageResultState.SKIPPED, { from, reason: `pinned in winget (winget pin remove --id ${ref.name} to allow it)` }));
      else packages.push(packageResult(ref, PackageResultState.FAILED, { from, to: ref.version, reason: wingetFailure(`winget ${rollback ? "install" : "upgrade"}`, result) }));
    }
    const failed = packages.filter((p) => p.state === PackageResultState.FAILED).length;
    return {
      packages,
      output: s.output,
      rebootRequired,
      error: failed > 0 ? (refs.length === 1 ? packages[0]!.reason : `${failed} of ${plural(refs.length, "package")} failed`) : undefined,
    };
  };

  const missing = (refs: readonly PackageRef[], output: ToolOutput[]): InstallOutcome => ({
    packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason: "winget is not installed on this host" })),
    output,
    rebootRequired: false,
    error: "winget is not installed on this host",
  });

  return {
    source: WINGET,
    present: async (env) => (await findWinget(env, host)) !== undefined,

    // winget cannot simulate. The preview is its list of pending upgrades: one UPGRADE per
    // requested package that has one (to the requested version, or the newest available);
    // winget installs no dependencies of its own accord beyond what a manifest declares.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const winget = await findWinget(opts.env, host);
      if (!winget) return { changes: [], output: s.output, error: "winget is not installed on this host" };
      const list = await listUpgrades((argv) => s.run(argv), winget);
      if (list.error) return { changes: [], output: s.output, error: list.error };
      const refs = packages.length > 0 ? packages : pendingRefs(list.rows, opts.holds);
      const changes: PackageChange[] = [];
      for (const ref of refs) {
        const row = list.rows.find((r) => r.id.toLowerCase() === ref.name.toLowerCase());
        if (row && !changes.some((c) => c.name === row.id)) {
          changes.push(packageChange(PackageChangeKind.UPGRADE, WINGET, row.id, { from: row.version, to: ref.version || row.available }));
        }
      }
      return { changes, output: s.output };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      const s = session(opts);
      const winget = await findWinget(opts.env, host);
      if (!winget) return missing(packages, s.output);
      let refs = packages;
      if (refs.length === 0) {
        const list = await listUpgrades((argv) => s.run(argv, false), winget);
        if (list.error) return { packages: [], output: s.output, rebootRequired: false, error: list.error };
        refs = pendingRefs(list.rows, opts.holds);
        if (refs.length === 0) return { packages: [], output: s.output, rebootRequired: false };
      }
      return transact(s, winget, refs, (ref) => [
        winget, "upgrade", "--id", ref.name, ...(ref.version ? ["--version", ref.version] : []), ...UNATTENDED, "--include-unknown",
      ], opts, false);
    },

    // winget installs an earlier version when its manifest is still in the source; --force
    // lets it replace the newer one that is installed.
    async rollback(pkg, opts): Promise<InstallOutcome> {
      const s = session(opts);
      const winget = await findWinget(opts.env, host);
      if (!winget) return missing([pkg], s.output);
      if (!pkg.version) {
        const reason = "no version to roll back to";
        return { packages: [packageResult(pkg, PackageResultState.FAILED, { reason })], output: s.output, rebootRequired: false, error: reason };
      }
      return transact(s, winget, [pkg], (ref) => [winget, "install", "--id", ref.name, "--version", ref.version, "--force", ...UNATTENDED], opts, true);
    },

    // The versions the source still has a manifest for, below the installed one.
    async versions(pkg, opts): Promise<VersionsOutcome> {
      const s = session(opts);
      const winget = await findWinget(opts.env, host);
      if (!winget) return { installed: "", versions: [], output: s.output, error: "winget is not installed on this host" };
      const installed = await installedVersion(s, winget, pkg.name);
      if (!installed) return { installed: "", versions: [], output: s.output };
      if (unreadable(installed)) {
        return { installed, versions: [], output: s.output, error: `winget cannot read the installed version of ${pkg.name} ("${installed}"), so it cannot tell which versions are earlier` };
      }
      const result = await s.run([winget, "show", "--id", pkg.name, "--exact", "--versions", ...WINGET_FLAGS]);
      if (result.exitCode !== 0) return { installed, versions: [], output: s.output, error: wingetFailure("winget show --versions", result) };
      const older = parseShowVersions(result.stdout).filter((v) => segmentCompare(v, installed) < 0);
      return { installed, versions: rollbackVersions(older.map((version) => ({ version, description: "in the winget source" }))), output: s.output };
    },
  };
}

export const wingetInstaller: Installer = createWingetInstaller();

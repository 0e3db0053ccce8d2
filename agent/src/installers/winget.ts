import type { PackageRef } from "@redflag/gen/command_pb";
import { which } from "../run-process.ts";
import { cleanLines, listUpgrades, parseWingetTable, WINGET, WINGET_FLAGS, wingetCode, wingetFailure } from "../scanners/winget.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, toolSession } from "./common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageResult } from "./types.ts";

const REBOOT_TEXT = /restart (your pc|the computer|is required)|reboot (is )?required/i;

export function createWingetInstaller(): Installer {
  const session = (opts: InstallOptions) => toolSession(opts);

  // The installed version of one package, from `winget list --id X --exact`.
  const installedVersion = async (s: ReturnType<typeof session>, winget: string, id: string) => {
    const res = await s.run([winget, "list", "--id", id, "--exact", ...WINGET_FLAGS], false);
    const row = parseWingetTable(res.stdout).find((cells) => cells[1] === id);
    return row?.[2] || undefined;
  };

  // One winget call per package: winget installs one package per invocation.
  const each = async (refs: readonly PackageRef[], opts: InstallOptions, argv: (winget: string, ref: PackageRef) => string[]): Promise<InstallOutcome> => {
    const s = session(opts);
    const winget = await which("winget", opts.env.PATH ?? "");
    if (!winget) return { packages: [], output: s.output, rebootRequired: false, error: "winget is not installed on this host" };
    const packages: PackageResult[] = [];
    let rebootRequired = false;
    for (const ref of refs) {
      if (opts.signal?.aborted) break;
      const from = await installedVersion(s, winget, ref.name);
      const res = await s.run(argv(winget, ref));
      const to = await installedVersion(s, winget, ref.name);
      rebootRequired ||= REBOOT_TEXT.test(res.stdout);
      if (to && to !== from && (!ref.version || to === ref.version)) {
        packages.push(packageResult(ref, PackageResultState.INSTALLED, { from, to }));
      } else if (wingetCode(res) === 0x8a15002b) {
        packages.push(packageResult(ref, PackageResultState.SKIPPED, { from, reason: "already up to date" }));
      } else if (wingetCode(res) !== 0) {
        packages.push(packageResult(ref, PackageResultState.FAILED, { from, to: ref.version || undefined, reason: wingetFailure("winget", res) }));
      } else {
        const said = cleanLines(res.stdout).filter((l) => l.trim()).at(-1)?.trim();
        packages.push(packageResult(ref, PackageResultState.SKIPPED, { from, reason: said ?? "winget changed nothing" }));
      }
    }
    const failed = packages.filter((p) => p.state === PackageResultState.FAILED).length;
    return { packages, output: s.output, rebootRequired, error: failed > 0 ? `${failed} package(s) failed` : undefined };
  };

  const silent = ["--exact", "--silent", "--accept-package-agreements", ...WINGET_FLAGS];
  return {
    source: WINGET,
    present: async (env) => (await which("winget", env.PATH ?? "")) !== undefined,

    // winget cannot simulate: the preview is its list of available upgrades for the named IDs.
    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = session(opts);
      const winget = await which("winget", opts.env.PATH ?? "");
      if (!winget) return { changes: [], output: s.output, error: "winget is not installed on this host" };
      const list = await listUpgrades((argv) => s.run(argv), winget);
      if (list.error) return { changes: [], output: s.output, error: list.error };
      const changes = [];
      for (const ref of packages) {
        const row = list.rows.find((r) => r.id === ref.name);
        if (row) changes.push(packageChange(PackageChangeKind.UPGRADE, WINGET, row.id, { from: row.version, to: ref.version || row.available }));
      }
      return { changes, output: s.output };
    },

    install: (packages, opts) =>
      each(packages, opts, (winget, ref) => [winget, "upgrade", "--id", ref.name, ...(ref.version ? ["--version", ref.version] : []), ...silent]),

    // winget installs an older version when its manifest is still in the source.
    rollback: (pkg, opts) => each([pkg], opts, (winget, ref) => [winget, "install", "--id", ref.name, "--version", ref.version, "--force", ...silent]),
  };
}

export const wingetInstaller: Installer = createWingetInstaller();

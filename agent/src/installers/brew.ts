import { describeFailure, type ProcessResult } from "../run-process.ts";
import { BREW, type BrewOutdated, brewRunner, BREW_LOCATIONS, outdated, runBrew } from "../scanners/brew.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, toolOutput } from "./common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput } from "./types.ts";

// `brew upgrade --dry-run`:
//   ==> Would upgrade 2 outdated packages:
//   git 2.46.0 -> 2.47.0
//   ==> Would install 1 dependency for git:
//   pcre2 10.44
export function parseBrewDryRun(text: string): PackageChange[] {
  const changes: PackageChange[] = [];
  let section: "upgrade" | "install" | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("==>")) {
      section = /Would upgrade/i.test(line) ? "upgrade" : /Would install/i.test(line) ? "install" : undefined;
      continue;
    }
    const up = /^(\S+) (\S+) -> (\S+)$/.exec(line);
    if (section === "upgrade" && up) changes.push(packageChange(PackageChangeKind.UPGRADE, BREW, up[1]!, { from: up[2], to: up[3] }));
    // Dependencies: names (sometimes with versions) on one line. Homebrew installs whatever is
    // current, so a dependency without a version is recorded as "latest".
    if (section === "install" && !up && line) {
      const tokens = line.split(/[\s,]+/).filter(Boolean);
      for (let i = 0; i < tokens.length; i++) {
        if (/^\d/.test(tokens[i]!)) continue;
        const version = /^\d/.test(tokens[i + 1] ?? "") ? tokens[i + 1]! : "latest";
        changes.push(packageChange(PackageChangeKind.INSTALL, BREW, tokens[i]!, { to: version }));
      }
    }
  }
  return changes;
}

// Homebrew's "Error: …" line about one formula or cask.
export function brewReasonFor(name: string, output: string): string | undefined {
  const short = name.split("/").pop()!;
  const re = new RegExp(`^Error: .*\\b${short.replace(/[.+@]/g, "\\$&")}\\b`);
  return output.split("\n").map((l) => l.trim()).find((l) => re.test(l));
}

export function createBrewInstaller(locations = BREW_LOCATIONS): Installer {
  const prepare = async (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const runner = await brewRunner(opts.env, opts.isRoot, locations);
    const output: ToolOutput[] = [];
    const call = () => ({ signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) });
    const run = async (args: string[]): Promise<ProcessResult> => {
      const result = await runBrew(runner!, args, call());
      output.push(toolOutput([runner!.brew, ...args], result));
      return result;
    };
    return { runner, output, call, run };
  };
  const unavailable = (runner: Awaited<ReturnType<typeof brewRunner>>) =>
    !runner ? "Homebrew is not installed on this host" : runner.problem;

  return {
    source: BREW,
    present: async (env) => (await brewRunner(env, false, locations)) !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const p = await prepare(opts);
      const problem = unavailable(p.runner);
      if (problem) return { changes: [], output: p.output, error: problem };
      const list = await outdated(p.runner!, p.call());
      if (list.error) return { changes: [], output: p.output, error: list.error };
      const kinds = new Map(list.items.map((i) => [i.name, i]));
      const changes: PackageChange[] = [];
      for (const cask of [false, true]) {
        const names = packages.map((x) => x.name).filter((n) => (kinds.get(n)?.cask ?? false) === cask);
        if (names.length === 0) continue;
        const res = await p.run(["upgrade", "--dry-run", cask ? "--cask" : "--formula", ...names]);
        if (res.exitCode !== 0) return { changes: [], output: p.output, error: describeFailure("brew upgrade --dry-run", res) };
        changes.push(...parseBrewDryRun(res.stdout));
      }
      return { changes, output: p.output };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      const p = await prepare(opts);
      const problem = unavailable(p.runner);
      if (problem) {
        return { packages: packages.map((r) => packageResult(r, PackageResultState.FAILED, { reason: problem })), output: p.output, rebootRequired: false, error: problem };
      }
      const before = await outdated(p.runner!, p.call());
      if (before.error) return { packages: [], output: p.output, rebootRequired: false, error: before.error };
      const was = new Map(before.items.map((i) => [i.name, i]));
      const results: PackageResult[] = [];
      const toUpgrade: BrewOutdated[] = [];
      for (const ref of packages) {
        const item = was.get(ref.name);
        if (!item) results.push(packageResult(ref, PackageResultState.SKIPPED, { reason: "already up to date (or not installed)" }));
        else if (item.pinned) results.push(packageResult(ref, PackageResultState.SKIPPED, { from: item.installed, reason: "pinned in Homebrew (brew unpin to allow it)" }));
        else toUpgrade.push(item);
      }
      let text = "";
      let failedAll: string | undefined;
      for (const cask of [false, true]) {
        const names = toUpgrade.filter((i) => i.cask === cask).map((i) => i.name);
        if (names.length === 0) continue;
        const res = await p.run(["upgrade", cask ? "--cask" : "--formula", ...names]);
        text += `${res.stdout}\n${res.stderr}\n`;
        if (res.exitCode !== 0) failedAll ??= describeFailure("brew upgrade", res);
      }
      const after = await outdated(p.runner!, p.call());
      const still = new Set(after.items.map((i) => i.name));
      for (const item of toUpgrade) {
        const ref = packages.find((r) => r.name === item.name)!;
        if (!after.error && !still.has(item.name)) results.push(packageResult(ref, PackageResultState.INSTALLED, { from: item.installed, to: item.current }));
        else results.push(packageResult(ref, PackageResultState.FAILED, { from: item.installed, to: item.current, reason: brewReasonFor(item.name, text) ?? failedAll ?? "still outdated after brew upgrade" }));
      }
      // Report in the order asked.
      results.sort((a, b) => packages.findIndex((r) => r.name === a.name) - packages.findIndex((r) => r.name === b.name));
      return { packages: results, output: p.output, rebootRequired: false, error: failedAll };
    },
    // No rollback: Homebrew installs only the current version of a formula (versioned
    // formulae such as node@20 are separate packages).
  };
}

export const brewInstaller: Installer = createBrewInstaller();

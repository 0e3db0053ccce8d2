import { create } from "@bufbuild/protobuf";
import { type PackageRef, PackageRefSchema } from "@redflag/gen/command_pb";
import type { ProcessResult } from "../../run-process.ts";
import {
  BREW,
  brewFailure,
  type BrewHostOptions,
  type BrewOutdated,
  brewRunner,
  findBrew,
  listOutdated,
  newestVersion,
  runBrew,
} from "./scan.ts";
import { packageChange, PackageChangeKind, packageResult, PackageResultState, toolOutput } from "../install-common.ts";
import type { DryRunOutcome, InstallOptions, Installer, InstallOutcome, PackageChange, PackageResult, ToolOutput } from "../types.ts";

const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;
const NAME_TOKEN = /^[A-Za-z0-9@._+/-]+$/;

// `brew upgrade --dry-run` (formulae or casks). Every section starts "==> ":
//   ==> Would upgrade 2 outdated packages[:]            ← requested (and outdated dependents)
//   git        2.46.0 -> 2.47.0 (20.1MB)                ← Homebrew 5 pads and may add sizes
//   ==> Would install 1 dependency for git:             ← new dependencies
//   pcre2 10.44                                          ← Homebrew 4: all on one line,
//   ==> Would upgrade 1 dependency for git:                space-separated
//   gettext 0.22.5 -> 0.23
//   ==> Would upgrade 1 dependent of upgraded formula:  ← Homebrew 4: ", "-separated
//   ==> 1 Pinned formula                                 ← not a change
// Each entry is "name version" or "name old -> new"; an entry with an arrow is an upgrade
// whatever its section says.
export function parseBrewDryRun(text: string): PackageChange[] {
  const changes = new Map<string, PackageChange>();
  let section: "upgrade" | "install" | undefined;
  let body: string[] = [];
  const flush = () => {
    if (section) {
      for (const change of sectionEntries(body.join(" "), section)) {
        const known = changes.get(change.name);
        if (!known || (!known.fromVersion && change.fromVersion)) changes.set(change.name, change);
      }
    }
    body = [];
  };
  for (const raw of text.split("\n")) {
    const line = raw.replace(ANSI, "").replace(/\r$/, "").trimEnd();
    if (line.startsWith("==> ")) {
      flush();
      section = /^==> Would upgrade \d+ /.test(line) ? "upgrade" : /^==> Would install \d+ dependenc/.test(line) ? "install" : undefined;
    } else if (section && line.trim()) {
      body.push(line.trim());
    }
  }
  flush();
  return [...changes.values()];
}

function sectionEntries(text: string, section: "upgrade" | "install"): PackageChange[] {
  const tokens = text
    .replace(/\([^)]*\)/g, " ") // download sizes
    .replace(/\blatest HEAD\b/g, "HEAD")
    .replace(/,(\s|$)/g, " ") // Homebrew 4's ", " between dependents; cask versions keep theirs
    .split(/\s+/)
    .filter(Boolean);
  const out: PackageChange[] = [];
  for (let i = 0; i < tokens.length; ) {
    const [name, version, arrow, next] = [tokens[i]!, tokens[i + 1], tokens[i + 2], tokens[i + 3]];
    if (!NAME_TOKEN.test(name) || !version || version === "->") break;
    if (arrow === "->") {
      if (!next) break;
      out.push(packageChange(PackageChangeKind.UPGRADE, BREW, name, { from: version, to: next }));
      i += 4;
    } else {
      out.push(packageChange(section === "install" ? PackageChangeKind.INSTALL : PackageChangeKind.UPGRADE, BREW, name, { to: version }));
      i += 2;
    }
  }
  return out;
}

// `brew list --versions --formula` / `--cask`: "name version [version…]" per installed package
// (formulae by short name, with every keg still in the Cellar).
export function parseBrewListVersions(text: string): Map<string, string[]> {
  const versions = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [name, ...list] = line.trim().split(/\s+/);
    if (name && list.length > 0 && NAME_TOKEN.test(name)) versions.set(name, list);
  }
  return versions;
}

const shortName = (name: string) => name.split("/").pop()!;
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

// Homebrew's "Error: …" line about one formula or cask (taps are left out of its messages).
export function brewReasonFor(name: string, output: string): string | undefined {
  const word = new RegExp(`(^|[^A-Za-z0-9@+_-])${escapeRegExp(shortName(name))}($|[^A-Za-z0-9@+_-])`);
  return output
    .replace(ANSI, "")
    .split("\n")
    .map((l) => l.trim())
    .find((l) => l.startsWith("Error: ") && word.test(l.slice("Error: ".length)));
}

type Kind = "formula" | "cask";
const KINDS: readonly Kind[] = ["formula", "cask"];
const kindOf = (item: BrewOutdated): Kind => (item.cask ? "cask" : "formula");

export function createBrewInstaller(host: BrewHostOptions = {}): Installer {
  // The clock, the brew runner (maybe as the prefix owner) and the record of one operation.
  const session = async (opts: InstallOptions) => {
    const deadline = Date.now() + opts.timeoutMs;
    const runner = await brewRunner(opts.env, opts.isRoot, host);
    const output: ToolOutput[] = [];
    const call = () => ({ signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) });
    const run = async (args: string[], record = true): Promise<ProcessResult> => {
      const result = await runBrew(runner!, args, call());
      if (record) output.push(toolOutput([runner!.brew, ...args], result));
      return result;
    };
    const problem = !runner ? "Homebrew is not installed on this host" : runner.problem;
    return { runner, output, call, run, problem };
  };
  type Session = Awaited<ReturnType<typeof session>>;

  // Installed versions of every formula and cask, keyed "formula:git", "cask:firefox".
  const installed = async (s: Session) => {
    const all = new Map<string, string[]>();
    for (const kind of KINDS) {
      const result = await s.run(["list", "--versions", `--${kind}`], false);
      for (const [name, versions] of parseBrewListVersions(result.stdout)) all.set(`${kind}:${name}`, versions);
    }
    return all;
  };

  // "Everything pending": outdated and not pinned (brew pin) and not held by the agent config.
  const everything = (items: readonly BrewOutdated[], holds: ReadonlySet<string>): PackageRef[] =>
    items.filter((i) => !i.pinned && !holds.has(i.name)).map((i) => create(PackageRefSchema, { source: BREW, name: i.name }));

  const failAll = (refs: readonly PackageRef[], reason: string, output: ToolOutput[]): InstallOutcome => ({
    packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason })),
    output,
    rebootRequired: false,
    error: reason,
  });

  return {
    source: BREW,
    present: async (env) => (await findBrew(env, host.locations)) !== undefined,

    async dryRun(packages, opts): Promise<DryRunOutcome> {
      const s = await session(opts);
      if (s.problem) return { changes: [], output: s.output, error: s.problem };
      const list = await listOutdated(s.runner!, s.call());
      if (list.error) return { changes: [], output: s.output, error: list.error };
      const outdated = new Map(list.items.map((i) => [i.name, i]));
      const refs = packages.length > 0 ? packages : everything(list.items, opts.holds);
      const changes = new Map<string, PackageChange>();
      for (const kind of KINDS) {
        // Only what brew would upgrade: current and pinned packages change nothing.
        const names = [...new Set(refs.map((r) => outdated.get(r.name)).filter((i) => i && !i.pinned && kindOf(i) === kind).map((i) => i!.name))];
        if (names.length === 0) continue;
        const result = await s.run(["upgrade", "--dry-run", `--${kind}`, ...names]);
        if (result.exitCode !== 0) return { changes: [], output: s.output, error: brewFailure("brew upgrade --dry-run", result) };
        for (const change of parseBrewDryRun(result.stdout)) if (!changes.has(change.name)) changes.set(change.name, change);
      }
      return { changes: [...changes.values()], output: s.output };
    },

    async install(packages, opts): Promise<InstallOutcome> {
      const s = await session(opts);
      if (s.problem) return failAll(packages, s.problem, s.output);
      const pending = await listOutdated(s.runner!, s.call());
      if (pending.error) return failAll(packages, pending.error, s.output);
      const outdated = new Map(pending.items.map((i) => [i.name, i]));
      const refs = packages.length > 0 ? packages : everything(pending.items, opts.holds);
      if (refs.length === 0) return { packages: [], output: s.output, rebootRequired: false };

      // Decide what brew is asked to upgrade; everything else is judged from the Cellar after.
      const decided = new Map<PackageRef, PackageResult>();
      const upgrade: Record<Kind, BrewOutdated[]> = { formula: [], cask: [] };
      for (const ref of refs) {
        const item = outdated.get(ref.name);
        if (ref.name.startsWith("-")) decided.set(ref, packageResult(ref, PackageResultState.FAILED, { reason: `"${ref.name}" is not a valid package name` }));
        else if (!item) continue;
        else if (item.pinned) {
          decided.set(ref, packageResult(ref, PackageResultState.SKIPPED, { from: item.installed, reason: `pinned in Homebrew (brew unpin ${item.name} to allow it)` }));
        } else if (ref.version && ref.version !== item.current) {
          decided.set(ref, packageResult(ref, PackageResultState.FAILED, {
            from: item.installed,
            to: ref.version,
            reason: `Homebrew can only install the current version of ${item.name} (${item.current}), not ${ref.version}`,
          }));
        } else if (!upgrade[kindOf(item)].includes(item)) upgrade[kindOf(item)].push(item);
      }

      const before = await installed(s);
      let text = "";
      let failedAll: string | undefined;
      for (const kind of KINDS) {
        if (upgrade[kind].length === 0) continue;
        const result = await s.run(["upgrade", `--${kind}`, ...upgrade[kind].map((i) => i.name)]);
        text += `${result.stdout}\n${result.stderr}\n`;
        if (result.exitCode !== 0) failedAll ??= brewFailure("brew upgrade", result);
        if (result.timedOut || result.aborted) break;
      }
      const ran = upgrade.formula.length + upgrade.cask.length > 0;
      const after = ran ? await installed(s) : before;
      // Without a usable `brew list` (both listings empty), "no longer outdated" is the evidence.
      const stillOutdated = ran && before.size === 0 && after.size === 0 ? await listOutdated(s.runner!, s.call()) : undefined;
      const versionsOf = (map: Map<string, string[]>, name: string, kind?: Kind) =>
        (kind ? map.get(`${kind}:${shortName(name)}`) : (map.get(`formula:${shortName(name)}`) ?? map.get(`cask:${shortName(name)}`))) ?? [];

      const results: PackageResult[] = refs.map((ref) => {
        const early = decided.get(ref);
        if (early) return early;
        const item = outdated.get(ref.name);
        if (item) {
          // Upgraded when the Cellar (or Caskroom) now holds the version brew offered.
          const now = versionsOf(after, item.name, kindOf(item));
          if (now.includes(item.current)) return packageResult(ref, PackageResultState.INSTALLED, { from: item.installed, to: item.current });
          if (stillOutdated && !stillOutdated.error && !stillOutdated.items.some((i) => i.name === item.name)) {
            return packageResult(ref, PackageResultState.INSTALLED, { from: item.installed, to: item.current });
          }
          const reason =
            brewReasonFor(item.name, text) ?? failedAll ?? (stillOutdated ? "still outdated after brew upgrade" : `still at ${newestVersion(now) || "no installed version"} after brew upgrade`);
          return packageResult(ref, PackageResultState.FAILED, { from: item.installed, to: item.current, reason });
        }
        // Not outdated: current already, not installed, or a dependency a confirmed dry run
        // named, which brew installs along with what needs it.
        const was = newestVersion(versionsOf(before, ref.name));
        const now = newestVersion(versionsOf(after, ref.name));
        if (now && now !== was && (!ref.version || now === ref.version)) return packageResult(ref, PackageResultState.INSTALLED, { from: was, to: now });
        if (now && (!ref.version || now === ref.version)) return packageResult(ref, PackageResultState.SKIPPED, { from: now, reason: "already up to date" });
        if (!ref.version && !was) return packageResult(ref, PackageResultState.SKIPPED, { reason: "not installed; only upgrades were requested" });
        const reason = brewReasonFor(ref.name, text) ?? failedAll ?? (now ? `${now} is installed; Homebrew cannot install ${ref.version}` : "not installed after brew upgrade");
        return packageResult(ref, PackageResultState.FAILED, { from: was, to: ref.version, reason });
      });

      // Dependencies and dependents brew upgraded or installed on its own account.
      const requested = new Set(refs.map((r) => shortName(r.name)));
      for (const [key, versions] of after) {
        const [kind, name] = key.split(":") as [Kind, string];
        if (requested.has(name)) continue;
        const was = newestVersion(before.get(key) ?? []);
        const now = newestVersion(versions);
        if (now !== was && !(before.get(key) ?? []).includes(now)) {
          results.push(packageResult({ source: BREW, name }, PackageResultState.INSTALLED, { from: was, to: now, reason: `changed by brew upgrade (${kind} dependency or dependent)` }));
        }
      }
      return { packages: results, output: s.output, rebootRequired: false, error: failedAll };
    },

    // No rollback: Homebrew installs only the current version of a formula or cask. Versioned
    // formulae (node@20) are separate packages, and `brew extract`/`brew version-install` build
    // a copy under another name in a personal tap (often from source) instead of putting the
    // old version of the same package back.
  };
}

export const brewInstaller: Installer = createBrewInstaller();

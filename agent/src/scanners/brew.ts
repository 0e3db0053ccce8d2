import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { readFile, stat } from "node:fs/promises";
import { describeFailure, runProcess, which, type ProcessResult } from "../run-process.ts";
import { scanSession } from "./common.ts";
import type { Scanner, ScanOptions, ScanResult } from "./types.ts";

export const BREW = "brew";

// Where Homebrew lives when a service's PATH does not include it.
export const BREW_LOCATIONS = ["/opt/homebrew/bin/brew", "/usr/local/bin/brew", "/home/linuxbrew/.linuxbrew/bin/brew"];

// Quiet, non-interactive, no auto-update (refresh decides), no analytics.
export const BREW_ENV = {
  HOMEBREW_NO_AUTO_UPDATE: "1",
  HOMEBREW_NO_ANALYTICS: "1",
  HOMEBREW_NO_ENV_HINTS: "1",
  HOMEBREW_NO_INSTALL_CLEANUP: "1",
  HOMEBREW_COLOR: "0",
  NONINTERACTIVE: "1",
};

export interface BrewOutdated {
  name: string;
  cask: boolean;
  installed: string;
  current: string;
  pinned: boolean;
}

// `brew outdated --json=v2`: formulae and casks. Old releases gave a cask's
// installed_versions as a string instead of an array.
export function parseOutdated(text: string): BrewOutdated[] {
  const data = JSON.parse(text) as {
    formulae?: { name?: unknown; installed_versions?: unknown; current_version?: unknown; pinned?: unknown }[];
    casks?: { name?: unknown; installed_versions?: unknown; current_version?: unknown }[];
  };
  const installed = (v: unknown) => (Array.isArray(v) ? String(v.at(-1) ?? "") : typeof v === "string" ? v : "");
  const out: BrewOutdated[] = [];
  for (const f of data.formulae ?? []) {
    if (typeof f.name !== "string") continue;
    out.push({ name: f.name, cask: false, installed: installed(f.installed_versions), current: String(f.current_version ?? ""), pinned: f.pinned === true });
  }
  for (const c of data.casks ?? []) {
    if (typeof c.name !== "string") continue;
    out.push({ name: c.name, cask: true, installed: installed(c.installed_versions), current: String(c.current_version ?? ""), pinned: false });
  }
  return out;
}

export function toBrewUpdate(o: BrewOutdated): PackageUpdate {
  const tap = o.name.split("/").length === 3 ? o.name.split("/").slice(0, 2).join("/") : o.cask ? "homebrew/cask" : "homebrew/core";
  return create(PackageUpdateSchema, {
    source: BREW,
    name: o.name,
    currentVersion: o.installed,
    availableVersion: o.current,
    architecture: "",
    repository: o.pinned ? `${tap} (pinned)` : tap,
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    rebootRequired: false,
  });
}

export interface BrewRunner {
  brew: string;
  env: NodeJS.ProcessEnv;
  uid?: number | undefined;
  gid?: number | undefined;
  // Why brew cannot run here, when it cannot.
  problem?: string | undefined;
}

// The home directory of a uid from /etc/passwd (Linux); macOS homes are /Users/<name>.
async function homeOf(uid: number, env: NodeJS.ProcessEnv): Promise<{ home?: string; user?: string }> {
  const passwd = await readFile("/etc/passwd", "utf8").catch(() => "");
  for (const line of passwd.split("\n")) {
    const f = line.split(":");
    if (Number(f[2]) === uid && f[5]) return { home: f[5], user: f[0] };
  }
  const id = await runProcess(["/usr/bin/id", "-nu", String(uid)], { env, timeoutMs: 5000 });
  const user = id.exitCode === 0 ? id.stdout.trim() : undefined;
  return user ? { user, home: process.platform === "darwin" ? `/Users/${user}` : `/home/${user}` } : {};
}

// Homebrew refuses to run as root. An agent running as root runs it as the user who owns the
// Homebrew installation, with that user's home.
export async function brewRunner(env: NodeJS.ProcessEnv, isRoot: boolean, locations = BREW_LOCATIONS): Promise<BrewRunner | undefined> {
  let brew = await which("brew", env.PATH ?? "");
  for (const candidate of brew ? [] : locations) {
    if (await stat(candidate).then((s) => s.isFile(), () => false)) {
      brew = candidate;
      break;
    }
  }
  if (!brew) return undefined;
  const base = { ...env, ...BREW_ENV };
  if (!isRoot) return { brew, env: base };
  const owner = await stat(brew).then((s) => ({ uid: s.uid, gid: s.gid }), () => undefined);
  if (!owner || owner.uid === 0) {
    return { brew, env: base, problem: "Homebrew is owned by root and refuses to run as root; install it as a regular user" };
  }
  const { home, user } = await homeOf(owner.uid, env);
  if (!home) return { brew, env: base, problem: `cannot find the home directory of uid ${owner.uid}, who owns Homebrew` };
  return { brew, uid: owner.uid, gid: owner.gid, env: { ...base, HOME: home, USER: user ?? "", LOGNAME: user ?? "" } };
}

export function runBrew(r: BrewRunner, args: string[], opts: { signal?: AbortSignal | undefined; timeoutMs: number }): Promise<ProcessResult> {
  return runProcess([r.brew, ...args], { env: r.env, signal: opts.signal, timeoutMs: opts.timeoutMs, uid: r.uid, gid: r.gid });
}

export async function outdated(r: BrewRunner, opts: { signal?: AbortSignal | undefined; timeoutMs: number }) {
  const res = await runBrew(r, ["outdated", "--json=v2"], opts);
  if (res.exitCode !== 0) return { error: describeFailure("brew outdated", res), items: [] as BrewOutdated[], result: res };
  try {
    return { items: parseOutdated(res.stdout), error: undefined, result: res };
  } catch {
    return { error: "brew outdated printed something that is not JSON", items: [] as BrewOutdated[], result: res };
  }
}

export async function scanBrew(opts: ScanOptions, locations = BREW_LOCATIONS): Promise<ScanResult> {
  const s = scanSession(BREW, opts);
  const runner = await brewRunner(s.env, opts.isRoot, locations);
  if (!runner) return s.notPresent("Homebrew is not installed on this host");
  if (runner.problem) return s.failed(runner.problem);
  const notes: string[] = [];
  if (!opts.refresh) notes.push("formulae not refreshed (refresh disabled)");
  else {
    const update = await runBrew(runner, ["update", "--quiet"], { signal: opts.signal, timeoutMs: Math.min(5 * 60_000, s.remaining() * 0.6) });
    if (opts.signal?.aborted) return s.failed("scan stopped");
    if (update.exitCode !== 0) notes.push(`formulae not refreshed: ${describeFailure("brew update", update)}`);
  }
  const list = await outdated(runner, { signal: opts.signal, timeoutMs: s.remaining() });
  if (list.error) return s.failed([list.error, ...notes].join("; "));
  const pinned = list.items.filter((i) => i.pinned).length;
  if (pinned > 0) notes.push(`${pinned} pinned (brew pin)`);
  return s.ran(list.items.map(toBrewUpdate), notes);
}

export const brewScanner: Scanner = { name: BREW, scan: (opts) => scanBrew(opts) };

import { create } from "@bufbuild/protobuf";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import { describeFailure, runProcess, tail, which, type ProcessResult } from "../../run-process.ts";
import { scanSession } from "../scan-common.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const BREW = "brew";

// Where Homebrew lives when a service's PATH does not include it: Apple silicon, Intel macOS,
// Linux.
export const BREW_LOCATIONS: readonly string[] = ["/opt/homebrew/bin/brew", "/usr/local/bin/brew", "/home/linuxbrew/.linuxbrew/bin/brew"];

// Never a question, never colour or emoji, no analytics, no hints; no auto-update (a scan with
// `refresh` runs `brew update` itself). HOMEBREW_COLOR would force colour whatever its value,
// so the "NO_" switches are used.
export const BREW_ENV: Readonly<Record<string, string>> = {
  HOMEBREW_NO_AUTO_UPDATE: "1",
  HOMEBREW_NO_ANALYTICS: "1",
  HOMEBREW_NO_ENV_HINTS: "1",
  HOMEBREW_NO_COLOR: "1",
  HOMEBREW_NO_EMOJI: "1",
  HOMEBREW_NO_ASK: "1",
  NONINTERACTIVE: "1",
};

// The agent's own per-user settings that must not follow brew when it runs as another user
// (a root TMPDIR or XDG cache it cannot write, sudo's record of who called it).
const PER_USER_ENV = /^(TMPDIR|XDG_[A-Z_]+|SUDO_[A-Z_]+|MAIL|HOMEBREW_COLOR|HOMEBREW_CACHE|HOMEBREW_LOGS|HOMEBREW_TEMP)$/;

export interface BrewOutdated {
  // Formulae by full name ("git", "hashicorp/tap/terraform"), casks by token ("firefox").
  name: string;
  cask: boolean;
  installed: string;
  current: string;
  pinned: boolean;
}

const versionOrder = new Intl.Collator("en", { numeric: true }).compare;

// The newest of several installed versions ("3.3.2", "3.3.2_1", "3.10.0").
export function newestVersion(versions: readonly string[]): string {
  return [...versions].sort(versionOrder).at(-1) ?? "";
}

// `brew outdated --json=v2`:
//   {"formulae":[{"name","installed_versions":[…],"current_version","pinned","pinned_version"}],
//    "casks":[{"name","installed_versions":[…] | "…","current_version"[,"pinned"]}]}
// Releases before Homebrew 4 gave a cask's installed_versions as a string; casks can be pinned
// since 2026. Throws when the text is not that JSON.
export function parseBrewOutdated(text: string): BrewOutdated[] {
  const data = parseJsonObject(text) as { formulae?: unknown; casks?: unknown };
  if (!Array.isArray(data.formulae ?? []) || !Array.isArray(data.casks ?? [])) throw new Error("not brew outdated JSON");
  const installed = (v: unknown) =>
    Array.isArray(v) ? newestVersion(v.filter((x): x is string => typeof x === "string")) : typeof v === "string" ? v : "";
  const out: BrewOutdated[] = [];
  for (const [list, cask] of [[data.formulae, false], [data.casks, true]] as const) {
    for (const raw of (list ?? []) as Record<string, unknown>[]) {
      if (!raw || typeof raw.name !== "string" || !raw.name) continue;
      out.push({
        name: raw.name,
        cask,
        installed: installed(raw.installed_versions),
        current: typeof raw.current_version === "string" ? raw.current_version : String(raw.current_version ?? ""),
        pinned: raw.pinned === true,
      });
    }
  }
  return out;
}

// JSON, or the one JSON object a tool printed between other lines.
function parseJsonObject(text: string): unknown {
  const trimmed = text.replace(/^\uFEFF/, "").trim();
  try {
    return JSON.parse(trimmed);
  } catch (err) {
    const start = trimmed.indexOf("{");
    const end = trimmed.lastIndexOf("}");
    if (start < 0 || end <= start) throw err;
    return JSON.parse(trimmed.slice(start, end + 1));
  }
}

// The tap a package comes from: "user/tap" for "user/tap/name", else Homebrew's own.
export function brewTap(o: Pick<BrewOutdated, "name" | "cask">): string {
  const parts = o.name.split("/");
  if (parts.length === 3) return `${parts[0]}/${parts[1]}`;
  return o.cask ? "homebrew/cask" : "homebrew/core";
}

// Homebrew says nothing about security or severity: every update is UNKNOWN. A pinned formula
// stays listed (it is outdated) and its repository says it is pinned; installs leave it alone.
export function toBrewUpdate(o: BrewOutdated): PackageUpdate {
  const tap = brewTap(o);
  return create(PackageUpdateSchema, {
    source: BREW,
    name: o.name,
    currentVersion: o.installed,
    availableVersion: o.current,
    architecture: "",
    repository: o.pinned ? `${tap} (pinned)` : tap,
    severity: UpdateSeverity.UNKNOWN,
    security: false,
    sizeBytes: 0n,
    rebootRequired: false,
  });
}

// How to run brew on this host: the executable, its environment, and the user to run it as.
export interface BrewRunner {
  brew: string;
  env: NodeJS.ProcessEnv;
  uid?: number | undefined;
  gid?: number | undefined;
  // The user brew runs as when the agent is root.
  user?: string | undefined;
  // Why brew cannot run here, when it cannot.
  problem?: string | undefined;
}

export interface BrewHostOptions {
  // Tried in order when brew is not on PATH.
  locations?: readonly string[];
  // Homebrew allows root inside containers (Docker, Podman) only.
  inContainer?: () => Promise<boolean>;
}

const exists = (file: string) => access(file).then(() => true, () => false);

async function defaultInContainer(): Promise<boolean> {
  if ((await exists("/.dockerenv")) || (await exists("/run/.containerenv"))) return true;
  const cgroup = await readFile("/proc/1/cgroup", "utf8").catch(() => "");
  return /azpl_job|actions_job|docker|garden|kubepods/.test(cgroup);
}

interface Account {
  user: string;
  gid: number;
  home: string;
}

// A passwd-format line for `uid`: /etc/passwd (Linux), else `id -P` (macOS keeps its users in
// Directory Services; `id -P` prints them in master.passwd format, home in field 9).
async function accountOf(uid: number, env: NodeJS.ProcessEnv): Promise<Account | undefined> {
  const passwd = await readFile("/etc/passwd", "utf8").catch(() => "");
  for (const line of passwd.split("\n")) {
    const f = line.split(":");
    if (f.length >= 7 && Number(f[2]) === uid && f[0] && f[5]) return { user: f[0], gid: Number(f[3]), home: f[5] };
  }
  const id = await runProcess(["/usr/bin/id", "-P", String(uid)], { env, timeoutMs: 5000 });
  const f = id.exitCode === 0 ? id.stdout.trim().split(":") : [];
  if (f.length >= 10 && f[0] && Number(f[2]) === uid && f[8]) return { user: f[0], gid: Number(f[3]), home: f[8] };
  return undefined;
}

export async function findBrew(env: NodeJS.ProcessEnv, locations: readonly string[] = BREW_LOCATIONS): Promise<string | undefined> {
  const onPath = await which("brew", env.PATH ?? "");
  if (onPath) return onPath;
  for (const candidate of locations) {
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

// Homebrew refuses to run as root (on macOS and on Linux outside containers): it would give
// every build script the whole machine. An agent running as root therefore runs brew as the
// user who owns the Homebrew installation, with that user's home; a root-owned Homebrew
// outside a container cannot run at all and is reported as such. An agent that is not root
// runs brew as itself.
export async function brewRunner(env: NodeJS.ProcessEnv, isRoot: boolean, options: BrewHostOptions = {}): Promise<BrewRunner | undefined> {
  const brew = await findBrew(env, options.locations ?? BREW_LOCATIONS);
  if (!brew) return undefined;
  const base: NodeJS.ProcessEnv = { ...env, ...BREW_ENV };
  delete base.HOMEBREW_COLOR;
  if (!isRoot) return { brew, env: base };
  const owner = await stat(brew).then((s) => ({ uid: s.uid, gid: s.gid }), () => undefined);
  if (!owner) return { brew, env: base, problem: `cannot read the owner of ${brew}` };
  if (owner.uid === 0) {
    if (await (options.inContainer ?? defaultInContainer)()) return { brew, env: base };
    return {
      brew,
      env: base,
      problem: `Homebrew refuses to run as root and ${brew} is owned by root; install Homebrew as a regular user, or run the agent as the user who owns the Homebrew prefix`,
    };
  }
  const account = await accountOf(owner.uid, env);
  if (!account) return { brew, env: base, problem: `cannot find the account of uid ${owner.uid}, who owns ${brew}; Homebrew refuses to run as root` };
  const userEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(base).filter(([k]) => !PER_USER_ENV.test(k)));
  return {
    brew,
    uid: owner.uid,
    gid: Number.isInteger(account.gid) ? account.gid : owner.gid,
    user: account.user,
    env: { ...userEnv, HOME: account.home, USER: account.user, LOGNAME: account.user },
  };
}

export function runBrew(r: BrewRunner, args: readonly string[], opts: { signal?: AbortSignal | undefined; timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<ProcessResult> {
  return runProcess([r.brew, ...args], { env: opts.env ?? r.env, signal: opts.signal, timeoutMs: opts.timeoutMs, uid: r.uid, gid: r.gid });
}

// Why a brew run failed: Homebrew's own "Error: …" lines when it printed any (its hints and
// warnings around them are noise), else the end of stderr.
export function brewFailure(what: string, result: ProcessResult): string {
  if (result.spawnError || result.timedOut || result.aborted) return describeFailure(what, result);
  const errors = `${result.stderr}\n${result.stdout}`
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("Error: "));
  if (errors.length === 0) return describeFailure(what, result);
  const status = result.exitCode !== null ? `exit status ${result.exitCode}` : `signal ${result.signal}`;
  return `${what} failed (${status}): ${tail([...new Set(errors)].join("; "), 300)}`;
}

export async function listOutdated(r: BrewRunner, opts: { signal?: AbortSignal | undefined; timeoutMs: number }) {
  const result = await runBrew(r, ["outdated", "--json=v2"], opts);
  if (result.exitCode !== 0) return { error: brewFailure("brew outdated", result), items: [] as BrewOutdated[], result };
  try {
    return { items: parseBrewOutdated(result.stdout), error: undefined, result };
  } catch {
    return { error: "brew outdated printed something that is not its JSON", items: [] as BrewOutdated[], result };
  }
}

export async function scanBrew(opts: ScanOptions, host: BrewHostOptions = {}): Promise<ScanResult> {
  const s = scanSession(BREW, opts);
  const runner = await brewRunner(s.env, opts.isRoot, host);
  if (!runner) return s.notPresent("Homebrew is not installed on this host");
  if (runner.problem) return s.failed(runner.problem);
  const notes: string[] = [];
  if (!opts.refresh) notes.push("formulae and casks not refreshed (refresh disabled)");
  else {
    // A failed refresh (network, another brew update running) still leaves the last metadata.
    const update = await runBrew(runner, ["update", "--quiet"], { signal: opts.signal, timeoutMs: Math.min(5 * 60_000, s.remaining() * 0.6) });
    if (opts.signal?.aborted) return s.failed("scan stopped");
    if (update.exitCode !== 0) notes.push(`formulae and casks not refreshed: ${brewFailure("brew update", update)}`);
  }
  const list = await listOutdated(runner, { signal: opts.signal, timeoutMs: s.remaining() });
  if (list.error) return s.failed([list.error, ...notes].join("; "));
  const pinned = list.items.filter((i) => i.pinned).length;
  if (pinned > 0) notes.push(`${pinned} pinned (brew pin), left out of installs of everything`);
  if (runner.user) notes.push(`run as ${runner.user}, who owns Homebrew`);
  return s.ran(list.items.map(toBrewUpdate), notes);
}

export const brewScanner: Scanner = { name: BREW, scan: (opts) => scanBrew(opts) };

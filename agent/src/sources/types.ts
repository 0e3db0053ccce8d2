import type { PackageChange, PackageRef, PackageResult, PackageUpdate, RollbackVersion, SubsystemRun, ToolOutput } from "@redflag/gen/command_pb";

// Scanning: finding a source's pending updates.

export interface ScanOptions {
  // Upper bound for the whole scan, including any metadata refresh.
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  // Environment for child processes; PATH decides which tools are found.
  env: NodeJS.ProcessEnv;
  isRoot: boolean;
  // Refresh the source's metadata first (apt-get update, dnf makecache …) when it can.
  refresh: boolean;
}

export interface ScanResult {
  // RAN, FAILED (with the reason) or NOT_PRESENT when the tool does not exist on this host.
  run: SubsystemRun;
  updates: PackageUpdate[];
}

// One package source (apt, dnf, docker …): its subsystem name and how to scan it. A missing
// tool is NOT_PRESENT, never an error; a tool that fails is FAILED with a human reason.
export interface Scanner {
  readonly name: string;
  scan(opts: ScanOptions): Promise<ScanResult>;
}

// Installing: dry runs, installs and rollbacks of a source's packages.

export interface InstallOptions {
  // Upper bound for the whole operation, every child process included.
  timeoutMs: number;
  // Aborted on the command's timeout or when the agent stops; pass it to every child.
  signal?: AbortSignal | undefined;
  // Environment for child processes; PATH decides which tools are found.
  env: NodeJS.ProcessEnv;
  isRoot: boolean;
  // Names of this source's packages the agent config holds. An "everything pending" install
  // must leave them out; explicit requests for them never reach the installer.
  holds: ReadonlySet<string>;
  // Names a confirmed update may add as new packages: the dependencies its upgrades pull in,
  // checked by the executor. Any other package that is not installed is skipped, never
  // installed (see installedOnly).
  newPackages?: ReadonlySet<string> | undefined;
}

export interface DryRunOutcome {
  // Every package the transaction would touch: the requested ones, new dependencies,
  // removals and downgrades.
  changes: PackageChange[];
  output: ToolOutput[];
  // Set when the simulation could not be done, as a human reason (tool missing, lock held,
  // unknown package …). `changes` is then empty.
  error?: string | undefined;
}

export interface InstallOutcome {
  // One entry per requested package (and per dependency the tool changed, when it says).
  packages: PackageResult[];
  output: ToolOutput[];
  rebootRequired: boolean;
  // Set when the transaction failed as a whole; `packages` still says what happened to each.
  error?: string | undefined;
}

// What `versions` found for one package: the earlier versions `rollback` can go to.
export interface VersionsOutcome {
  // The version installed now; "" when the package is not installed.
  installed: string;
  // Earlier versions `rollback` accepts as pkg.version, newest first.
  versions: RollbackVersion[];
  output: ToolOutput[];
  // Set when the tool could not be asked or failed, as a human reason; `versions` is then empty.
  error?: string | undefined;
}

// How one package source installs. Every method is given validated refs of its own source
// only (names and versions checked by `validateRef`), passes them as argv, never through a
// shell, and runs with the per-source lock already held by the caller.
export interface Installer {
  readonly source: string;
  // Whether the tool exists on this host.
  present(env: NodeJS.ProcessEnv): Promise<boolean>;
  // Simulates installing `packages` (version "" = newest); empty = everything pending.
  dryRun?(packages: readonly PackageRef[], opts: InstallOptions): Promise<DryRunOutcome>;
  // Installs `packages` (version "" = newest); empty = everything pending except holds.
  install(packages: readonly PackageRef[], opts: InstallOptions): Promise<InstallOutcome>;
  // Installs `pkg.version`, an earlier version than the installed one. Absent when the source
  // cannot go back; the executor then answers with a clear "unsupported".
  rollback?(pkg: PackageRef, opts: InstallOptions): Promise<InstallOutcome>;
  // The earlier versions of an installed package that `rollback` can go to (what a repository,
  // the cache or the tool still holds). Reads only; never installs, downloads or refreshes.
  // Absent where there is no rollback, or where the source cannot list them.
  versions?(pkg: PackageRef, opts: InstallOptions): Promise<VersionsOutcome>;
}

// One package source: its scanner and its installer, under the one name both answer to (a name
// of PACKAGE_SOURCES in @redflag/common).
export interface PackageSource {
  readonly name: string;
  readonly scanner: Scanner;
  readonly installer: Installer;
}

export type { PackageChange, PackageRef, PackageResult, RollbackVersion, ToolOutput };

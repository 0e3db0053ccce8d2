import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  type PackageChange,
  PackageChangeKind,
  PackageChangeSchema,
  type PackageRef,
  type PackageResult,
  PackageResultSchema,
  type RollbackVersion,
  RollbackVersionSchema,
  PackageResultState,
  type ToolOutput,
  ToolOutputSchema,
} from "@redflag/gen/command_pb";
import { PACKAGE_ARCH, PACKAGE_NAME, PACKAGE_VERSION, sourceNamePattern } from "@redflag/common/package-name";
import { runProcess, tail, type ProcessResult } from "../run-process.ts";
import type { InstallOptions, InstallOutcome } from "./types.ts";

// What a result keeps of each stream: enough to see why, never a whole log.
export const OUTPUT_TAIL_CHARS = 4096;

// The bounded record of one tool run for InstallResult/DryRunResult.
export function toolOutput(argv: readonly string[], result: ProcessResult): ToolOutput {
  return create(ToolOutputSchema, {
    argv: [...argv],
    exitCode: result.exitCode ?? -1,
    stdoutTail: tail(result.stdout, OUTPUT_TAIL_CHARS),
    stderrTail: tail(result.stderr || result.spawnError?.message || "", OUTPUT_TAIL_CHARS),
    duration: durationFromMs(result.durationMs),
    timedOut: result.timedOut,
  });
}

export function packageResult(
  ref: Pick<PackageRef, "source" | "name"> & Partial<Pick<PackageRef, "architecture">>,
  state: PackageResultState,
  fields: { from?: string | undefined; to?: string | undefined; reason?: string | undefined } = {},
): PackageResult {
  return create(PackageResultSchema, {
    source: ref.source,
    name: ref.name,
    architecture: ref.architecture ?? "",
    fromVersion: fields.from ?? "",
    toVersion: fields.to ?? "",
    state,
    reason: fields.reason ?? "",
  });
}

export function packageChange(
  kind: PackageChangeKind,
  source: string,
  name: string,
  fields: { from?: string | undefined; to?: string | undefined; architecture?: string | undefined } = {},
): PackageChange {
  return create(PackageChangeSchema, {
    kind,
    source,
    name,
    fromVersion: fields.from ?? "",
    toVersion: fields.to ?? "",
    architecture: fields.architecture ?? "",
  });
}

// A human reason when a ref cannot be passed to a package tool; undefined when it can.
export function validateRef(ref: Pick<PackageRef, "name" | "version" | "architecture"> & { source?: string }): string | undefined {
  if (!ref.name) return "the package name is empty";
  if (!PACKAGE_NAME.test(ref.name)) return `"${printable(ref.name)}" is not a valid package name`;
  const rule = ref.source ? sourceNamePattern(ref.source) : undefined;
  if (rule && !rule.test(ref.name)) return `"${printable(ref.name)}" is not a valid ${ref.source} package name (no paths, URLs, groups or repositories)`;
  if (ref.version && !PACKAGE_VERSION.test(ref.version)) return `"${printable(ref.version)}" is not a valid version of ${ref.name}`;
  if (!PACKAGE_ARCH.test(ref.architecture)) return `"${printable(ref.architecture)}" is not a valid architecture`;
  return undefined;
}

const printable = (text: string) => (text.length > 64 ? `${text.slice(0, 64)}…` : text).replace(/[^\x20-\x7e]/g, "?");

export { PackageChangeKind, PackageResultState };

export const NOT_INSTALLED =
  "not installed: RedFlag updates and rolls back packages a host has; new packages come in only as dependencies of a confirmed update";

// Splits the refs an installer was given into those it may hand to its tool (installed now, or
// a new dependency a confirmed update pulls in: opts.newPackages) and SKIPPED results for the
// rest, which never reach the tool. Whoever sent the command, an update never installs
// software the host does not have.
export function installedOnly<T extends Pick<PackageRef, "source" | "name" | "architecture" | "version">>(
  refs: readonly T[],
  isInstalled: (ref: T) => boolean,
  opts: Pick<InstallOptions, "newPackages">,
): { allowed: T[]; skipped: Map<T, PackageResult> } {
  const allowed: T[] = [];
  const skipped = new Map<T, PackageResult>();
  for (const ref of refs) {
    if (isInstalled(ref) || opts.newPackages?.has(ref.name)) allowed.push(ref);
    else skipped.set(ref, packageResult(ref, PackageResultState.SKIPPED, { to: ref.version || undefined, reason: NOT_INSTALLED }));
  }
  return { allowed, skipped };
}

// The clock, environment and tool-output record of one installer operation: every child gets
// what is left of the budget and the command's signal, and each run can be recorded.
export function toolSession(opts: InstallOptions, extraEnv: NodeJS.ProcessEnv = {}) {
  const deadline = Date.now() + opts.timeoutMs;
  const env: NodeJS.ProcessEnv = { ...opts.env, ...extraEnv };
  const output: ToolOutput[] = [];
  const run = async (argv: string[], record = true, runEnv: NodeJS.ProcessEnv = env): Promise<ProcessResult> => {
    const result = await runProcess(argv, { env: runEnv, signal: opts.signal, timeoutMs: Math.max(1000, deadline - Date.now()) });
    if (record) output.push(toolOutput(argv, result));
    return result;
  };
  return { env, output, run, remaining: () => deadline - Date.now() };
}
export type ToolSession = ReturnType<typeof toolSession>;

// Every package FAILED because the agent is not root, and nothing run.
export function needsRoot(refs: readonly Pick<PackageRef, "source" | "name" | "architecture">[], what: string, output: ToolOutput[]): InstallOutcome {
  return {
    packages: refs.map((r) => packageResult(r, PackageResultState.FAILED, { reason: `${what} needs root` })),
    output,
    rebootRequired: false,
    error: `${what} needs root; run the agent as root`,
  };
}

// At most this many earlier versions are offered per package (ListPackageVersions).
export const MAX_ROLLBACK_VERSIONS = 50;
const MAX_VERSION_DESCRIPTION = 200;

// The versions a source found, as ListPackageVersions reports them: only what a rollback would
// accept (the version rule of @redflag/common, which also refuses a leading "-"), each once, in
// the order given (newest first), at most MAX_ROLLBACK_VERSIONS.
export function rollbackVersions(found: readonly { version: string; description?: string | undefined }[]): RollbackVersion[] {
  const seen = new Set<string>();
  const versions: RollbackVersion[] = [];
  for (const { version, description } of found) {
    if (!PACKAGE_VERSION.test(version) || seen.has(version)) continue;
    seen.add(version);
    const text = (description ?? "").replace(/[\u0000-\u001f\u007f]/g, " ");
    versions.push(create(RollbackVersionSchema, { version, description: text.length > MAX_VERSION_DESCRIPTION ? `${text.slice(0, MAX_VERSION_DESCRIPTION - 1)}…` : text }));
    if (versions.length === MAX_ROLLBACK_VERSIONS) break;
  }
  return versions;
}

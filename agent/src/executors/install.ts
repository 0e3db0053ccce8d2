import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { compileHolds } from "@redflag/common/holds";
import { pick, plural } from "@redflag/common/plural";
import type { PackageHold } from "@redflag/gen/common_pb";
import {
  CommandOutcome,
  DryRunResultSchema,
  InstallResultSchema,
  type PackageChange,
  PackageChangeKind,
  type PackageRef,
  PackageRefSchema,
  type PackageResult,
  PackageResultState,
  SubsystemRunState,
  type ToolOutput,
} from "@redflag/gen/command_pb";
import { packageResult, validateRef } from "../sources/install-common.ts";
import type { InstallOptions, Installer, InstallOutcome, Scanner } from "../sources/types.ts";
import { INSTALLERS, scannerNamed } from "../sources/index.ts";
import type { Executor, ExecutorContext } from "./types.ts";

// install_updates, dry_run_update, confirm_dependencies and rollback_update share one shape:
// group the packages by source, refuse what is invalid or held, then run each source's
// installer with that source's lock held (so a scan never overlaps an install), and report
// every package.

export interface InstallDeps {
  installers?: ReadonlyMap<string, Installer>;
  // Lists the pending updates of a source for "install everything" (default: its scanner).
  scanner?: (source: string) => Scanner | undefined;
  // The clock InstallUpdates.not_after is compared with (default: Date.now).
  now?: () => number;
}

const KIND_NAMES: Record<number, string> = {
  [PackageChangeKind.UPGRADE]: "upgrade",
  [PackageChangeKind.INSTALL]: "install",
  [PackageChangeKind.REMOVE]: "remove",
  [PackageChangeKind.DOWNGRADE]: "downgrade",
};

// The same changes counted: "2 upgrades, 1 removal".
const KIND_COUNTED: Record<string, [string, string]> = {
  upgrade: ["upgrade", "upgrades"],
  install: ["install", "installs"],
  remove: ["removal", "removals"],
  downgrade: ["downgrade", "downgrades"],
};

// A hold names a package of one source or of every source ("*"); "*" in the name matches any
// run of characters, so "linux-image-*" holds every kernel (common/holds: the control plane's
// rule, matched without backtracking).
export function holdMatcher(holds: readonly PackageHold[]) {
  const compiled = compileHolds(holds);
  const find = (source: string, name: string) => compiled.find(source, name);
  return {
    find,
    // Why a package is held, or undefined when it is not.
    reason(source: string, name: string): string | undefined {
      const hold = find(source, name);
      if (!hold) return undefined;
      return hold.reason ? `held by the agent config (${hold.name}): ${hold.reason}` : `held by the agent config (${hold.name})`;
    },
    // Exact names held for one source, for installers that exclude them themselves.
    exactNames: (source: string) =>
      new Set(holds.filter((h) => (!h.source || h.source === "*" || h.source === source) && !h.name.includes("*")).map((h) => h.name)),
  };
}
type Holds = ReturnType<typeof holdMatcher>;


interface SourceReport {
  packages: PackageResult[];
  output: ToolOutput[];
  rebootRequired: boolean;
  // Whole-source failures, "apt: reason".
  errors: string[];
}

const emptyReport = (): SourceReport => ({ packages: [], output: [], rebootRequired: false, errors: [] });

function absorb(report: SourceReport, source: string, outcome: InstallOutcome): void {
  report.packages.push(...outcome.packages);
  report.output.push(...outcome.output);
  report.rebootRequired ||= outcome.rebootRequired;
  if (outcome.error) report.errors.push(`${source}: ${outcome.error}`);
}

function options(ctx: ExecutorContext, source: string, holds: Holds): InstallOptions {
  return {
    timeoutMs: Math.max(1000, ctx.deadline - Date.now()),
    signal: ctx.signal,
    env: ctx.env,
    isRoot: process.getuid?.() === 0,
    holds: holds.exactNames(source),
  };
}

function groupBySource<T extends { source: string }>(items: readonly T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const list = groups.get(item.source) ?? [];
    list.push(item);
    groups.set(item.source, list);
  }
  return groups;
}

// The installer for a source, or why there is none on this host.
async function installerFor(
  installers: ReadonlyMap<string, Installer>,
  source: string,
  env: NodeJS.ProcessEnv,
): Promise<{ installer: Installer; error?: undefined } | { installer?: undefined; error: string }> {
  if (!source) return { error: "the package source is empty" };
  const installer = installers.get(source);
  if (!installer) return { error: `${source} is not a package source this agent can install from` };
  if (!(await installer.present(env))) return { error: `${source} is not installed on this host` };
  return { installer };
}

// Simulates first where the source can, and refuses the whole transaction when it would touch
// a held package, even as a dependency.
async function guardedInstall(
  ctx: ExecutorContext,
  installer: Installer,
  refs: PackageRef[],
  holds: Holds,
  report: SourceReport,
  apply: (opts: InstallOptions) => ReturnType<Installer["install"]>,
): Promise<void> {
  const opts = options(ctx, installer.source, holds);
  if (installer.dryRun) {
    const sim = await installer.dryRun(refs, opts);
    report.output.push(...sim.output);
    if (sim.error) {
      report.errors.push(`${installer.source}: ${sim.error}`);
      report.packages.push(...refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason: sim.error })));
      return;
    }
    const touched = sim.changes.filter((c) => holds.find(c.source || installer.source, c.name));
    if (touched.length > 0) {
      const names = touched.map((c) => `${c.name} (${holds.reason(c.source || installer.source, c.name)})`).join(", ");
      const reason = `refused: the transaction would ${KIND_NAMES[touched[0]!.kind] ?? "change"} held ${pick(touched.length, "package", "packages")} ${names}`;
      report.errors.push(`${installer.source}: ${reason}`);
      report.packages.push(...refs.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason })));
      return;
    }
  }
  if (ctx.signal.aborted) return;
  absorb(report, installer.source, await apply(options(ctx, installer.source, holds)));
}

function summarize(report: SourceReport, verb: string): { outcome: CommandOutcome; message: string } {
  const count = (state: PackageResultState) => report.packages.filter((p) => p.state === state).length;
  const [installed, failed, skipped] = [count(PackageResultState.INSTALLED), count(PackageResultState.FAILED), count(PackageResultState.SKIPPED)];
  const parts = [`${verb} ${installed}`, `failed ${failed}`, `skipped ${skipped}`];
  // Failures grouped by reason ("apt/a, apt/b: lock held"); a source's overall error is left
  // out when its packages already say why they failed.
  const byReason = new Map<string, string[]>();
  for (const p of report.packages.filter((p) => p.state === PackageResultState.FAILED)) {
    byReason.set(p.reason, [...(byReason.get(p.reason) ?? []), `${p.source}/${p.name}`]);
  }
  const failures = [...byReason].slice(0, 5).map(([reason, names]) => `${names.join(", ")}: ${reason}`);
  const failedSources = new Set(report.packages.filter((p) => p.state === PackageResultState.FAILED).map((p) => p.source));
  const errors = report.errors.filter((e) => ![...failedSources].some((source) => e.startsWith(`${source}: `)));
  let message = parts.join(", ");
  if (report.rebootRequired) message += "; a reboot is required";
  if (failures.length > 0 || errors.length > 0) message += `; ${[...errors, ...failures].join("; ")}`;
  const ok = failed === 0 && report.errors.length === 0;
  return { outcome: ok ? CommandOutcome.SUCCEEDED : CommandOutcome.FAILED, message };
}

// Checks refs and splits off the ones that cannot go to an installer: invalid (FAILED) or
// held (SKIPPED).
function admit(refs: readonly PackageRef[], holds: Holds, report: SourceReport): PackageRef[] {
  const admitted: PackageRef[] = [];
  for (const ref of refs) {
    const invalid = validateRef(ref) ?? (ref.source ? undefined : "the package source is empty");
    if (invalid) {
      report.packages.push(packageResult(ref, PackageResultState.FAILED, { reason: invalid }));
      continue;
    }
    const held = holds.reason(ref.source, ref.name);
    if (held) {
      report.packages.push(packageResult(ref, PackageResultState.SKIPPED, { reason: held }));
      continue;
    }
    admitted.push(ref);
  }
  return admitted;
}

export const createInstallUpdates = (deps: InstallDeps = {}): Executor => async (ctx) => {
  if (ctx.command.action.case !== "installUpdates") throw new Error("not an install_updates command");
  const installers = deps.installers ?? INSTALLERS;
  const scannerOf = deps.scanner ?? scannerNamed;
  const { packages, sources, notAfter } = ctx.command.action.value;
  const holds = holdMatcher(ctx.agentConfig?.holds ?? []);
  const report = emptyReport();
  // The end of the maintenance window the command was queued in (or the start of a blackout):
  // no package starts at or after it; the ones left are reported as skipped.
  const endsAt = notAfter ? timestampMs(notAfter) : undefined;
  const now = deps.now ?? Date.now;
  const over = () => endsAt !== undefined && now() >= endsAt;
  const lateReason = endsAt === undefined ? "" : `not started: the maintenance window ended at ${new Date(endsAt).toISOString()}`;
  let notStarted = 0;
  const late = (refs: readonly PackageRef[]) => {
    notStarted += refs.length;
    return refs.map((r) => packageResult(r, PackageResultState.SKIPPED, { to: r.version, reason: lateReason }));
  };
  if (packages.length === 0 && sources.length === 0) {
    return { outcome: CommandOutcome.FAILED, message: "install_updates names no packages and no sources; nothing was installed" };
  }

  // Named packages, or every pending update of the named sources.
  const groups = packages.length > 0 ? groupBySource(admit(packages, holds, report)) : new Map([...new Set(sources)].map((s) => [s, [] as PackageRef[]]));
  for (const [source, named] of groups) {
    const found = await installerFor(installers, source, ctx.env);
    if (!found.installer) {
      report.errors.push(`${source || "(no source)"}: ${found.error}`);
      report.packages.push(...named.map((r) => packageResult(r, PackageResultState.FAILED, { reason: found.error })));
      continue;
    }
    const installer = found.installer;
    await ctx.locks.run(source, async () => {
      let refs = named;
      if (packages.length === 0) {
        const pending = await pendingUpdates(ctx, scannerOf(source), source);
        if (pending.error) {
          report.errors.push(`${source}: ${pending.error}`);
          return;
        }
        refs = admit(pending.refs, holds, report);
      }
      if (refs.length === 0) return;
      if (endsAt === undefined) return guardedInstall(ctx, installer, refs, holds, report, (opts) => installer.install(refs, opts));
      // Bounded by a window: one package at a time, each started only before its end.
      for (const [i, ref] of refs.entries()) {
        if (over()) return void report.packages.push(...late(refs.slice(i)));
        // Checked again after the simulation, right before the package starts.
        await guardedInstall(ctx, installer, [ref], holds, report, async (opts) =>
          over() ? { packages: late([ref]), output: [], rebootRequired: false } : installer.install([ref], opts),
        );
        if (ctx.signal.aborted) return;
      }
    });
    if (ctx.signal.aborted) break;
  }

  const result = create(InstallResultSchema, report);
  const summary = summarize(report, "installed");
  if (notStarted > 0) summary.message += `; ${plural(notStarted, "package", "packages")} ${lateReason}`;
  return { ...summary, detail: { case: "installUpdates", value: result } };
};

// Every update the source's scanner reports now, as refs for its installer.
async function pendingUpdates(ctx: ExecutorContext, scanner: Scanner | undefined, source: string) {
  if (!scanner) return { refs: [], error: `${source} cannot list its pending updates` };
  const scan = await scanner.scan({
    refresh: false,
    timeoutMs: Math.max(1000, ctx.deadline - Date.now()),
    signal: ctx.signal,
    env: ctx.env,
    isRoot: process.getuid?.() === 0,
  });
  if (scan.updates.length === 0 && scan.run.state !== SubsystemRunState.RAN) return { refs: [], error: scan.run.message };
  const refs = scan.updates.map((u) => create(PackageRefSchema, { source, name: u.name, architecture: u.architecture }));
  return { refs, error: undefined };
}

export const createDryRunUpdate = (deps: InstallDeps = {}): Executor => async (ctx) => {
  if (ctx.command.action.case !== "dryRunUpdate") throw new Error("not a dry_run_update command");
  const installers = deps.installers ?? INSTALLERS;
  const holds = holdMatcher(ctx.agentConfig?.holds ?? []);
  const { packages } = ctx.command.action.value;
  if (packages.length === 0) return { outcome: CommandOutcome.FAILED, message: "dry_run_update names no packages" };
  const report = emptyReport();
  const admitted = admit(packages, holds, report);
  const changes: PackageChange[] = [];
  const problems = [
    ...report.packages.map((p) => `${p.source}/${p.name}: ${p.reason}`),
  ];
  for (const [source, refs] of groupBySource(admitted)) {
    const found = await installerFor(installers, source, ctx.env);
    if (!found.installer) {
      problems.push(`${source}: ${found.error}`);
      continue;
    }
    const installer = found.installer;
    if (!installer.dryRun) {
      problems.push(`${source}: this source cannot simulate an install`);
      continue;
    }
    const sim = await ctx.locks.run(source, () => installer.dryRun!(refs, options(ctx, source, holds)));
    report.output.push(...sim.output);
    if (sim.error) problems.push(`${source}: ${sim.error}`);
    changes.push(...sim.changes);
    for (const c of sim.changes) {
      const held = holds.reason(c.source || source, c.name);
      if (held) problems.push(`${source}/${c.name} would ${KIND_NAMES[c.kind] ?? "change"} but is ${held}; an install would be refused`);
    }
  }
  const detail = { case: "dryRunUpdate" as const, value: create(DryRunResultSchema, { changes, output: report.output }) };
  const counts = Object.entries(KIND_NAMES)
    .map(([kind, name]) => [name, changes.filter((c) => c.kind === Number(kind)).length] as const)
    .filter(([, n]) => n > 0)
    .map(([name, n]) => plural(n, ...KIND_COUNTED[name]!));
  const summary = changes.length === 0 ? "no package would change" : `${plural(changes.length, "package would change", "packages would change")}: ${counts.join(", ")}`;
  return {
    outcome: problems.length === 0 ? CommandOutcome.SUCCEEDED : CommandOutcome.FAILED,
    message: [summary, ...problems].join("; "),
    detail,
  };
};

const changeKey = (c: PackageChange) => `${KIND_NAMES[c.kind] ?? c.kind} ${c.name}${c.architecture ? `:${c.architecture}` : ""} ${c.toVersion || c.fromVersion}`;

export const createConfirmDependencies = (deps: InstallDeps = {}): Executor => async (ctx) => {
  if (ctx.command.action.case !== "confirmDependencies") throw new Error("not a confirm_dependencies command");
  const installers = deps.installers ?? INSTALLERS;
  const holds = holdMatcher(ctx.agentConfig?.holds ?? []);
  const { changes, dryRunCommandId } = ctx.command.action.value;
  const from = dryRunCommandId ? ` of dry run ${dryRunCommandId}` : "";
  if (changes.length === 0) return { outcome: CommandOutcome.FAILED, message: `confirm_dependencies carries no changes${from}` };
  const report = emptyReport();

  for (const change of changes) {
    const invalid = validateRef({ source: change.source, name: change.name, version: change.toVersion, architecture: change.architecture })
      ?? (change.kind === PackageChangeKind.UNSPECIFIED ? "the change has no kind" : undefined)
      ?? (change.kind !== PackageChangeKind.REMOVE && !change.toVersion ? "the change has no target version" : undefined);
    if (invalid) return { outcome: CommandOutcome.FAILED, message: `nothing was installed: ${change.source}/${change.name}: ${invalid}` };
  }

  for (const [source, confirmed] of groupBySource(changes)) {
    const found = await installerFor(installers, source, ctx.env);
    const installer = found.installer;
    const targets = confirmed
      .filter((c) => c.kind !== PackageChangeKind.REMOVE)
      .map((c) => create(PackageRefSchema, { source, name: c.name, version: c.toVersion, architecture: c.architecture }));
    const fail = (reason: string) => {
      report.errors.push(`${source}: ${reason}`);
      report.packages.push(...targets.map((r) => packageResult(r, PackageResultState.FAILED, { to: r.version, reason })));
    };
    if (!installer) {
      fail(found.error!);
      continue;
    }
    if (!installer.dryRun) {
      fail("this source cannot simulate an install, so a dry run of it cannot be confirmed");
      continue;
    }
    const held = confirmed.find((c) => holds.find(source, c.name));
    if (held) {
      fail(`refused: ${held.name} is ${holds.reason(source, held.name)}`);
      continue;
    }
    await ctx.locks.run(source, async () => {
      // The host may have changed since the dry run (new repository metadata, another install):
      // simulate the exact versions again and install only when the set is still the same.
      const sim = await installer.dryRun!(targets, options(ctx, source, holds));
      report.output.push(...sim.output);
      if (sim.error) return fail(sim.error);
      const want = new Set(confirmed.map(changeKey));
      const now = new Set(sim.changes.map(changeKey));
      const added = [...now].filter((k) => !want.has(k));
      const gone = [...want].filter((k) => !now.has(k));
      if (added.length > 0 || gone.length > 0) {
        const diff = [...added.map((k) => `now also ${k}`), ...gone.map((k) => `no longer ${k}`)].slice(0, 10).join(", ");
        return fail(`the changes differ from the confirmed dry run (${diff}); nothing was installed, run a new dry run`);
      }
      // A set that names its new packages itself simulates as itself. A new package is
      // confirmed only when the upgrades alone pull it in: the host's resolver chose it.
      const fresh = confirmed.filter((c) => c.kind === PackageChangeKind.INSTALL);
      if (fresh.length > 0) {
        const upgrades = targets.filter((t) => !fresh.some((c) => c.name === t.name && (c.architecture || "") === (t.architecture || "")));
        const pulled = upgrades.length > 0 ? await installer.dryRun!(upgrades, options(ctx, source, holds)) : undefined;
        if (pulled) report.output.push(...pulled.output);
        if (pulled?.error) return fail(pulled.error);
        const needed = new Set((pulled?.changes ?? []).filter((c) => c.kind === PackageChangeKind.INSTALL).map(changeKey));
        const stray = fresh.filter((c) => !needed.has(changeKey(c)));
        if (stray.length > 0) {
          return fail(
            `refused: ${stray.map((c) => c.name).slice(0, 10).join(", ")} would be new on this host, and no update in the set needs it; RedFlag installs new packages only as dependencies of an update`,
          );
        }
      }
      const newPackages = new Set(fresh.map((c) => c.name));
      absorb(report, source, await installer.install(targets, { ...options(ctx, source, holds), newPackages }));
    });
    if (ctx.signal.aborted) break;
  }
  const summary = summarize(report, "installed");
  return { ...summary, detail: { case: "confirmDependencies", value: create(InstallResultSchema, report) } };
};

export const createRollbackUpdate = (deps: InstallDeps = {}): Executor => async (ctx) => {
  if (ctx.command.action.case !== "rollbackUpdate") throw new Error("not a rollback_update command");
  const installers = deps.installers ?? INSTALLERS;
  const holds = holdMatcher(ctx.agentConfig?.holds ?? []);
  const { package: pkg, targetVersion } = ctx.command.action.value;
  const report = emptyReport();
  const done = (verb = "rolled back") => ({ ...summarize(report, verb), detail: { case: "rollbackUpdate" as const, value: create(InstallResultSchema, report) } });
  if (!pkg) return { outcome: CommandOutcome.FAILED, message: "rollback_update names no package" };
  const version = targetVersion || pkg.version;
  const ref = create(PackageRefSchema, { ...pkg, version });
  if (!version) {
    report.packages.push(packageResult(ref, PackageResultState.FAILED, { reason: "no target version to roll back to" }));
    return done();
  }
  const [admitted] = admit([ref], holds, report);
  if (!admitted) {
    // A held package is never touched, a rollback included.
    const entry = report.packages[0]!;
    if (entry.state === PackageResultState.SKIPPED) entry.state = PackageResultState.FAILED;
    report.errors.push(`${ref.source}: ${entry.reason}`);
    return done();
  }
  const found = await installerFor(installers, ref.source, ctx.env);
  if (!found.installer?.rollback) {
    const reason = found.error ?? `rollback is not supported for ${ref.source}: it cannot install an earlier version`;
    report.packages.push(packageResult(ref, PackageResultState.FAILED, { to: version, reason }));
    return done();
  }
  const installer = found.installer;
  // Not simulated first: most sources simulate only forward upgrades. The named package is
  // checked against the holds above; apt reports any dependency it has to move back with it.
  await ctx.locks.run(ref.source, async () => {
    absorb(report, ref.source, await installer.rollback!(ref, options(ctx, ref.source, holds)));
  });
  return done();
};

export const installUpdates = createInstallUpdates();
export const dryRunUpdate = createDryRunUpdate();
export const confirmDependencies = createConfirmDependencies();
export const rollbackUpdate = createRollbackUpdate();

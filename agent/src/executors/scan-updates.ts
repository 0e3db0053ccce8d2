import { create } from "@bufbuild/protobuf";
import { plural, pluralOrNo } from "@redflag/common/plural";
import {
  CommandOutcome,
  type PackageUpdate,
  ScanUpdatesResultSchema,
  type SubsystemRun,
  SubsystemRunSchema,
  SubsystemRunState,
} from "@redflag/gen/command_pb";
import { createHostAccess } from "../platform.ts";
import { SCANNERS, scannerNamed } from "../sources/index.ts";
import { collectStorageMetrics, collectSystemMetrics, STORAGE, SYSTEM } from "../metrics.ts";
import type { Executor } from "./types.ts";

export const scanUpdates: Executor = async (ctx) => {
  const requested = ctx.command.action.case === "scanUpdates" ? ctx.command.action.value.subsystems : [];
  const configured = new Map((ctx.agentConfig?.subsystems ?? []).map((s) => [s.name, s]));
  const runs: SubsystemRun[] = [];
  const updates: PackageUpdate[] = [];
  const result = create(ScanUpdatesResultSchema, {});

  // An explicit list runs what it names; an empty one runs every enabled subsystem.
  const names = requested.length > 0 ? [...new Set(requested)] : [...SCANNERS.map((s) => s.name), SYSTEM, STORAGE];
  for (const name of names) {
    const sub = configured.get(name);
    if (requested.length === 0 && sub && !sub.enabled) {
      runs.push(skipped(name, "disabled in the agent config"));
      continue;
    }
    if (name === SYSTEM) {
      const system = await collectSystemMetrics(ctx.signal, ctx.host ?? createHostAccess(ctx.env));
      runs.push(system.run);
      result.systemMetrics = system.metrics;
      continue;
    }
    if (name === STORAGE) {
      const storage = await collectStorageMetrics(ctx.signal, ctx.host ?? createHostAccess(ctx.env));
      runs.push(storage.run);
      result.storageMetrics = storage.metrics;
      continue;
    }
    const scanner = scannerNamed(name);
    if (!scanner) {
      runs.push(skipped(name, `${name} is not supported by this agent yet`));
      continue;
    }
    // An operator who names a subsystem gets a run even while its breaker is open.
    const breaker = ctx.breakers.check(name, sub?.circuitBreaker);
    if (!breaker.allowed && (requested.length === 0 || ctx.automatic)) {
      runs.push(skipped(name, breaker.reason));
      continue;
    }
    const subsystemMs = sub?.timeoutSeconds ? sub.timeoutSeconds * 1000 : Infinity;
    const scan = await ctx.locks.run(name, () => scanner.scan({
      refresh: ctx.aptRefresh,
      timeoutMs: Math.max(1000, Math.min(subsystemMs, ctx.deadline - Date.now())),
      signal: ctx.signal,
      env: ctx.env,
      isRoot: process.getuid?.() === 0,
    }));
    ctx.breakers.record(name, sub?.circuitBreaker, scan.run.state !== SubsystemRunState.FAILED);
    runs.push(scan.run);
    updates.push(...scan.updates);
  }

  result.updates = updates;
  result.subsystems = runs;
  const detail = { case: "scanUpdates" as const, value: result };
  // Outcome and summary speak of the package sources; metrics add their own line.
  const sources = runs.filter((r) => r.subsystem !== SYSTEM && r.subsystem !== STORAGE);
  const metrics = runs.filter((r) => !sources.includes(r) && r.state === SubsystemRunState.RAN);
  const ran = sources.filter((r) => r.state === SubsystemRunState.RAN);
  const failed = sources.filter((r) => r.state === SubsystemRunState.FAILED);
  if (ran.length === 0 && failed.length > 0) {
    return {
      outcome: CommandOutcome.FAILED,
      message: failed.map((r) => `${r.subsystem}: ${r.message}`).join("; "),
      detail,
    };
  }
  const security = updates.filter((u) => u.security).length;
  const parts: string[] = [];
  if (ran.length > 0) parts.push(updates.length === 0 ? `found ${pluralOrNo(0, "update")}` : `found ${plural(updates.length, "update")}, ${security} security`);
  else if (sources.length > 0 && sources.every((r) => r.state === SubsystemRunState.NOT_PRESENT)) {
    parts.push("no package source to scan on this host");
  }
  parts.push(...failed.map((r) => `${r.subsystem} failed: ${r.message}`));
  parts.push(...sources.filter((r) => r.state === SubsystemRunState.SKIPPED).map((r) => `${r.subsystem} skipped: ${r.message}`));
  parts.push(...metrics.map((r) => `${r.subsystem}: ${r.message}`));
  const message = parts.join("; ");
  return { outcome: CommandOutcome.SUCCEEDED, message, detail };
};

function skipped(subsystem: string, message: string): SubsystemRun {
  return create(SubsystemRunSchema, { subsystem, state: SubsystemRunState.SKIPPED, message });
}

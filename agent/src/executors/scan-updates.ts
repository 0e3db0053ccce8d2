import { create } from "@bufbuild/protobuf";
import {
  CommandOutcome,
  type PackageUpdate,
  ScanUpdatesResultSchema,
  type SubsystemRun,
  SubsystemRunSchema,
  SubsystemRunState,
} from "@redflag/gen/command_pb";
import { SCANNERS, scannerNamed } from "../scanners/index.ts";
import type { Executor } from "./types.ts";

export const scanUpdates: Executor = async (ctx) => {
  const requested = ctx.command.action.case === "scanUpdates" ? ctx.command.action.value.subsystems : [];
  const configured = new Map((ctx.agentConfig?.subsystems ?? []).map((s) => [s.name, s]));
  const runs: SubsystemRun[] = [];
  const updates: PackageUpdate[] = [];

  // An explicit list runs what it names; an empty one runs every enabled subsystem.
  const names = requested.length > 0 ? [...new Set(requested)] : SCANNERS.map((s) => s.name);
  for (const name of names) {
    const sub = configured.get(name);
    const scanner = scannerNamed(name);
    if (!scanner) {
      runs.push(skipped(name, `${name} is not supported by this agent yet`));
      continue;
    }
    if (requested.length === 0 && sub && !sub.enabled) {
      runs.push(skipped(name, "disabled in the agent config"));
      continue;
    }
    const subsystemMs = sub?.timeoutSeconds ? sub.timeoutSeconds * 1000 : Infinity;
    const scan = await scanner.scan({
      refresh: ctx.aptRefresh,
      timeoutMs: Math.max(1000, Math.min(subsystemMs, ctx.deadline - Date.now())),
      signal: ctx.signal,
      env: ctx.env,
      isRoot: process.getuid?.() === 0,
    });
    runs.push(scan.run);
    updates.push(...scan.updates);
  }

  const ran = runs.filter((r) => r.state === SubsystemRunState.RAN);
  const failed = runs.filter((r) => r.state === SubsystemRunState.FAILED);
  const detail = { case: "scanUpdates" as const, value: create(ScanUpdatesResultSchema, { updates, subsystems: runs }) };
  if (ran.length === 0 && failed.length > 0) {
    return {
      outcome: CommandOutcome.FAILED,
      message: failed.map((r) => `${r.subsystem}: ${r.message}`).join("; "),
      detail,
    };
  }
  const security = updates.filter((u) => u.security).length;
  const problems = failed.map((r) => `${r.subsystem} failed: ${r.message}`);
  const message = ran.length === 0
    ? "no package source to scan on this host"
    : [`found ${updates.length} update(s), ${security} security`, ...problems].join("; ");
  return { outcome: CommandOutcome.SUCCEEDED, message, detail };
};

function skipped(subsystem: string, message: string): SubsystemRun {
  return create(SubsystemRunSchema, { subsystem, state: SubsystemRunState.SKIPPED, message });
}

import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { plural } from "@redflag/common/plural";
import {
  type StorageMetrics,
  StorageMetricsSchema,
  type SubsystemRun,
  SubsystemRunSchema,
  SubsystemRunState,
  type SystemMetrics,
  SystemMetricsSchema,
} from "@redflag/gen/command_pb";
import { setTimeout as sleep } from "node:timers/promises";
import { createHostAccess, type HostAccess } from "./platform.ts";
import { cpuTimes, cpuUsagePercent, loadAverage, readDisks, readMemory, rebootRequired, unreadNote } from "./system.ts";

// The "system" and "storage" subsystems report host metrics, not package updates.
export const SYSTEM = "system";
export const STORAGE = "storage";

const CPU_SAMPLE_MS = 250;

export async function collectSystemMetrics(signal?: AbortSignal, host: HostAccess = createHostAccess({})): Promise<{ run: SubsystemRun; metrics: SystemMetrics }> {
  const started = Date.now();
  const before = cpuTimes(host.os.cpus());
  await sleep(CPU_SAMPLE_MS, undefined, { signal }).catch(() => undefined);
  const after = cpuTimes(host.os.cpus());
  const [memory, reboot] = await Promise.all([readMemory(host, signal), rebootRequired(host, signal)]);
  const { totalBytes: total, availableBytes: available } = memory;
  const metrics = create(SystemMetricsSchema, {
    cpuUsagePercent: Math.round(cpuUsagePercent(before, after) * 10) / 10,
    cpuCores: host.os.cpus().length,
    memoryTotalBytes: total,
    memoryAvailableBytes: available,
    memoryUsedBytes: total > available ? total - available : 0n,
    swapTotalBytes: memory.swapTotalBytes,
    swapUsedBytes: memory.swapUsedBytes,
    loadAverage: loadAverage(host),
    uptimeSeconds: BigInt(Math.floor(host.os.uptime())),
    rebootRequired: reboot.required,
    rebootRequiredBy: reboot.by,
  });
  const usedPct = total > 0n ? Number((metrics.memoryUsedBytes * 1000n) / total) / 10 : 0;
  const message = `cpu ${metrics.cpuUsagePercent}%, memory ${usedPct}% used${reboot.required ? ", reboot required" : ""}${unreadNote(memory, reboot)}`;
  return { run: ran(SYSTEM, message, started), metrics };
}

// A host whose file systems cannot be listed fails this subsystem, with the reason.
export async function collectStorageMetrics(signal?: AbortSignal, host: HostAccess = createHostAccess({})): Promise<{ run: SubsystemRun; metrics: StorageMetrics }> {
  const started = Date.now();
  const { disks, problem } = await readDisks(host, signal);
  if (problem) return { run: ran(STORAGE, problem, started, SubsystemRunState.FAILED), metrics: create(StorageMetricsSchema, { disks }) };
  const fullest = disks.reduce<{ mount: string; pct: number } | undefined>((top, d) => {
    const pct = d.sizeBytes > 0n ? Number((d.usedBytes * 1000n) / d.sizeBytes) / 10 : 0;
    return !top || pct > top.pct ? { mount: d.mountPoint, pct } : top;
  }, undefined);
  const message = `${plural(disks.length, "file system")}${fullest ? `, fullest ${fullest.mount} at ${fullest.pct}%` : ""}`;
  return { run: ran(STORAGE, message, started), metrics: create(StorageMetricsSchema, { disks }) };
}

function ran(subsystem: string, message: string, started: number, state = SubsystemRunState.RAN): SubsystemRun {
  return create(SubsystemRunSchema, {
    subsystem,
    state,
    message,
    duration: durationFromMs(Date.now() - started),
  });
}

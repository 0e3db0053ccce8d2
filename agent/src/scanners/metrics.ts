import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  type StorageMetrics,
  StorageMetricsSchema,
  type SubsystemRun,
  SubsystemRunSchema,
  SubsystemRunState,
  type SystemMetrics,
  SystemMetricsSchema,
} from "@redflag/gen/command_pb";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { cpuTimes, cpuUsagePercent, parseMeminfo, readDisks, readText, rebootRequired } from "../system.ts";

// The "system" and "storage" subsystems report host metrics, not package updates.
export const SYSTEM = "system";
export const STORAGE = "storage";

const CPU_SAMPLE_MS = 250;

export async function collectSystemMetrics(signal?: AbortSignal): Promise<{ run: SubsystemRun; metrics: SystemMetrics }> {
  const started = Date.now();
  const before = cpuTimes(os.cpus());
  await sleep(CPU_SAMPLE_MS, undefined, { signal }).catch(() => undefined);
  const after = cpuTimes(os.cpus());
  const meminfo = parseMeminfo((await readText("/proc/meminfo")) ?? "");
  const total = BigInt(os.totalmem());
  const available = meminfo.get("MemAvailable") ?? BigInt(os.freemem());
  const swapTotal = meminfo.get("SwapTotal") ?? 0n;
  const reboot = await rebootRequired();
  const metrics = create(SystemMetricsSchema, {
    cpuUsagePercent: Math.round(cpuUsagePercent(before, after) * 10) / 10,
    cpuCores: os.cpus().length,
    memoryTotalBytes: total,
    memoryAvailableBytes: available,
    memoryUsedBytes: total > available ? total - available : 0n,
    swapTotalBytes: swapTotal,
    swapUsedBytes: swapTotal - (meminfo.get("SwapFree") ?? swapTotal),
    loadAverage: os.loadavg(),
    uptimeSeconds: BigInt(Math.floor(os.uptime())),
    rebootRequired: reboot.required,
    rebootRequiredBy: reboot.by,
  });
  const usedPct = total > 0n ? Number((metrics.memoryUsedBytes * 1000n) / total) / 10 : 0;
  const message = `cpu ${metrics.cpuUsagePercent}%, memory ${usedPct}% used${reboot.required ? ", reboot required" : ""}`;
  return { run: ran(SYSTEM, message, started), metrics };
}

export async function collectStorageMetrics(): Promise<{ run: SubsystemRun; metrics: StorageMetrics }> {
  const started = Date.now();
  const disks = await readDisks();
  const fullest = disks.reduce<{ mount: string; pct: number } | undefined>((top, d) => {
    const pct = d.sizeBytes > 0n ? Number((d.usedBytes * 1000n) / d.sizeBytes) / 10 : 0;
    return !top || pct > top.pct ? { mount: d.mountPoint, pct } : top;
  }, undefined);
  const message = `${disks.length} file system(s)${fullest ? `, fullest ${fullest.mount} at ${fullest.pct}%` : ""}`;
  return { run: ran(STORAGE, message, started), metrics: create(StorageMetricsSchema, { disks }) };
}

function ran(subsystem: string, message: string, started: number): SubsystemRun {
  return create(SubsystemRunSchema, {
    subsystem,
    state: SubsystemRunState.RAN,
    message,
    duration: durationFromMs(Date.now() - started),
  });
}

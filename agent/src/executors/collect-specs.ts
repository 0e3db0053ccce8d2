import { create } from "@bufbuild/protobuf";
import { CollectSpecsResultSchema, CommandOutcome, SystemSpecsSchema } from "@redflag/gen/command_pb";
import os from "node:os";
import { collectOsInfo, hostname } from "../host.ts";
import { parseMeminfo, readDisks, readText, rebootRequired } from "../system.ts";
import type { Executor } from "./types.ts";

export const collectSpecs: Executor = async () => {
  const cpus = os.cpus();
  const meminfo = parseMeminfo((await readText("/proc/meminfo")) ?? "");
  const disks = await readDisks();
  const reboot = await rebootRequired();
  const specs = create(SystemSpecsSchema, {
    hostname: hostname(),
    os: await collectOsInfo(),
    cpuModel: cpus[0]?.model.trim() ?? "",
    cpuCores: cpus.length,
    memoryTotalBytes: BigInt(os.totalmem()),
    memoryAvailableBytes: meminfo.get("MemAvailable") ?? BigInt(os.freemem()),
    disks,
    uptimeSeconds: BigInt(Math.floor(os.uptime())),
    rebootRequired: reboot.required,
    rebootRequiredBy: reboot.by,
    loadAverage: os.loadavg(),
  });
  return {
    outcome: CommandOutcome.SUCCEEDED,
    message: `collected specs: ${specs.cpuCores} CPU(s), ${disks.length} disk(s)${reboot.required ? ", reboot required" : ""}`,
    detail: { case: "collectSpecs", value: create(CollectSpecsResultSchema, { specs }) },
  };
};

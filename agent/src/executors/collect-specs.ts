import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { CollectSpecsResultSchema, CommandOutcome, SystemSpecsSchema } from "@redflag/gen/command_pb";
import { collectOsInfo, hostname } from "../host.ts";
import { createHostAccess } from "../platform.ts";
import { loadAverage, readDisks, readMemory, rebootRequired, unreadNote } from "../system.ts";
import type { Executor } from "./types.ts";

export const collectSpecs: Executor = async (ctx) => {
  const host = ctx.host ?? createHostAccess(ctx.env);
  const cpus = host.os.cpus();
  const [memory, disks, reboot] = await Promise.all([readMemory(host, ctx.signal), readDisks(host, ctx.signal), rebootRequired(host, ctx.signal)]);
  const specs = create(SystemSpecsSchema, {
    hostname: hostname(),
    os: await collectOsInfo(host),
    cpuModel: cpus[0]?.model.trim() ?? "",
    cpuCores: cpus.length,
    memoryTotalBytes: memory.totalBytes,
    memoryAvailableBytes: memory.availableBytes,
    disks: disks.disks,
    uptimeSeconds: BigInt(Math.floor(host.os.uptime())),
    rebootRequired: reboot.required,
    rebootRequiredBy: reboot.by,
    loadAverage: loadAverage(host),
  });
  return {
    outcome: CommandOutcome.SUCCEEDED,
    message:
      `collected specs: ${plural(specs.cpuCores, "CPU")}, ${plural(disks.disks.length, "disk")}${reboot.required ? ", reboot required" : ""}` +
      unreadNote(memory, reboot, disks),
    detail: { case: "collectSpecs", value: create(CollectSpecsResultSchema, { specs }) },
  };
};

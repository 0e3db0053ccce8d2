import { create } from "@bufbuild/protobuf";
import { CollectSpecsResultSchema, CommandOutcome, type DiskInfo, DiskInfoSchema, SystemSpecsSchema } from "@redflag/gen/command_pb";
import { readFile, statfs } from "node:fs/promises";
import os from "node:os";
import { collectOsInfo, hostname } from "../host.ts";
import type { Executor } from "./types.ts";

// File systems that hold data; everything else in /proc/self/mounts (proc, sysfs, cgroup,
// tmpfs, squashfs snap images …) is not a disk an operator cares about.
const DISK_FS_TYPES = new Set([
  "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "bcachefs",
  "vfat", "exfat", "ntfs", "ntfs3", "fuseblk", "hfsplus", "apfs",
  "nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs",
]);
// A hung network mount must not hold up the whole inventory.
const STATFS_TIMEOUT_MS = 5000;

export interface Mount {
  device: string;
  mountPoint: string;
  fsType: string;
}

// /proc/self/mounts escapes space, tab, newline and backslash as octal.
const unescape = (field: string) => field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));

// The real file systems among the mounts, each device once (bind mounts and btrfs subvolumes
// would otherwise count the same space several times; the shortest mount point wins).
export function parseMounts(text: string): Mount[] {
  const byDevice = new Map<string, Mount>();
  for (const line of text.split("\n")) {
    const [device, mountPoint, fsType] = line.split(" ").map(unescape);
    if (!device || !mountPoint || !fsType) continue;
    const real = DISK_FS_TYPES.has(fsType) || (fsType === "overlay" && mountPoint === "/");
    if (!real) continue;
    const key = `${device} ${fsType}`;
    const seen = byDevice.get(key);
    if (!seen || mountPoint.length < seen.mountPoint.length) byDevice.set(key, { device, mountPoint, fsType });
  }
  return [...byDevice.values()].sort((a, b) => a.mountPoint.localeCompare(b.mountPoint));
}

async function diskInfo(mount: Mount): Promise<DiskInfo | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const stats = await Promise.race([
      statfs(mount.mountPoint, { bigint: true }),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), STATFS_TIMEOUT_MS))),
    ]);
    if (!stats) return undefined;
    return create(DiskInfoSchema, {
      mountPoint: mount.mountPoint,
      device: mount.device,
      fsType: mount.fsType,
      sizeBytes: stats.blocks * stats.bsize,
      usedBytes: (stats.blocks - stats.bfree) * stats.bsize,
      inodesTotal: stats.files,
      inodesUsed: stats.files - stats.ffree,
    });
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

// Lines like "MemAvailable:   1234 kB".
export function parseMeminfo(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split("\n")) {
    const match = /^(\w+):\s+(\d+)(?:\s+kB)?$/.exec(line.trim());
    if (match) out.set(match[1]!, BigInt(match[2]!) * (line.includes("kB") ? 1024n : 1n));
  }
  return out;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch {
    return undefined;
  }
}

export async function rebootRequired(): Promise<{ required: boolean; by: string[] }> {
  const flag = await readText("/var/run/reboot-required");
  if (flag === undefined) return { required: false, by: [] };
  const pkgs = await readText("/var/run/reboot-required.pkgs");
  const by = [...new Set((pkgs ?? "").split("\n").map((l) => l.trim()).filter(Boolean))];
  return { required: true, by };
}

export const collectSpecs: Executor = async () => {
  const cpus = os.cpus();
  const meminfo = parseMeminfo((await readText("/proc/meminfo")) ?? "");
  const mounts = parseMounts((await readText("/proc/self/mounts")) ?? "");
  const disks = (await Promise.all(mounts.map(diskInfo))).filter((d): d is DiskInfo => d !== undefined);
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

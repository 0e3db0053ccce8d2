// Readers of the host's state shared by collect_specs and the system/storage metrics.
import { create } from "@bufbuild/protobuf";
import { type DiskInfo, DiskInfoSchema } from "@redflag/gen/command_pb";
import { readFile, statfs } from "node:fs/promises";

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

export async function diskInfo(mount: Mount): Promise<DiskInfo | undefined> {
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

export async function readText(file: string): Promise<string | undefined> {
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


// Every real file system with its size, use and inodes; a mount that does not answer in time is left out.
export async function readDisks(): Promise<DiskInfo[]> {
  const mounts = parseMounts((await readText("/proc/self/mounts")) ?? "");
  return (await Promise.all(mounts.map(diskInfo))).filter((d): d is DiskInfo => d !== undefined);
}

export interface CpuTimes {
  busy: number;
  total: number;
}

export function cpuTimes(cpus: readonly { times: { user: number; nice: number; sys: number; idle: number; irq: number } }[]): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus) {
    busy += times.user + times.nice + times.sys + times.irq;
    total += times.user + times.nice + times.sys + times.irq + times.idle;
  }
  return { busy, total };
}

// Busy share between two readings, 0..100; 0 when no time passed.
export function cpuUsagePercent(before: CpuTimes, after: CpuTimes): number {
  const total = after.total - before.total;
  if (total <= 0) return 0;
  return Math.min(100, Math.max(0, ((after.busy - before.busy) / total) * 100));
}

// Readers of the host's state shared by collect_specs and the system/storage metrics, for
// Linux, macOS and Windows. Each reader takes the HostAccess it reads through (tests give a
// fake one) and says honestly what it could not read instead of failing the whole reading.
import { create } from "@bufbuild/protobuf";
import { type DiskInfo, DiskInfoSchema } from "@redflag/gen/command_pb";
import { createHostAccess, system32, toolOutput, type HostAccess } from "./platform.ts";
import { describeFailure } from "./run-process.ts";

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
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const [device, mountPoint, fsType] = line.split(" ").map(unescape);
    if (!device || !mountPoint || !fsType) continue;
    const real = DISK_FS_TYPES.has(fsType) || (fsType === "overlay" && mountPoint === "/");
    if (real) mounts.push({ device, mountPoint, fsType });
  }
  return oncePerDevice(mounts);
}

function oncePerDevice(mounts: Mount[]): Mount[] {
  const byDevice = new Map<string, Mount>();
  for (const mount of mounts) {
    const key = `${mount.device} ${mount.fsType}`;
    const seen = byDevice.get(key);
    if (!seen || mount.mountPoint.length < seen.mountPoint.length) byDevice.set(key, mount);
  }
  return [...byDevice.values()].sort((a, b) => a.mountPoint.localeCompare(b.mountPoint));
}

export async function diskInfo(mount: Mount, host: HostAccess = createHostAccess({})): Promise<DiskInfo | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const stats = await Promise.race([
      host.statfs(mount.mountPoint),
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

// Memory as the OS counts it: "available" is what programs can get without swapping.
export interface MemoryReading {
  totalBytes: bigint;
  availableBytes: bigint;
  swapTotalBytes: bigint;
  swapUsedBytes: bigint;
  // What could not be read, in words for the result message.
  problems: string[];
}

// Linux: /proc/meminfo's MemAvailable. Windows: Node's free memory is the OS's "available"
// (GlobalMemoryStatusEx); the page file is not read. macOS: Node's free memory counts free pages
// only, so available is free plus inactive pages from vm_stat (as psutil counts it), and swap
// comes from sysctl vm.swapusage.
export async function readMemory(host: HostAccess = createHostAccess({}), signal?: AbortSignal): Promise<MemoryReading> {
  const totalBytes = BigInt(host.os.totalmem());
  const free = BigInt(host.os.freemem());
  const problems: string[] = [];
  let availableBytes = free;
  let swapTotalBytes = 0n;
  let swapUsedBytes = 0n;
  if (host.platform === "linux") {
    const meminfo = parseMeminfo((await host.readText("/proc/meminfo")) ?? "");
    availableBytes = meminfo.get("MemAvailable") ?? free;
    swapTotalBytes = meminfo.get("SwapTotal") ?? 0n;
    swapUsedBytes = swapTotalBytes - (meminfo.get("SwapFree") ?? swapTotalBytes);
  } else if (host.platform === "darwin") {
    const vm = await toolOutput(host, [VM_STAT], signal);
    const pages = "stdout" in vm ? parseVmStat(vm.stdout) : undefined;
    if (pages) availableBytes = pages.available;
    else problems.push(`memory available counts free pages only (${"error" in vm ? vm.error : `${VM_STAT} printed no page counts`})`);
    const swap = await toolOutput(host, [SYSCTL, "-n", "vm.swapusage"], signal);
    const usage = "stdout" in swap ? parseSwapUsage(swap.stdout) : undefined;
    if (usage) ({ total: swapTotalBytes, used: swapUsedBytes } = usage);
    else problems.push(`swap unknown (${"error" in swap ? swap.error : `${SYSCTL} printed no vm.swapusage`})`);
  }
  if (availableBytes > totalBytes) availableBytes = totalBytes;
  return { totalBytes, availableBytes, swapTotalBytes, swapUsedBytes, problems };
}

const VM_STAT = "/usr/bin/vm_stat";
const SYSCTL = "/usr/sbin/sysctl";

// vm_stat(1): "Mach Virtual Memory Statistics: (page size of 16384 bytes)", then lines like
// "Pages free:    3562." ("Pages free" already leaves out speculative pages).
export function parseVmStat(text: string): { pageSize: bigint; available: bigint } | undefined {
  const pageSize = /page size of (\d+) bytes/.exec(text)?.[1];
  const count = (name: string) => new RegExp(`^${name}:\\s+(\\d+)\\.?\\s*$`, "m").exec(text)?.[1];
  const free = count("Pages free");
  const inactive = count("Pages inactive");
  if (!pageSize || free === undefined || inactive === undefined) return undefined;
  return { pageSize: BigInt(pageSize), available: (BigInt(free) + BigInt(inactive)) * BigInt(pageSize) };
}

const UNIT: Record<string, number> = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

// `sysctl -n vm.swapusage`: "total = 2048.00M  used = 1074.25M  free = 973.75M  (encrypted)".
export function parseSwapUsage(text: string): { total: bigint; used: bigint } | undefined {
  const size = (name: string) => {
    const match = new RegExp(`${name} = (\\d+(?:\\.\\d+)?)([BKMGT])`).exec(text);
    return match ? BigInt(Math.round(Number(match[1]) * UNIT[match[2]!]!)) : undefined;
  };
  const total = size("total");
  const used = size("used");
  return total !== undefined && used !== undefined ? { total, used } : undefined;
}

// 1, 5 and 15 minute load averages; none on Windows, which has no such figure (Node says 0, 0, 0).
export function loadAverage(host: HostAccess): number[] {
  return host.platform === "win32" ? [] : host.os.loadavg();
}

// Words for a result message: what the agent could not read, or nothing.
export function unreadNote(memory: MemoryReading, reboot: RebootState, disks?: DiskReading): string {
  const notes = [...memory.problems, ...(reboot.unknown ? [`reboot pending unknown: ${reboot.unknown}`] : []), ...(disks?.problem ? [disks.problem] : [])];
  return notes.length > 0 ? `; ${notes.join("; ")}` : "";
}

export interface RebootState {
  required: boolean;
  // What asked for the reboot: packages on Linux (dpkg's list, dnf's), the registry flags on
  // Windows.
  by: string[];
  // Which sources said a reboot is needed ("dpkg", "dnf", "zypper", "windows-update",
  // "component-based-servicing", "pending-file-renames"); empty when none did.
  sources: string[];
  // Set when the agent cannot tell (then `required` is false): why, in words.
  unknown?: string | undefined;
}

const CBS_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing";
const WU_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update";
const SESSION_MANAGER_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager";
export const MACOS_REBOOT_UNKNOWN = "macOS does not say whether a restart is pending";

// The package tools that can tell, run by absolute path. `-C` keeps dnf from refreshing
// metadata (needs-restarting loads it, and the poll must not wait on the network).
export const DNF_NEEDS_RESTARTING = ["/usr/bin/dnf", "-C", "-q", "needs-restarting", "-r"] as const;
export const ZYPPER_NEEDS_REBOOTING = ["/usr/bin/zypper", "--non-interactive", "--quiet", "needs-rebooting"] as const;

// Linux: every source that can tell, together: dpkg's flag /var/run/reboot-required (and
// .pkgs; Debian, Ubuntu), `dnf needs-restarting -r` (Fedora, RHEL and their kin) and `zypper
// needs-rebooting` (openSUSE, SLES); a tool that is not installed is not asked. Windows: the
// flags Windows Update and Component Based Servicing set (the RebootRequired and RebootPending
// keys) and pending file renames. macOS keeps no such flag that a program can read without
// asking Apple's servers (softwareupdate), so the answer there is "unknown".
export async function rebootRequired(host: HostAccess = createHostAccess({}), signal?: AbortSignal): Promise<RebootState> {
  if (host.platform === "win32") return windowsRebootPending(host, signal);
  if (host.platform === "darwin") return { required: false, by: [], sources: [], unknown: MACOS_REBOOT_UNKNOWN };
  const [dpkg, dnf, zypper] = await Promise.all([dpkgRebootFlag(host), askTool(host, DNF_NEEDS_RESTARTING, 1, signal), askTool(host, ZYPPER_NEEDS_REBOOTING, 102, signal)]);
  const by = new Set<string>();
  const sources: string[] = [];
  const problems: string[] = [];
  for (const [source, answer] of [["dpkg", dpkg], ["dnf", dnf], ["zypper", zypper]] as const) {
    if (answer === "absent" || answer === "no") continue;
    if ("error" in answer) problems.push(answer.error);
    else {
      sources.push(source);
      for (const p of answer.by) by.add(p);
    }
  }
  if (sources.length > 0) return { required: true, by: [...by], sources };
  if (problems.length > 0) return { required: false, by: [], sources: [], unknown: problems.join("; ") };
  return { required: false, by: [], sources: [] };
}

type Answer = "absent" | "no" | { by: string[] } | { error: string };

async function dpkgRebootFlag(host: HostAccess): Promise<Answer> {
  if ((await host.readText("/var/run/reboot-required")) === undefined) return "absent";
  const pkgs = await host.readText("/var/run/reboot-required.pkgs");
  return { by: (pkgs ?? "").split("\n").map((l) => l.trim()).filter(Boolean) };
}

// A tool that answers with its exit status: 0 no reboot, `needed` a reboot (dnf: 1, zypper:
// 102); anything else is a failure, and a tool that is not there is not asked. dnf also exits 1
// on its own errors ("No such command" without dnf-plugins-core), with nothing on stdout; its
// answer always prints something, and lists what needs the reboot as " * name" lines.
async function askTool(host: HostAccess, argv: readonly string[], needed: number, signal?: AbortSignal): Promise<Answer> {
  const result = await host.run(argv, signal);
  const what = `${argv[0]!} ${argv.filter((a) => !a.startsWith("-")).slice(1).join(" ")}`;
  if (result.spawnError?.code === "ENOENT") return "absent";
  const finished = !result.spawnError && !result.timedOut && !result.aborted;
  if (finished && result.exitCode === 0) return "no";
  if (finished && result.exitCode === needed && (needed !== 1 || result.stdout.trim() !== "")) {
    return { by: result.stdout.split("\n").flatMap((l) => /^\s*\*\s+(\S+)/.exec(l)?.[1] ?? []) };
  }
  return { error: describeFailure(what, result) };
}

// Each key is listed whole (its values and subkeys) rather than asked for one subkey or value:
// reg.exe's "not found" is an exit status shared with real failures and a message in the
// system's language, while key and value names are the same in every language.
async function windowsRebootPending(host: HostAccess, signal?: AbortSignal): Promise<RebootState> {
  const reg = system32(host, "reg.exe");
  const list = async (key: string) => {
    const out = await toolOutput(host, [reg, "query", key, "/reg:64"], signal);
    if ("error" in out) return { error: out.error };
    const parsed = parseRegQuery(out.stdout);
    return parsed ?? { error: `${reg} printed no listing of ${key}` };
  };
  const [cbs, wu, sm] = await Promise.all([list(CBS_KEY), list(WU_KEY), list(SESSION_MANAGER_KEY)]);
  const by: string[] = [];
  const sources: string[] = [];
  const problems: string[] = [];
  const said = (words: string, source: string) => (by.push(words), sources.push(source));
  if ("error" in wu) problems.push(wu.error);
  else if (wu.subkeys.some((k) => k.toLowerCase() === "rebootrequired")) said("Windows Update", "windows-update");
  if ("error" in cbs) problems.push(cbs.error);
  else if (cbs.subkeys.some((k) => k.toLowerCase() === "rebootpending")) said("Component Based Servicing", "component-based-servicing");
  if ("error" in sm) problems.push(sm.error);
  else if (sm.values.some((v) => /^PendingFileRenameOperations2?$/i.test(v.name) && v.data.replace(/\\0/g, "").trim() !== "")) said("pending file renames", "pending-file-renames");
  if (by.length > 0) return { required: true, by, sources };
  if (problems.length > 0) return { required: false, by: [], sources: [], unknown: problems.join("; ") };
  return { required: false, by: [], sources: [] };
}

export interface RegListing {
  values: { name: string; type: string; data: string }[];
  // Names of the direct subkeys.
  subkeys: string[];
}

// `reg query KEY` prints a blank line, the key's full name, one line per value
// ("    Name    REG_TYPE    data"), a blank line, and one line per subkey (its full name).
export function parseRegQuery(text: string): RegListing | undefined {
  const lines = text.split("\n").map((l) => l.replace(/\r$/, ""));
  const header = lines.findIndex((l) => /^HKEY_[A-Z_]+(\\|$)/.test(l));
  if (header < 0) return undefined;
  const key = lines[header]!;
  const values: RegListing["values"] = [];
  const subkeys: string[] = [];
  for (const line of lines.slice(header + 1)) {
    const value = /^ {4}(.+?) {4}(REG_[A-Z_]+)(?: {4}(.*))?$/.exec(line);
    if (value) values.push({ name: value[1]!, type: value[2]!, data: value[3] ?? "" });
    else if (line.toLowerCase().startsWith(`${key.toLowerCase()}\\`)) subkeys.push(line.slice(key.length + 1));
  }
  return { values, subkeys };
}

export interface DiskReading {
  disks: DiskInfo[];
  // Set when the file systems could not be listed.
  problem?: string | undefined;
}

// Every real file system with its size, use and inodes; a mount that does not answer in time is
// left out. Linux lists /proc/self/mounts, macOS the output of mount(8), Windows its drive
// letters (each one that statfs can read: a drive without media is not a disk).
export async function readDisks(host: HostAccess = createHostAccess({}), signal?: AbortSignal): Promise<DiskReading> {
  let mounts: Mount[];
  if (host.platform === "win32") {
    mounts = [..."ABCDEFGHIJKLMNOPQRSTUVWXYZ"].map((letter) => ({ device: `${letter}:`, mountPoint: `${letter}:\\`, fsType: "" }));
  } else if (host.platform === "darwin") {
    const out = await toolOutput(host, [MOUNT], signal);
    if ("error" in out) return { disks: [], problem: `cannot list file systems: ${out.error}` };
    mounts = parseMacMounts(out.stdout);
    if (mounts.length === 0) return { disks: [], problem: `cannot list file systems: ${MOUNT} printed none` };
  } else {
    const text = await host.readText("/proc/self/mounts");
    if (text === undefined) return { disks: [], problem: "cannot list file systems: /proc/self/mounts is not readable" };
    mounts = parseMounts(text);
  }
  const disks = (await Promise.all(mounts.map((m) => diskInfo(m, host)))).filter((d): d is DiskInfo => d !== undefined);
  return { disks };
}

const MOUNT = "/sbin/mount";
const MAC_DISK_FS_TYPES = new Set(["apfs", "hfs", "msdos", "exfat", "ntfs", "ufs", "zfs", "smbfs", "nfs", "afpfs", "webdav"]);
// The volume that holds the users' data; like the other volumes of the system it is "nobrowse".
const MAC_DATA_VOLUME = "/System/Volumes/Data";

// mount(8) on macOS: "/dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)". Keeps
// the real file systems a user sees (not the system's "nobrowse" helper volumes, except the Data
// volume), each device once.
export function parseMacMounts(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const match = /^(.+?) on (.+) \(([^()]*)\)$/.exec(line.trim());
    if (!match) continue;
    const [fsType = "", ...flags] = match[3]!.split(",").map((f) => f.trim());
    const mountPoint = match[2]!;
    if (!MAC_DISK_FS_TYPES.has(fsType)) continue;
    if (flags.includes("nobrowse") && mountPoint !== MAC_DATA_VOLUME) continue;
    mounts.push({ device: match[1]!, mountPoint, fsType });
  }
  return oncePerDevice(mounts);
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

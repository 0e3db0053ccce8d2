import { afterEach, describe, expect, it } from "vitest";
import { fakeHost, type FakeHost } from "../test/support/fake-host.ts";
import {
  CBS_KEY,
  DNF_NEEDS_RESTARTING_REBOOT,
  FAKE_DNF,
  FAKE_REG,
  FAKE_ZYPPER,
  MAC_MOUNT,
  printsRecorded,
  REG_CBS_CLEAN,
  REG_CBS_PENDING,
  REG_SESSION_MANAGER_CLEAN,
  REG_SESSION_MANAGER_RENAMES,
  REG_WU_CLEAN,
  REG_WU_REBOOT_REQUIRED,
  regOutput,
  SESSION_MANAGER_KEY,
  SYSCTL_SWAPUSAGE,
  VM_STAT,
  WU_KEY,
} from "../test/support/recorded-host-tools.ts";
import {
  cpuTimes,
  cpuUsagePercent,
  loadAverage,
  parseMacMounts,
  parseRegQuery,
  parseSwapUsage,
  parseVmStat,
  readDisks,
  readMemory,
  DNF_NEEDS_RESTARTING,
  rebootRequired,
  ZYPPER_NEEDS_REBOOTING,
} from "./system.ts";

const cpu = (user: number, sys: number, idle: number) => ({ times: { user, nice: 0, sys, irq: 0, idle } });

describe("cpu usage", () => {
  it("is the busy share of all CPUs between two readings", () => {
    const before = cpuTimes([cpu(100, 50, 850), cpu(0, 0, 1000)]);
    const after = cpuTimes([cpu(400, 100, 1500), cpu(100, 0, 1900)]);
    // busy +450 of total +2000
    expect(cpuUsagePercent(before, after)).toBeCloseTo(22.5);
  });

  it("is 0 when no time passed and never leaves 0..100", () => {
    const t = cpuTimes([cpu(1, 1, 1)]);
    expect(cpuUsagePercent(t, t)).toBe(0);
    expect(cpuUsagePercent({ busy: 0, total: 0 }, { busy: 50, total: 10 })).toBe(100);
  });
});

const hosts: FakeHost[] = [];
afterEach(async () => {
  for (const host of hosts.splice(0)) await host.remove();
});
const made = async (opts: Parameters<typeof fakeHost>[0]) => {
  const host = await fakeHost(opts);
  hosts.push(host);
  return host;
};
const GiB = 1024n ** 3n;
const stat = (sizeGiB: bigint, freeGiB: bigint, files = 0n, ffree = 0n) => ({ bsize: 4096n, blocks: (sizeGiB * GiB) / 4096n, bfree: (freeGiB * GiB) / 4096n, bavail: (freeGiB * GiB) / 4096n, files, ffree });

describe("Windows", () => {
  const reg = "C:\\Windows\\System32\\reg.exe";
  const windows = (outputs: Record<string, string>, extra: Partial<Parameters<typeof fakeHost>[0]> = {}) =>
    made({ platform: "win32", tools: { [reg]: FAKE_REG }, outputs, os: { totalmem: () => 16 * 2 ** 30, freemem: () => 6 * 2 ** 30, loadavg: () => [0, 0, 0] }, ...extra });
  const clean = { [regOutput(CBS_KEY)]: REG_CBS_CLEAN, [regOutput(WU_KEY)]: REG_WU_CLEAN, [regOutput(SESSION_MANAGER_KEY)]: REG_SESSION_MANAGER_CLEAN };

  it("needs a reboot by the flags Windows Update and Component Based Servicing set, and pending file renames", async () => {
    expect(await rebootRequired(await windows(clean))).toEqual({ required: false, by: [], sources: [] });
    const host = await windows({ ...clean, [regOutput(CBS_KEY)]: REG_CBS_PENDING, [regOutput(WU_KEY)]: REG_WU_REBOOT_REQUIRED });
    expect(await rebootRequired(host)).toEqual({ required: true, by: ["Windows Update", "Component Based Servicing"], sources: ["windows-update", "component-based-servicing"] });
    expect(host.runs.map((argv) => argv.join(" ")).sort()).toEqual([CBS_KEY, SESSION_MANAGER_KEY, WU_KEY].map((key) => `${reg} query ${key} /reg:64`).sort());
    expect(await rebootRequired(await windows({ ...clean, [regOutput(SESSION_MANAGER_KEY)]: REG_SESSION_MANAGER_RENAMES }))).toEqual({ required: true, by: ["pending file renames"], sources: ["pending-file-renames"] });
  });

  it("says it cannot tell (not 'no reboot') when reg.exe fails, is missing or prints something else", async () => {
    const denied = await windows(clean);
    await denied.tools.write("reg.denied", "");
    const state = await rebootRequired(denied);
    expect(state).toMatchObject({ required: false, by: [] });
    expect(state.unknown).toMatch(/^C:\\Windows\\System32\\reg\.exe failed \(exit status 1\): ERROR: Access is denied\./);
    expect((await rebootRequired(await made({ platform: "win32" }))).unknown).toMatch(/reg\.exe could not start: .*ENOENT/);
    const garbled = await rebootRequired(await windows({ ...clean, [regOutput(WU_KEY)]: "Zugriff verweigert\r\n" }));
    expect(garbled.unknown).toBe(`C:\\Windows\\System32\\reg.exe printed no listing of ${WU_KEY}`);
    // One flag that is set is enough, even when another cannot be read.
    const partly = await windows({ [regOutput(CBS_KEY)]: REG_CBS_PENDING });
    expect(await rebootRequired(partly)).toEqual({ required: true, by: ["Component Based Servicing"], sources: ["component-based-servicing"] });
  });

  it("lists the registry's values and subkeys as reg.exe prints them", () => {
    const listing = parseRegQuery(REG_SESSION_MANAGER_RENAMES.replace(/\r\n/g, "\n"))!;
    expect(listing.subkeys).toContain("Memory Management");
    expect(listing.values.find((v) => v.name === "ExcludeFromKnownDlls")).toEqual({ name: "ExcludeFromKnownDlls", type: "REG_MULTI_SZ", data: "" });
    expect(listing.values.find((v) => v.name === "PendingFileRenameOperations")?.data).toMatch(/^\\\?\?\\C:\\Program Files \(x86\)\\Google/);
    expect(parseRegQuery("")).toBeUndefined();
  });

  it("reads memory from Node (the OS's available memory), no load average, and every drive letter statfs can read", async () => {
    const host = await windows(clean, { statfs: { "C:\\": stat(476n, 120n), "D:\\": stat(1863n, 1800n) } });
    const memory = await readMemory(host);
    expect(memory).toEqual({ totalBytes: 16n * GiB, availableBytes: 6n * GiB, swapTotalBytes: 0n, swapUsedBytes: 0n, problems: [] });
    expect(loadAverage(host)).toEqual([]);
    const { disks, problem } = await readDisks(host);
    expect(problem).toBeUndefined();
    expect(disks.map((d) => [d.mountPoint, d.device, d.sizeBytes / GiB, d.usedBytes / GiB, d.inodesTotal])).toEqual([
      ["C:\\", "C:", 476n, 356n, 0n],
      ["D:\\", "D:", 1863n, 63n, 0n],
    ]);
  });
});

describe("macOS", () => {
  const mac = (outputs: Record<string, string>, extra: Partial<Parameters<typeof fakeHost>[0]> = {}) =>
    made({
      platform: "darwin",
      tools: { "/usr/bin/vm_stat": printsRecorded("vm_stat"), "/usr/sbin/sysctl": printsRecorded("sysctl"), "/sbin/mount": printsRecorded("mount") },
      outputs,
      os: { totalmem: () => 16 * 2 ** 30, freemem: () => 3562 * 16384, loadavg: () => [2.1, 1.8, 1.5] },
      ...extra,
    });
  const recorded = { "vm_stat.out": VM_STAT, "sysctl.out": SYSCTL_SWAPUSAGE, "mount.out": MAC_MOUNT };

  it("counts free and inactive pages from vm_stat as available, and swap from sysctl", async () => {
    const host = await mac(recorded);
    expect(await readMemory(host)).toEqual({
      totalBytes: 16n * GiB,
      availableBytes: (3562n + 360187n) * 16384n,
      swapTotalBytes: 2048n * 1024n ** 2n,
      swapUsedBytes: BigInt(Math.round(1074.25 * 1024 ** 2)),
      problems: [],
    });
    expect(host.runs).toEqual([["/usr/bin/vm_stat"], ["/usr/sbin/sysctl", "-n", "vm.swapusage"]]);
    expect(loadAverage(host)).toEqual([2.1, 1.8, 1.5]);
  });

  it("says what it could not read when vm_stat or sysctl fail or print something else", async () => {
    const host = await mac({ "vm_stat.out": "vm_stat: host_statistics64 failed\n" });
    await host.tools.write("sysctl.fail", "sysctl: unknown oid 'vm.swapusage'");
    const memory = await readMemory(host);
    expect(memory).toMatchObject({ availableBytes: 3562n * 16384n, swapTotalBytes: 0n, swapUsedBytes: 0n });
    expect(memory.problems).toEqual([
      "memory available counts free pages only (/usr/bin/vm_stat printed no page counts)",
      "swap unknown (/usr/sbin/sysctl failed (exit status 1): sysctl: unknown oid 'vm.swapusage')",
    ]);
    const missing = await readMemory(await made({ platform: "darwin", os: { totalmem: () => 2 ** 30, freemem: () => 2 ** 29 } }));
    expect(missing.problems[0]).toMatch(/^memory available counts free pages only \(\/usr\/bin\/vm_stat could not start: .*ENOENT/);
  });

  it("lists the volumes a user sees from mount(8): the system and Data volumes, external disks, shares", async () => {
    expect(parseMacMounts(MAC_MOUNT)).toEqual([
      { device: "/dev/disk3s1s1", mountPoint: "/", fsType: "apfs" },
      { device: "/dev/disk3s5", mountPoint: "/System/Volumes/Data", fsType: "apfs" },
      { device: "//alice@nas.local/media", mountPoint: "/Volumes/media", fsType: "smbfs" },
      { device: "/dev/disk5s1", mountPoint: "/Volumes/Time Machine", fsType: "hfs" },
    ]);
    const host = await mac(recorded, {
      statfs: { "/": stat(460n, 200n, 4_000_000n, 3_600_000n), "/System/Volumes/Data": stat(460n, 200n), "/Volumes/Time Machine": stat(2000n, 500n) },
    });
    const { disks, problem } = await readDisks(host);
    expect(problem).toBeUndefined();
    // The share does not answer statfs and is left out.
    expect(disks.map((d) => [d.mountPoint, d.fsType, d.usedBytes / GiB, d.inodesUsed])).toEqual([
      ["/", "apfs", 260n, 400_000n],
      ["/System/Volumes/Data", "apfs", 260n, 0n],
      ["/Volumes/Time Machine", "hfs", 1500n, 0n],
    ]);
  });

  it("fails the disk reading with the reason when mount is missing, fails or prints nothing it knows", async () => {
    expect((await readDisks(await made({ platform: "darwin" }))).problem).toMatch(/^cannot list file systems: \/sbin\/mount could not start: .*ENOENT/);
    const garbled = await readDisks(await mac({ "mount.out": "mount: getfsstat: Operation not permitted\n" }));
    expect(garbled).toEqual({ disks: [], problem: "cannot list file systems: /sbin/mount printed none" });
  });

  it("says honestly that it cannot tell whether a restart is pending", async () => {
    expect(await rebootRequired(await mac(recorded))).toEqual({ required: false, by: [], sources: [], unknown: "macOS does not say whether a restart is pending" });
  });

  it("parses vm_stat and vm.swapusage strictly", () => {
    expect(parseVmStat(VM_STAT)).toEqual({ pageSize: 16384n, available: (3562n + 360187n) * 16384n });
    expect(parseVmStat(VM_STAT.replace("page size of 16384 bytes", "page size unknown"))).toBeUndefined();
    expect(parseSwapUsage("total = 0.00M  used = 0.00M  free = 0.00M  \n")).toEqual({ total: 0n, used: 0n });
    expect(parseSwapUsage("total = 1.50G  used = 512.00M  free = 1024.00M  (encrypted)")).toEqual({ total: 1536n * 1024n ** 2n, used: 512n * 1024n ** 2n });
    expect(parseSwapUsage("")).toBeUndefined();
  });
});

describe("Linux", () => {
  it("reads /proc as before, and fails the disk reading when /proc/self/mounts cannot be read", async () => {
    const host = await made({
      platform: "linux",
      files: { "/proc/meminfo": "MemTotal:       24684092 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\nSwapTotal:  1048572 kB\nSwapFree:  1048000 kB\n", "/var/run/reboot-required": "*** System restart required ***\n", "/var/run/reboot-required.pkgs": "linux-image-6.1.0-28-amd64\nlinux-image-6.1.0-28-amd64\nlibc6\n" },
      os: { totalmem: () => 24684092 * 1024, freemem: () => 1000 * 1024 },
    });
    expect(await readMemory(host)).toEqual({ totalBytes: 24684092n * 1024n, availableBytes: 20000000n * 1024n, swapTotalBytes: 1048572n * 1024n, swapUsedBytes: 572n * 1024n, problems: [] });
    expect(await rebootRequired(host)).toEqual({ required: true, by: ["linux-image-6.1.0-28-amd64", "libc6"], sources: ["dpkg"] });
    expect(await readDisks(host)).toEqual({ disks: [], problem: "cannot list file systems: /proc/self/mounts is not readable" });
    // dnf and zypper are asked too; neither is installed here.
    expect(host.runs).toEqual([[...DNF_NEEDS_RESTARTING], [...ZYPPER_NEEDS_REBOOTING]]);
  });

  const linux = (tools: Record<string, string>, markers: Record<string, string> = {}, files: Record<string, string> = {}) =>
    made({ platform: "linux", tools: Object.fromEntries(Object.entries(tools).map(([name, body]) => [`/usr/bin/${name}`, body])), outputs: markers, files });

  it("asks dnf needs-restarting -r: exit 1 with its answer means a reboot, 0 none, and its own failures are said", async () => {
    expect(await rebootRequired(await linux({ dnf: FAKE_DNF }))).toEqual({ required: false, by: [], sources: [] });
    expect(await rebootRequired(await linux({ dnf: FAKE_DNF }, { "dnf.reboot": DNF_NEEDS_RESTARTING_REBOOT }))).toEqual({ required: true, by: ["kernel", "systemd"], sources: ["dnf"] });
    // Exit status 1 without dnf-plugins-core is not a reboot.
    const noPlugin = await rebootRequired(await linux({ dnf: FAKE_DNF }, { "dnf.noplugin": "" }));
    expect(noPlugin).toMatchObject({ required: false, sources: [] });
    expect(noPlugin.unknown).toMatch(/^\/usr\/bin\/dnf needs-restarting failed \(exit status 1\): No such command: needs-restarting/);
    expect((await rebootRequired(await linux({ dnf: FAKE_DNF }, { "dnf.broken": "" }))).unknown).toBe("/usr/bin/dnf needs-restarting failed (exit status 1): Error: rpmdb open failed");
  });

  it("asks zypper needs-rebooting: exit 102 means a reboot, 0 none, a held lock is said", async () => {
    expect(await rebootRequired(await linux({ zypper: FAKE_ZYPPER }))).toEqual({ required: false, by: [], sources: [] });
    expect(await rebootRequired(await linux({ zypper: FAKE_ZYPPER }, { "zypper.reboot": "" }))).toEqual({ required: true, by: [], sources: ["zypper"] });
    const locked = await rebootRequired(await linux({ zypper: FAKE_ZYPPER }, { "zypper.locked": "" }));
    expect(locked.required).toBe(false);
    expect(locked.unknown).toMatch(/^\/usr\/bin\/zypper needs-rebooting failed \(exit status 7\): System management is locked/);
  });

  it("says every source that asks for a reboot, and a source that failed does not hide one that answered", async () => {
    const both = await linux({ dnf: FAKE_DNF, zypper: FAKE_ZYPPER }, { "dnf.reboot": DNF_NEEDS_RESTARTING_REBOOT, "zypper.reboot": "" }, { "/var/run/reboot-required": "*** System restart required ***\n" });
    expect(await rebootRequired(both)).toEqual({ required: true, by: ["kernel", "systemd"], sources: ["dpkg", "dnf", "zypper"] });
    const partly = await linux({ dnf: FAKE_DNF, zypper: FAKE_ZYPPER }, { "dnf.broken": "", "zypper.reboot": "" });
    expect(await rebootRequired(partly)).toEqual({ required: true, by: [], sources: ["zypper"] });
  });
});

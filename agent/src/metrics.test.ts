import { create } from "@bufbuild/protobuf";
import { CollectSpecsSchema, type Command, CommandOutcome, CommandSchema, RebootSchema, ScanUpdatesSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import { afterEach, describe, expect, it } from "vitest";
import { fakeHost, type FakeHost, type FakeHostOptions } from "../test/support/fake-host.ts";
import {
  CBS_KEY,
  FAKE_REG,
  MAC_MOUNT,
  printsRecorded,
  REG_CBS_CLEAN,
  REG_SESSION_MANAGER_CLEAN,
  REG_WU_REBOOT_REQUIRED,
  regOutput,
  SESSION_MANAGER_KEY,
  SYSCTL_SWAPUSAGE,
  VM_STAT,
  WU_KEY,
} from "../test/support/recorded-host-tools.ts";
import { executeCommand } from "./executors/index.ts";
import { silentLogger } from "./log.ts";

// The metrics and inventory commands end to end through the executor, on a Windows and a macOS
// host made of fakes of their system tools.
const hosts: FakeHost[] = [];
afterEach(async () => {
  for (const host of hosts.splice(0)) await host.remove();
});
const made = async (opts: FakeHostOptions) => {
  const host = await fakeHost(opts);
  hosts.push(host);
  return host;
};
const GiB = 1024n ** 3n;
const stat = (sizeGiB: bigint, freeGiB: bigint) => ({ bsize: 4096n, blocks: (sizeGiB * GiB) / 4096n, bfree: (freeGiB * GiB) / 4096n, bavail: (freeGiB * GiB) / 4096n, files: 0n, ffree: 0n });
const cpu = (user: number, idle: number) => ({ model: "Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz", speed: 2100, times: { user, nice: 0, sys: 0, irq: 0, idle } });

const windows = () =>
  made({
    platform: "win32",
    tools: { "C:\\Windows\\System32\\reg.exe": FAKE_REG },
    outputs: { [regOutput(CBS_KEY)]: REG_CBS_CLEAN, [regOutput(WU_KEY)]: REG_WU_REBOOT_REQUIRED, [regOutput(SESSION_MANAGER_KEY)]: REG_SESSION_MANAGER_CLEAN },
    statfs: { "C:\\": stat(476n, 119n) },
    os: {
      cpus: () => [cpu(100, 900), cpu(100, 900)],
      totalmem: () => 16 * 2 ** 30,
      freemem: () => 4 * 2 ** 30,
      loadavg: () => [0, 0, 0],
      uptime: () => 86_400.5,
      version: () => "Windows 11 Pro",
      release: () => "10.0.22631",
      machine: () => "x86_64",
    },
  });

const mac = (outputs: Record<string, string> = { "vm_stat.out": VM_STAT, "sysctl.out": SYSCTL_SWAPUSAGE, "mount.out": MAC_MOUNT, "sw_vers.out": "14.7.1\n" }) =>
  made({
    platform: "darwin",
    tools: {
      "/usr/bin/vm_stat": printsRecorded("vm_stat"),
      "/usr/sbin/sysctl": printsRecorded("sysctl"),
      "/sbin/mount": printsRecorded("mount"),
      "/usr/bin/sw_vers": printsRecorded("sw_vers"),
    },
    outputs,
    statfs: { "/": stat(460n, 200n), "/System/Volumes/Data": stat(460n, 115n) },
    os: { totalmem: () => 16 * 2 ** 30, freemem: () => 2 ** 28, loadavg: () => [2.5, 2, 1.5], uptime: () => 3600, release: () => "23.6.0", machine: () => "arm64" },
  });

const run = (host: FakeHost, action: Command["action"]) =>
  executeCommand(create(CommandSchema, { id: "c", sequence: 1n, action }), { agentConfig: undefined, aptRefresh: false, env: {}, logger: silentLogger, host });
const scanMetrics = (host: FakeHost) => run(host, { case: "scanUpdates", value: create(ScanUpdatesSchema, { subsystems: ["system", "storage"] }) });

describe("metrics on Windows", () => {
  it("reports CPU, memory, uptime, the reboot Windows Update asked for, and the drives; no load average", async () => {
    const result = await scanMetrics(await windows());
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    if (result.detail.case !== "scanUpdates") throw new Error("no scan result");
    const { systemMetrics: sys, storageMetrics: storage, subsystems } = result.detail.value;
    expect(sys).toMatchObject({
      cpuCores: 2,
      memoryTotalBytes: 16n * GiB,
      memoryAvailableBytes: 4n * GiB,
      memoryUsedBytes: 12n * GiB,
      loadAverage: [],
      uptimeSeconds: 86_400n,
      rebootRequired: true,
      rebootRequiredBy: ["Windows Update"],
    });
    expect(subsystems.map((s) => [s.subsystem, s.state, s.message])).toEqual([
      ["system", SubsystemRunState.RAN, "cpu 0%, memory 75% used, reboot required"],
      ["storage", SubsystemRunState.RAN, "1 file system, fullest C:\\ at 75%"],
    ]);
    expect(storage!.disks.map((d) => [d.mountPoint, d.sizeBytes / GiB])).toEqual([["C:\\", 476n]]);
  });

  it("collects an inventory with the Windows product and build", async () => {
    const result = await run(await windows(), { case: "collectSpecs", value: create(CollectSpecsSchema) });
    expect(result.message).toBe("collected specs: 2 CPUs, 1 disk, reboot required");
    if (result.detail.case !== "collectSpecs") throw new Error("no specs");
    expect(result.detail.value.specs).toMatchObject({
      os: { family: OsFamily.WINDOWS, name: "Windows 11 Pro", version: "10.0.22631", kernel: "10.0.22631", arch: "x86_64" },
      cpuModel: "Intel(R) Core(TM) i5-8500T CPU @ 2.10GHz",
      memoryAvailableBytes: 4n * GiB,
      loadAverage: [],
      rebootRequired: true,
    });
  });

  it("says the reboot state is unknown when reg.exe is refused, and does not schedule one", async () => {
    const host = await windows();
    await host.tools.write("reg.denied", "");
    const scan = await scanMetrics(host);
    if (scan.detail.case !== "scanUpdates") throw new Error("no scan result");
    expect(scan.detail.value.systemMetrics?.rebootRequired).toBe(false);
    expect(scan.detail.value.subsystems[0]!.message).toMatch(/^cpu 0%, memory 75% used; reboot pending unknown: C:\\Windows\\System32\\reg\.exe failed \(exit status 1\): ERROR: Access is denied\./);
    const reboot = await run(host, { case: "reboot", value: create(RebootSchema, {}) });
    expect(reboot.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(reboot.message).toMatch(/^cannot tell whether a reboot is needed \(.*Access is denied\..*\); nothing scheduled \(use force to reboot anyway\)$/);
  });
});

describe("metrics on macOS", () => {
  it("reports memory from vm_stat, swap from sysctl, the volumes from mount, and says the reboot state is unknown", async () => {
    const result = await scanMetrics(await mac());
    if (result.detail.case !== "scanUpdates") throw new Error("no scan result");
    const { systemMetrics: sys, storageMetrics: storage, subsystems } = result.detail.value;
    expect(sys).toMatchObject({
      memoryAvailableBytes: (3562n + 360187n) * 16384n,
      swapTotalBytes: 2n * GiB,
      loadAverage: [2.5, 2, 1.5],
      uptimeSeconds: 3600n,
      rebootRequired: false,
    });
    expect(subsystems[0]!.message).toMatch(/; reboot pending unknown: macOS does not say whether a restart is pending$/);
    expect(storage!.disks.map((d) => [d.mountPoint, d.fsType])).toEqual([["/", "apfs"], ["/System/Volumes/Data", "apfs"]]);
    expect(subsystems[1]!.message).toBe("2 file systems, fullest /System/Volumes/Data at 75%");
  });

  it("fails the storage subsystem with the reason when mount fails, and still reports the rest", async () => {
    const host = await mac({ "vm_stat.out": VM_STAT, "sysctl.out": SYSCTL_SWAPUSAGE });
    await host.tools.write("mount.fail", "mount: getfsstat: Operation not permitted");
    const result = await scanMetrics(host);
    if (result.detail.case !== "scanUpdates") throw new Error("no scan result");
    expect(result.detail.value.subsystems.map((s) => [s.subsystem, s.state, s.message])).toEqual([
      ["system", SubsystemRunState.RAN, expect.stringMatching(/^cpu [\d.]+%, memory [\d.]+% used; reboot pending unknown/)],
      ["storage", SubsystemRunState.FAILED, "cannot list file systems: /sbin/mount failed (exit status 1): mount: getfsstat: Operation not permitted"],
    ]);
  });

  it("collects an inventory naming macOS and its version, or no version when sw_vers cannot say", async () => {
    const result = await run(await mac(), { case: "collectSpecs", value: create(CollectSpecsSchema) });
    if (result.detail.case !== "collectSpecs") throw new Error("no specs");
    expect(result.detail.value.specs!.os).toMatchObject({ family: OsFamily.DARWIN, name: "macOS", version: "14.7.1", kernel: "23.6.0", arch: "arm64" });
    expect(result.message).toMatch(/^collected specs: \d+ CPUs?, 2 disks; reboot pending unknown: macOS does not say whether a restart is pending$/);
    const noVersion = await run(await mac({ "vm_stat.out": VM_STAT, "sysctl.out": SYSCTL_SWAPUSAGE, "mount.out": MAC_MOUNT, "sw_vers.out": "ProductName: macOS\n" }), {
      case: "collectSpecs",
      value: create(CollectSpecsSchema),
    });
    if (noVersion.detail.case !== "collectSpecs") throw new Error("no specs");
    expect(noVersion.detail.value.specs!.os).toMatchObject({ name: "macOS", version: "" });
  });

  it("does not schedule a reboot it cannot tell is needed, unless forced", async () => {
    const result = await run(await mac(), { case: "reboot", value: create(RebootSchema, {}) });
    expect(result.message).toBe("cannot tell whether a reboot is needed (macOS does not say whether a restart is pending); nothing scheduled (use force to reboot anyway)");
  });
});

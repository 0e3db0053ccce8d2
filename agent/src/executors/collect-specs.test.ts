import { create } from "@bufbuild/protobuf";
import { CollectSpecsSchema, CommandOutcome, CommandSchema } from "@redflag/gen/command_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import os from "node:os";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { parseMeminfo, parseMounts } from "../system.ts";
import { executeCommand } from "./index.ts";

describe("parseMounts", () => {
  it("keeps real file systems once per device and decodes escaped paths", () => {
    const mounts = parseMounts(`proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw 0 0
/dev/vda1 / ext4 rw,relatime 0 0
/dev/vda1 /var/lib/docker/bind ext4 rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/loop3 /snap/core/1 squashfs ro 0 0
/dev/sdb1 /srv/my\\040data xfs rw 0 0
rpool/home /home zfs rw 0 0
nas:/export /mnt/nas nfs4 rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
`);
    expect(mounts).toEqual([
      { device: "/dev/vda1", mountPoint: "/", fsType: "ext4" },
      { device: "rpool/home", mountPoint: "/home", fsType: "zfs" },
      { device: "nas:/export", mountPoint: "/mnt/nas", fsType: "nfs4" },
      { device: "/dev/sdb1", mountPoint: "/srv/my data", fsType: "xfs" },
    ]);
  });

  it("counts an overlay root (containers) but no other overlay", () => {
    expect(parseMounts("overlay / overlay rw 0 0\noverlay /var/lib/docker/x/merged overlay rw 0 0\n")).toEqual([
      { device: "overlay", mountPoint: "/", fsType: "overlay" },
    ]);
  });
});

describe("parseMeminfo", () => {
  it("reads kB values as bytes", () => {
    const info = parseMeminfo("MemTotal:       24684092 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n");
    expect(info.get("MemTotal")).toBe(24684092n * 1024n);
    expect(info.get("MemAvailable")).toBe(20000000n * 1024n);
    expect(info.get("HugePages_Total")).toBe(0n);
  });
});

describe("collect_specs on this machine", () => {
  it("collects a plausible inventory", async () => {
    const result = await executeCommand(
      create(CommandSchema, { id: "c", sequence: 1n, action: { case: "collectSpecs", value: create(CollectSpecsSchema) } }),
      { agentConfig: undefined, aptRefresh: false, env: process.env, logger: silentLogger },
    );
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    if (result.detail.case !== "collectSpecs") throw new Error("no specs");
    const specs = result.detail.value.specs!;
    expect(specs.hostname).toBe(os.hostname());
    expect(specs.os).toMatchObject({ family: OsFamily.LINUX, kernel: os.release(), arch: os.machine() });
    expect(specs.os!.name).toBe("Debian GNU/Linux");
    expect(specs.cpuCores).toBe(os.cpus().length);
    expect(specs.cpuModel).not.toBe("");
    expect(specs.memoryTotalBytes).toBeGreaterThan(0n);
    expect(specs.memoryAvailableBytes).toBeGreaterThan(0n);
    expect(specs.memoryAvailableBytes).toBeLessThanOrEqual(specs.memoryTotalBytes);
    expect(specs.uptimeSeconds).toBeGreaterThan(0n);
    expect(specs.loadAverage).toHaveLength(3);
    const root = specs.disks.find((d) => d.mountPoint === "/");
    expect(root, JSON.stringify(specs.disks.map((d) => d.mountPoint))).toBeDefined();
    expect(root!.sizeBytes).toBeGreaterThan(root!.usedBytes);
    expect(root!.inodesTotal).toBeGreaterThanOrEqual(root!.inodesUsed);
    expect(typeof specs.rebootRequired).toBe("boolean");
  });
});

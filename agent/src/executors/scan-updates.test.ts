import { create } from "@bufbuild/protobuf";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import { CommandOutcome, CommandSchema, ScanUpdatesSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createBreakers } from "../breaker.ts";
import { silentLogger } from "../log.ts";
import { executeCommand } from "./index.ts";

const scan = (subsystems: string[] = []) =>
  create(CommandSchema, { id: "c", sequence: 1n, action: { case: "scanUpdates", value: create(ScanUpdatesSchema, { subsystems }) } });
const opts = { agentConfig: undefined, aptRefresh: false, env: process.env, logger: silentLogger };

describe("scan_updates", () => {
  it("runs the real APT scanner", async () => {
    const result = await executeCommand(scan(), opts);
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    if (result.detail.case !== "scanUpdates") throw new Error("no scan detail");
    const { updates, subsystems } = result.detail.value;
    const apt = subsystems.find((s) => s.subsystem === "apt");
    expect(apt).toMatchObject({ state: SubsystemRunState.RAN, updateCount: updates.length });
    expect(apt!.duration).toBeDefined();
    const found = updates.length === 0 ? "no updates" : `${updates.length} updates?, ${updates.filter((u) => u.security).length} security`;
    expect(result.message).toMatch(new RegExp(`^found ${found}; system: cpu `));
  });

  it("reports system and storage metrics separately from package updates", async () => {
    const result = await executeCommand(scan(["system", "storage"]), opts);
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    if (result.detail.case !== "scanUpdates") throw new Error("no scan detail");
    const { updates, subsystems, systemMetrics, storageMetrics } = result.detail.value;
    expect(updates).toEqual([]);
    expect(subsystems.map((s) => [s.subsystem, s.state])).toEqual([
      ["system", SubsystemRunState.RAN],
      ["storage", SubsystemRunState.RAN],
    ]);
    expect(systemMetrics!.cpuCores).toBeGreaterThan(0);
    expect(systemMetrics!.cpuUsagePercent).toBeGreaterThanOrEqual(0);
    expect(systemMetrics!.cpuUsagePercent).toBeLessThanOrEqual(100);
    expect(systemMetrics!.memoryUsedBytes + systemMetrics!.memoryAvailableBytes).toBe(systemMetrics!.memoryTotalBytes);
    expect(systemMetrics!.loadAverage).toHaveLength(3);
    const root = storageMetrics!.disks.find((d) => d.mountPoint === "/");
    expect(root!.sizeBytes).toBeGreaterThan(root!.usedBytes);
    expect(root!.inodesTotal).toBeGreaterThanOrEqual(root!.inodesUsed);
    expect(result.message).toMatch(/^system: cpu [\d.]+%, memory [\d.]+% used.*; storage: \d+ file systems?, fullest /);
  });

  it("skips subsystems this agent does not have, and apt when the config disables it", async () => {
    const explicit = await executeCommand(scan(["portage"]), opts);
    expect(explicit.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(explicit.detail.value).toMatchObject({
      subsystems: [{ subsystem: "portage", state: SubsystemRunState.SKIPPED, message: "portage is not supported by this agent yet" }],
    });
    const disabled = await executeCommand(scan(), {
      ...opts,
      agentConfig: create(AgentConfigSchema, {
        subsystems: ["apt", "system", "storage"].map((name) => ({ name, enabled: false })),
      }),
    });
    if (disabled.detail.case !== "scanUpdates") throw new Error("no scan detail");
    expect(disabled.detail.value.subsystems.find((s) => s.subsystem === "apt")?.state).toBe(SubsystemRunState.SKIPPED);
    expect(disabled.detail.value.systemMetrics).toBeUndefined();
  });

  it("reports NOT_PRESENT where apt is missing", async () => {
    const result = await executeCommand(scan(["apt"]), { ...opts, env: { PATH: "/nonexistent" } });
    expect(result.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(result.message).toBe("no package source to scan on this host");
    expect(result.detail.value).toMatchObject({ subsystems: [{ subsystem: "apt", state: SubsystemRunState.NOT_PRESENT }] });
  });

  it("skips a subsystem whose circuit breaker opened, unless an operator names it", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "redflag-breaker-"));
    try {
      await writeFile(path.join(dir, "apt"), '#!/bin/sh\necho "E: Could not open lock file /var/lib/dpkg/lock-frontend" >&2\nexit 100\n');
      await chmod(path.join(dir, "apt"), 0o755);
      const agentConfig = create(AgentConfigSchema, {
        subsystems: [
          { name: "apt", enabled: true, circuitBreaker: { failureThreshold: 2, windowSeconds: 600, cooldownSeconds: 600 } },
          { name: "system", enabled: false },
          { name: "storage", enabled: false },
        ],
      });
      const run = { ...opts, agentConfig, env: { PATH: dir }, breakers: createBreakers() };
      for (let i = 0; i < 2; i++) {
        const failed = await executeCommand(scan(), run);
        expect(failed.outcome).toBe(CommandOutcome.FAILED);
        expect(failed.message).toMatch(/^apt: apt list --upgradable failed \(exit status 100\): E: Could not open lock file/);
      }
      const skippedRun = await executeCommand(scan(), run);
      if (skippedRun.detail.case !== "scanUpdates") throw new Error("no scan detail");
      expect(skippedRun.detail.value.subsystems.find((s) => s.subsystem === "apt")).toMatchObject({
        state: SubsystemRunState.SKIPPED,
        message: expect.stringMatching(/^circuit breaker open after 2 failures in 600s; next try after /),
      });
      expect(skippedRun.message).toMatch(/^apt skipped: circuit breaker open/);
      const named = await executeCommand(scan(["apt"]), run);
      expect(named.outcome).toBe(CommandOutcome.FAILED);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

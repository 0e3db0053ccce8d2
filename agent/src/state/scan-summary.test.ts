import { create } from "@bufbuild/protobuf";
import { PackageUpdateSchema, ScanUpdatesResultSchema, SubsystemRunSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { mergeScan, scanSummaryFile } from "./scan-summary.ts";

const scan = (runs: [string, SubsystemRunState][], updates: [string, string, boolean][]) =>
  create(ScanUpdatesResultSchema, {
    subsystems: runs.map(([subsystem, state]) => create(SubsystemRunSchema, { subsystem, state })),
    updates: updates.map(([source, name, security]) => create(PackageUpdateSchema, { source, name, security })),
  });

describe("mergeScan", () => {
  it("keeps counts per source, so a scan of some sources leaves the others as they were", () => {
    const t = new Date("2026-11-24T00:00:00Z");
    const full = mergeScan(undefined, scan([["apt", SubsystemRunState.RAN], ["docker", SubsystemRunState.RAN], ["system", SubsystemRunState.RAN]], [
      ["apt", "curl", true],
      ["apt", "bash", false],
      ["docker", "nginx:1.25", false],
    ]), t);
    expect(full).toMatchObject({ pendingUpdateCount: 3, securityUpdateCount: 1, bySource: { apt: { pending: 2, security: 1 }, docker: { pending: 1, security: 0 } } });

    // After installing curl, only apt is scanned again.
    const after = mergeScan(full, scan([["apt", SubsystemRunState.RAN]], [["apt", "bash", false]]), t);
    expect(after).toMatchObject({ pendingUpdateCount: 2, securityUpdateCount: 0 });

    // A failed scan changes nothing; a source that disappeared is dropped.
    expect(mergeScan(after, scan([["apt", SubsystemRunState.FAILED]], []), t).pendingUpdateCount).toBe(2);
    expect(mergeScan(after, scan([["docker", SubsystemRunState.NOT_PRESENT]], []), t).bySource).toEqual({ apt: { pending: 1, security: 0 } });
  });

  it("survives a round trip through its file, and reads the older format", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "rf-summary-"));
    try {
      const file = scanSummaryFile(dir);
      const summary = mergeScan(undefined, scan([["apt", SubsystemRunState.RAN]], [["apt", "curl", true]]), new Date("2026-11-24T00:00:00Z"));
      await file.save(summary);
      expect(await file.load()).toEqual(summary);
      await writeFile(path.join(dir, "scan-summary.json"), '{"version":1,"scanTime":"2026-11-01T00:00:00.000Z","pendingUpdateCount":7,"securityUpdateCount":2}\n');
      expect(await file.load()).toEqual({ scanTime: new Date("2026-11-01T00:00:00Z"), pendingUpdateCount: 7, securityUpdateCount: 2, bySource: {} });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

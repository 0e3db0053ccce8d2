import { create } from "@bufbuild/protobuf";
import { ScanReportSchema } from "@redflag/gen/agent_service_pb";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openAutoScans } from "./auto-scans.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "redflag-auto-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const config = create(AgentConfigSchema, {
  subsystems: [
    { name: "apt", enabled: true, autoRun: true, intervalSeconds: 3600 },
    { name: "system", enabled: true, autoRun: true, intervalSeconds: 60 },
    { name: "snap", enabled: false, autoRun: true, intervalSeconds: 60 },
    { name: "dnf", enabled: true, autoRun: false, intervalSeconds: 60 },
  ],
});

describe("scheduled scans", () => {
  it("are due when enabled, automatic and their interval has passed, across restarts", async () => {
    const t0 = new Date("2026-11-23T10:00:00Z");
    const scans = await openAutoScans(dir);
    expect(scans.due(config, t0)).toEqual(["apt", "system"]);
    await scans.markRun(["apt", "system"], t0);
    expect(scans.due(config, new Date(t0.getTime() + 59_000))).toEqual([]);
    const reopened = await openAutoScans(dir);
    expect(reopened.due(config, new Date(t0.getTime() + 60_000))).toEqual(["system"]);
    expect(reopened.due(config, new Date(t0.getTime() + 3600_000))).toEqual(["apt", "system"]);
    expect((await stat(path.join(dir, "auto-scans.json"))).mode & 0o777).toBe(0o600);
  });

  it("keep reports until acknowledged, on disk, and only the newest when too many pile up", async () => {
    const scans = await openAutoScans(dir);
    const ids = Array.from({ length: 25 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`);
    for (const id of ids) await scans.add(create(ScanReportSchema, { id }));
    const reopened = await openAutoScans(dir);
    expect(reopened.pending().map((r) => r.id)).toEqual(ids.slice(5));
    await reopened.settle(ids.slice(5, 20));
    expect((await openAutoScans(dir)).pending().map((r) => r.id)).toEqual(ids.slice(20));
  });
});

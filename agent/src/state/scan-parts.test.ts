import { create, toBinary } from "@bufbuild/protobuf";
import { PackageUpdateSchema, ScanUpdatesResultSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openScanPartStore, PART_BYTES, PART_UPDATES, splitScan } from "./scan-parts.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "redflag-parts-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const scanOf = (count: number, nameLength = 10) =>
  create(ScanUpdatesResultSchema, {
    updates: Array.from({ length: count }, (_, i) =>
      create(PackageUpdateSchema, { source: "apt", name: `p${i}`.padEnd(nameLength, "x"), availableVersion: "2", currentVersion: "1", architecture: "amd64" }),
    ),
    subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: count }],
  });

describe("splitting scans", () => {
  it("leaves a scan that fits one call alone", () => {
    expect(splitScan(randomUUID(), scanOf(PART_UPDATES))).toBeUndefined();
  });

  it("splits by count into parts that together hold every update once, in order", () => {
    const id = randomUUID();
    const scan = scanOf(2 * PART_UPDATES + 1);
    const split = splitScan(id, scan)!;
    expect(split.parts.map((p) => p.updates.length)).toEqual([PART_UPDATES, PART_UPDATES, 1]);
    expect(split.parts.map((p) => [p.scanId, p.index, p.partCount])).toEqual([[id, 0, 3], [id, 1, 3], [id, 2, 3]]);
    expect(split.parts.flatMap((p) => p.updates.map((u) => u.name))).toEqual(scan.updates.map((u) => u.name));
    // The header keeps everything but the updates.
    expect(split.header).toMatchObject({ updates: [], updateParts: 3, subsystems: scan.subsystems });
    expect(scan.updates).toHaveLength(2 * PART_UPDATES + 1);
  });

  it("splits by bytes when updates are large, keeping every part under the limit", () => {
    const split = splitScan(randomUUID(), scanOf(600, 4000))!;
    expect(split.parts.length).toBeGreaterThan(1);
    for (const part of split.parts) {
      const bytes = part.updates.reduce((n, u) => n + toBinary(PackageUpdateSchema, u).length, 0);
      expect(bytes).toBeLessThanOrEqual(PART_BYTES);
    }
  });
});

describe("scan part store", () => {
  it("keeps the parts of a split scan on disk, private, until removed or pruned", async () => {
    const store = await openScanPartStore(dir);
    const id = randomUUID();
    const small = await store.keep(randomUUID(), scanOf(3));
    expect(small.updates).toHaveLength(3);
    expect(await readdir(path.join(dir, "scan-parts"))).toEqual([]);

    const header = await store.keep(id, scanOf(1500));
    expect(header).toMatchObject({ updates: [], updateParts: 2 });
    expect((await stat(path.join(dir, "scan-parts"))).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(dir, "scan-parts", `${id}.pb`))).mode & 0o777).toBe(0o600);
    // A new process reads them back.
    const again = await openScanPartStore(dir);
    expect((await again.load(id))!.map((p) => p.updates.length)).toEqual([1000, 500]);

    const other = randomUUID();
    await again.keep(other, scanOf(1001));
    await again.prune([other]);
    expect(await again.load(id)).toBeUndefined();
    expect(await again.load(other)).toHaveLength(2);
    await again.remove(other);
    expect(await readdir(path.join(dir, "scan-parts"))).toEqual([]);
  });
});

import { describe, expect, it } from "vitest";
import { cpuTimes, cpuUsagePercent } from "./system.ts";

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

import { describe, expect, it } from "vitest";
import { compareEvr, segmentCompare } from "./vercmp.ts";

describe("rpm and pacman version order", () => {
  it("compares segment by segment like rpmvercmp", () => {
    const older: [string, string][] = [
      ["1.0", "1.0.1"],
      ["1.9", "1.10"],
      ["1.0~rc1", "1.0"],
      ["1.0", "1.0^git1"],
      ["a", "1"],
      ["2.36", "2.036.1"],
    ];
    for (const [a, b] of older) {
      expect(segmentCompare(a, b), `${a} < ${b}`).toBe(-1);
      expect(segmentCompare(b, a), `${b} > ${a}`).toBe(1);
    }
    expect(segmentCompare("1.01", "1.1")).toBe(0);
    expect(segmentCompare("1_0", "1.0")).toBe(0);
  });

  it("reads a trailing letter as rpm and pacman each do", () => {
    expect(segmentCompare("1.0a", "1.0")).toBe(1);
    expect(segmentCompare("1.0a", "1.0", true)).toBe(-1);
  });

  it("orders epoch first, then version, then release", () => {
    expect(compareEvr("1:1.0-1", "2.0-1")).toBe(1);
    expect(compareEvr("8.9.1-2.fc41", "8.9.1-3.fc41")).toBe(-1);
    expect(compareEvr("3.2.2-9.fc41", "1:3.2.2-8.fc41")).toBe(-1);
    expect(compareEvr("8.11.0-1", "8.10.1-2")).toBe(1);
    expect(compareEvr("1.0", "1.0-5")).toBe(0);
  });
});

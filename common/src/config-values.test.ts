import { describe, expect, it } from "vitest";
import { envValues, formatDuration, parseDuration } from "./config-values.ts";

describe("durations", () => {
  it("parse what operators type", () => {
    expect(parseDuration("90")).toBe(90);
    expect(parseDuration(" 10m ")).toBe(600);
    expect(parseDuration("7d")).toBe(604_800);
    expect(parseDuration("2w")).toBe(1_209_600);
    expect(() => parseDuration("7 days")).toThrow(/not a duration/);
    expect(() => parseDuration("-1s")).toThrow(/not a duration/);
    expect(() => parseDuration("99999999999999999w")).toThrow(/too long a duration/);
  });

  it("format as the shortest exact spelling, which parses back", () => {
    expect([600, 90, 604_800, 86_400 * 3, 0].map(formatDuration)).toEqual(["10m", "90s", "1w", "3d", "0s"]);
    for (const seconds of [1, 59, 61, 3600, 7200, 90_000]) expect(parseDuration(formatDuration(seconds))).toBe(seconds);
  });
});

describe("envValues", () => {
  const read = (env: Record<string, string>) => {
    const problems: string[] = [];
    return { values: envValues(env, problems), problems };
  };

  it("read whole numbers in range, and the fallback when unset or empty", () => {
    const { values, problems } = read({ A: "5", B: "", C: "11", D: "2.5", E: "x" });
    expect(values.integer("A", 1, 0, 10)).toBe(5);
    expect(values.integer("B", 1, 0, 10)).toBe(1);
    expect(values.integer("UNSET", 1, 0, 10)).toBe(1);
    expect(values.integer("C", 1, 0, 10)).toBe(1);
    expect(values.integer("D", 1, 0, 10)).toBe(1);
    expect(values.integer("E", 1, 0, 10)).toBe(1);
    expect(problems).toEqual(["C=11 must be a whole number from 0 to 10", "D=2.5 must be a whole number from 0 to 10", "E=x must be a whole number from 0 to 10"]);
  });

  it("read switches in any case", () => {
    const { values, problems } = read({ A: "YES", B: "off", C: "maybe" });
    expect(values.boolean("A", false)).toBe(true);
    expect(values.boolean("B", true)).toBe(false);
    expect(values.boolean("UNSET", true)).toBe(true);
    expect(values.boolean("C", true)).toBe(true);
    expect(problems).toEqual(["C=maybe must be 1 or 0"]);
  });

  it("read durations with a lower bound", () => {
    const { values, problems } = read({ A: "2m", B: "0", C: "soon" });
    expect(values.duration("A", "1h")).toBe(120);
    expect(values.duration("UNSET", "1h")).toBe(3600);
    expect(values.duration("B", "1h", 1)).toBe(0);
    expect(values.duration("C", "1h")).toBe(3600);
    expect(problems).toEqual(["B=0 must be at least 1s", 'C: "soon" is not a duration; use a number with s, m, h, d or w (for example 10m or 7d)']);
  });
});

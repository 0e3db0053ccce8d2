import { describe, expect, it } from "vitest";
import { createSourceLocks } from "./source-lock.ts";

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("source locks", () => {
  it("run operations of one source one at a time, in order, and sources in parallel", async () => {
    const locks = createSourceLocks();
    const log: string[] = [];
    const op = (source: string, name: string) =>
      locks.run(source, async () => {
        log.push(`${name} start`);
        await tick();
        log.push(`${name} end`);
        return name;
      });
    const results = await Promise.all([op("apt", "scan"), op("apt", "install"), op("snap", "refresh")]);
    expect(results).toEqual(["scan", "install", "refresh"]);
    expect(log.indexOf("scan end")).toBeLessThan(log.indexOf("install start"));
    expect(log.indexOf("refresh start")).toBeLessThan(log.indexOf("scan end"));
  });

  it("release the lock when an operation throws", async () => {
    const locks = createSourceLocks();
    await expect(locks.run("apt", async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(locks.busy("apt")).toBe(false);
    await expect(locks.run("apt", async () => "next")).resolves.toBe("next");
  });
});

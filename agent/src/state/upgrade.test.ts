import { mkdir, mkdtemp, readFile, readlink, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkUpgradeAtStart, confirmUpgrade, MAX_STARTS, recordUpgrade, switchCurrent } from "./upgrade.ts";

describe("the upgrade watchdog", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-watchdog-"));
    await mkdir(path.join(dir, "releases", "0.1.0"), { recursive: true });
    await mkdir(path.join(dir, "releases", "0.2.0"), { recursive: true });
    await symlink(path.join("releases", "0.1.0"), path.join(dir, "current"));
    await recordUpgrade(dir, { version: "0.2.0", from: "releases/0.1.0", to: "releases/0.2.0" });
    await switchCurrent(dir, "releases/0.2.0");
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives a new release a few starts, then switches back to the one before", async () => {
    for (let i = 1; i <= MAX_STARTS; i++) expect(await checkUpgradeAtStart(dir)).toMatchObject({ action: "trying", upgrade: { starts: i } });
    expect(await checkUpgradeAtStart(dir)).toMatchObject({ action: "rolled_back", upgrade: { version: "0.2.0", from: "releases/0.1.0" } });
    expect(await readlink(path.join(dir, "current"))).toBe("releases/0.1.0");
    expect(JSON.parse(await readFile(path.join(dir, "upgrade-failed.json"), "utf8"))).toMatchObject({ version: "0.2.0", starts: MAX_STARTS + 1 });
    // The old release starts normally.
    expect(await checkUpgradeAtStart(dir)).toEqual({ action: "none" });
  });

  it("is disarmed by the first completed poll cycle", async () => {
    expect((await checkUpgradeAtStart(dir)).action).toBe("trying");
    expect(await confirmUpgrade(dir)).toMatchObject({ version: "0.2.0" });
    for (let i = 0; i < MAX_STARTS + 2; i++) expect(await checkUpgradeAtStart(dir)).toEqual({ action: "none" });
    expect(await readlink(path.join(dir, "current"))).toBe("releases/0.2.0");
  });

  it("ignores a record that does not match where current points (someone switched by hand)", async () => {
    await switchCurrent(dir, "releases/0.1.0");
    expect(await checkUpgradeAtStart(dir)).toEqual({ action: "none" });
    expect(await checkUpgradeAtStart(undefined)).toEqual({ action: "none" });
  });
});

import { SubsystemRunState } from "@redflag/gen/command_pb";
import { chown, mkdir, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import { brewRunner, parseOutdated, scanBrew, toBrewUpdate } from "./brew.ts";

// Recorded `brew outdated --json=v2` (Homebrew 4.4 on macOS 15), with an older release's
// string-valued installed_versions for a cask.
const OUTDATED = readFileSync(path.join(import.meta.dirname, "testdata", "brew-outdated.json"), "utf8");

describe("brew outdated", () => {
  it("reads formulae, casks, pins and taps", () => {
    const items = parseOutdated(OUTDATED);
    expect(items.map((i) => [i.name, i.cask, i.installed, i.current, i.pinned])).toEqual([
      ["git", false, "2.46.0", "2.47.0", false],
      ["openssl@3", false, "3.3.2", "3.4.0", true],
      ["hashicorp/tap/terraform", false, "1.9.7", "1.9.8", false],
      ["firefox", true, "131.0.3", "132.0.2", false],
      ["iterm2", true, "3.5.4", "3.5.10", false],
    ]);
    expect(items.map((i) => toBrewUpdate(i).repository)).toEqual(["homebrew/core", "homebrew/core (pinned)", "hashicorp/tap", "homebrew/cask", "homebrew/cask"]);
  });
});

describe("scanBrew with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (brew: string) => {
    const t = await fakeTools("brew", { brew }, { "outdated.json": OUTDATED });
    made.push(t);
    return t;
  };

  it("is not present without brew", async () => {
    const t = await fakeTools("brew", {});
    made.push(t);
    expect((await scanBrew({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: false }, [])).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("refreshes with brew update, then lists outdated formulae and casks without auto-updating", async () => {
    const t = await tools(`case "$1" in update) exit 0;; outdated) [ "$HOMEBREW_NO_AUTO_UPDATE" = 1 ] || exit 9; ${printFile("outdated.json")};; esac`);
    const scan = await scanBrew({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: false }, []);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "5 update(s), 0 security; 1 pinned (brew pin)" });
    expect((await t.calls("brew")).map((a) => a.join(" "))).toEqual(["update --quiet", "outdated --json=v2"]);
  });

  it("fails on garbage and on brew's own errors", async () => {
    const garbage = await tools("echo 'Warning: some formulae are not JSON'");
    expect((await scanBrew({ refresh: false, timeoutMs: 5000, env: garbage.env(), isRoot: false }, [])).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "brew outdated printed something that is not JSON; formulae not refreshed (refresh disabled)",
    });
    const broken = await tools('echo "Error: Cannot write to /usr/local/Cellar" >&2; exit 1');
    expect((await scanBrew({ refresh: false, timeoutMs: 5000, env: broken.env(), isRoot: false }, [])).run.message).toBe(
      "brew outdated failed (exit status 1): Error: Cannot write to /usr/local/Cellar; formulae not refreshed (refresh disabled)",
    );
  });

  it("as root, refuses a root-owned Homebrew and runs one owned by a user as that user", async () => {
    if (process.getuid?.() !== 0) return;
    const t = await tools("exit 0");
    const scan = await scanBrew({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true }, []);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "Homebrew is owned by root and refuses to run as root; install it as a regular user" });

    const owned = path.join(t.dir, "linuxbrew", "bin");
    await mkdir(owned, { recursive: true });
    await writeFile(path.join(owned, "brew"), "#!/bin/sh\n", { mode: 0o755 });
    await chown(path.join(owned, "brew"), 65534, 65534);
    const runner = await brewRunner({ PATH: "/nonexistent" }, true, [path.join(owned, "brew")]);
    expect(runner).toMatchObject({ uid: 65534, gid: 65534 });
    expect(runner!.problem).toBeUndefined();
    expect(runner!.env).toMatchObject({ HOME: "/nonexistent", USER: "nobody" });
    expect(runner!.env.HOMEBREW_NO_AUTO_UPDATE).toBe("1");
  });
});

import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { chmod, chown, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { brewRunner, brewTap, newestVersion, parseBrewOutdated, scanBrew, toBrewUpdate } from "./scan.ts";

// Recorded `brew outdated --json=v2`, Homebrew 4.4 on macOS 15: a pinned formula, a tap
// formula, a formula with two kegs installed, casks with array-valued installed_versions.
const BREW_4 = `{
  "formulae": [
    {
      "name": "git",
      "installed_versions": [
        "2.46.0"
      ],
      "current_version": "2.47.0",
      "pinned": false,
      "pinned_version": null
    },
    {
      "name": "openssl@3",
      "installed_versions": [
        "3.3.2"
      ],
      "current_version": "3.4.0",
      "pinned": true,
      "pinned_version": "3.3.2"
    },
    {
      "name": "hashicorp/tap/terraform",
      "installed_versions": [
        "1.9.7"
      ],
      "current_version": "1.9.8",
      "pinned": false,
      "pinned_version": null
    },
    {
      "name": "python@3.12",
      "installed_versions": [
        "3.12.6",
        "3.12.10_1"
      ],
      "current_version": "3.12.11",
      "pinned": false,
      "pinned_version": null
    }
  ],
  "casks": [
    {
      "name": "firefox",
      "installed_versions": [
        "131.0.3"
      ],
      "current_version": "132.0.2"
    }
  ]
}
`;

// Homebrew 3.6 on Linux: a cask's installed_versions was a string.
const BREW_3 = `{
  "formulae": [
    {
      "name": "jq",
      "installed_versions": [
        "1.6"
      ],
      "current_version": "1.7.1",
      "pinned": false,
      "pinned_version": null
    }
  ],
  "casks": [
    {
      "name": "iterm2",
      "installed_versions": "3.5.4",
      "current_version": "3.5.10"
    }
  ]
}
`;

// Homebrew 5 (2026): casks can be pinned too.
const BREW_5 = `{
  "formulae": [],
  "casks": [
    {
      "name": "visual-studio-code",
      "installed_versions": [
        "1.104.1"
      ],
      "current_version": "1.105.0",
      "pinned": true,
      "pinned_version": "1.104.1"
    }
  ]
}
`;

const NOTHING = `{
  "formulae": [],
  "casks": []
}
`;

describe("parseBrewOutdated", () => {
  it("reads formulae, casks, pins and taps, taking the newest installed keg", () => {
    const items = parseBrewOutdated(BREW_4);
    expect(items.map((i) => [i.name, i.cask, i.installed, i.current, i.pinned])).toEqual([
      ["git", false, "2.46.0", "2.47.0", false],
      ["openssl@3", false, "3.3.2", "3.4.0", true],
      ["hashicorp/tap/terraform", false, "1.9.7", "1.9.8", false],
      ["python@3.12", false, "3.12.10_1", "3.12.11", false],
      ["firefox", true, "131.0.3", "132.0.2", false],
    ]);
    const updates = items.map(toBrewUpdate);
    expect(updates.map((u) => u.repository)).toEqual(["homebrew/core", "homebrew/core (pinned)", "hashicorp/tap", "homebrew/core", "homebrew/cask"]);
    expect(updates[0]).toMatchObject({
      source: "brew",
      name: "git",
      currentVersion: "2.46.0",
      availableVersion: "2.47.0",
      architecture: "",
      severity: UpdateSeverity.UNKNOWN,
      security: false,
      sizeBytes: 0n,
      rebootRequired: false,
    });
  });

  it("copes with older and newer releases' cask fields", () => {
    expect(parseBrewOutdated(BREW_3).map((i) => [i.name, i.cask, i.installed, i.current])).toEqual([
      ["jq", false, "1.6", "1.7.1"],
      ["iterm2", true, "3.5.4", "3.5.10"],
    ]);
    expect(parseBrewOutdated(BREW_5)).toEqual([{ name: "visual-studio-code", cask: true, installed: "1.104.1", current: "1.105.0", pinned: true }]);
    expect(toBrewUpdate(parseBrewOutdated(BREW_5)[0]!).repository).toBe("homebrew/cask (pinned)");
  });

  it("finds nothing when nothing is outdated, and refuses what is not its JSON", () => {
    expect(parseBrewOutdated(NOTHING)).toEqual([]);
    expect(parseBrewOutdated("{}")).toEqual([]);
    // A warning printed before the JSON does not hide it.
    expect(parseBrewOutdated(`Warning: some taps are not tapped\n${BREW_3}`)).toHaveLength(2);
    expect(() => parseBrewOutdated("Error: Unknown command: outdated")).toThrow();
    expect(() => parseBrewOutdated('{"formulae": "git"}')).toThrow();
  });

  it("orders versions numerically and names taps", () => {
    expect(newestVersion(["3.9.1", "3.10.0", "3.10.0_1"])).toBe("3.10.0_1");
    expect(newestVersion([])).toBe("");
    expect(brewTap({ name: "user/tools/thing", cask: true })).toBe("user/tools");
  });
});

describe("scanBrew with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (brew: string, files: Record<string, string> = {}) => {
    const t = await fakeTools("brew", { brew }, { "outdated.json": BREW_4, ...files });
    made.push(t);
    return t;
  };
  // The fake fails unless the environment is the one the scanner promises.
  const envCheck = '[ "$HOMEBREW_NO_AUTO_UPDATE" = 1 ] && [ "$HOMEBREW_NO_COLOR" = 1 ] && [ -z "$HOMEBREW_COLOR" ] || { echo "Error: wrong environment" >&2; exit 9; }';
  const opts = (t: FakeTools, refresh = false, extra = {}) => ({ refresh, timeoutMs: 5000, env: { ...t.env(), HOMEBREW_COLOR: "0" }, isRoot: false, ...extra });
  const noLocations = { locations: [] };

  it("is not present without brew", async () => {
    const t = await tools("exit 0");
    const scan = await scanBrew({ refresh: false, timeoutMs: 5000, env: { PATH: path.join(t.dir, "nothing-here") }, isRoot: false }, noLocations);
    expect(scan.run).toMatchObject({ subsystem: "brew", state: SubsystemRunState.NOT_PRESENT, message: "Homebrew is not installed on this host" });
    expect(scan.updates).toEqual([]);
  });

  it("finds brew in Homebrew's usual prefixes when PATH lacks it", async () => {
    const t = await tools(`${envCheck}\n${printFile("outdated.json")}`);
    const scan = await scanBrew({ refresh: false, timeoutMs: 5000, env: { PATH: "/nonexistent" }, isRoot: false }, { locations: ["/nonexistent/brew", path.join(t.dir, "bin", "brew")] });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.updates).toHaveLength(5);
  });

  it("refreshes with brew update, then lists outdated formulae and casks without auto-updating", async () => {
    const t = await tools(`${envCheck}\ncase "$1" in update) exit 0;; outdated) ${printFile("outdated.json")};; esac`);
    const scan = await scanBrew(opts(t, true), noLocations);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 5, message: "5 updates, 0 security; 1 pinned (brew pin), left out of installs of everything" });
    expect(await t.calls("brew")).toEqual([["update", "--quiet"], ["outdated", "--json=v2"]]);
  });

  it("reports nothing outdated as a clean run", async () => {
    const t = await tools(printFile("nothing.json"), { "nothing.json": NOTHING });
    const scan = await scanBrew(opts(t), noLocations);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0, message: "no updates; formulae and casks not refreshed (refresh disabled)" });
  });

  it("still scans when the refresh is locked out or offline, and says why", async () => {
    const locked = await tools(`case "$1" in update) echo "Error: Another \\\`brew update\\\` process is already running." >&2; echo "Please wait for it to finish or terminate it to continue." >&2; exit 1;; esac\n${printFile("outdated.json")}`);
    const scan = await scanBrew(opts(locked, true), noLocations);
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.message).toBe(
      "5 updates, 0 security; formulae and casks not refreshed: brew update failed (exit status 1): Error: Another `brew update` process is already running.; 1 pinned (brew pin), left out of installs of everything",
    );

    const offline = await tools(`case "$1" in update) echo "curl: (6) Could not resolve host: formulae.brew.sh" >&2; echo "Error: Failed to download https://formulae.brew.sh/api/formula.jws.json!" >&2; exit 1;; esac\n${printFile("outdated.json")}`);
    const scan2 = await scanBrew(opts(offline, true), noLocations);
    expect(scan2.run.state).toBe(SubsystemRunState.RAN);
    expect(scan2.run.message).toContain("not refreshed: brew update failed (exit status 1): Error: Failed to download https://formulae.brew.sh/api/formula.jws.json!");
  });

  it("fails on brew's own errors, with its Error line and not its hints", async () => {
    const broken = await tools('echo "Warning: You have unlinked kegs in your Cellar." >&2; echo "Error: Cannot write to /opt/homebrew/Cellar" >&2; echo "  sudo chown -R $(whoami) /opt/homebrew/Cellar" >&2; exit 1');
    expect((await scanBrew(opts(broken), noLocations)).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "brew outdated failed (exit status 1): Error: Cannot write to /opt/homebrew/Cellar; formulae and casks not refreshed (refresh disabled)",
    });
    const silent = await tools("exit 3");
    expect((await scanBrew(opts(silent), noLocations)).run.message).toMatch(/^brew outdated failed \(exit status 3\); /);
  });

  it("fails on garbage", async () => {
    const garbage = await tools("echo '==> Downloading https://ghcr.io/v2/homebrew/portable-ruby'; echo '######## 100.0%'");
    expect((await scanBrew(opts(garbage), noLocations)).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "brew outdated printed something that is not its JSON; formulae and casks not refreshed (refresh disabled)",
    });
  });

  it("stops a hung brew at the time limit", async () => {
    const hung = await tools("exec sleep 30");
    const started = Date.now();
    const scan = await scanBrew({ refresh: false, timeoutMs: 500, env: hung.env(true), isRoot: false }, noLocations);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED });
    expect(scan.run.message).toMatch(/^brew outdated timed out after \ds/);
  });

  // Homebrew refuses root: a root agent runs brew as the owner of the installation.
  describe.runIf(process.getuid?.() === 0)("as root", () => {
    it("refuses a root-owned Homebrew outside a container, and runs it as root inside one", async () => {
      const t = await tools(printFile("outdated.json"));
      const scan = await scanBrew(opts(t, false, { isRoot: true }), { ...noLocations, inContainer: async () => false });
      expect(scan.run).toMatchObject({
        state: SubsystemRunState.FAILED,
        message: `Homebrew refuses to run as root and ${path.join(t.dir, "bin", "brew")} is owned by root; install Homebrew as a regular user, or run the agent as the user who owns the Homebrew prefix`,
      });
      expect(await t.calls("brew")).toEqual([]);
      const inside = await scanBrew(opts(t, false, { isRoot: true }), { ...noLocations, inContainer: async () => true });
      expect(inside.run.state).toBe(SubsystemRunState.RAN);
    });

    it("runs a Homebrew owned by a user as that user, with that user's home", async () => {
      const t = await fakeTools("brew-owned", {});
      made.push(t);
      const bin = path.join(t.dir, "linuxbrew", "bin");
      await mkdir(bin, { recursive: true });
      await t.write("outdated.json", BREW_3);
      // The fake proves who it runs as: it answers only as uid 65534 with HOME from passwd.
      await writeFile(
        path.join(bin, "brew"),
        `#!/bin/sh\nD='${t.dir}'\n[ "$(id -u)" = 65534 ] && [ "$HOME" = "$EXPECTED_HOME" ] && [ -z "$TMPDIR" ] || { echo "Error: ran as $(id -u) with HOME=$HOME" >&2; exit 1; }\n${printFile("outdated.json")}\n`,
      );
      await chmod(path.join(bin, "brew"), 0o755);
      await chown(path.join(bin, "brew"), 65534, 65534);
      for (const dir of [t.dir, path.join(t.dir, "linuxbrew"), bin]) await chmod(dir, 0o755);
      await chmod(t.file("outdated.json"), 0o644);

      const runner = await brewRunner({ PATH: "/nonexistent" }, true, { locations: [path.join(bin, "brew")] });
      expect(runner).toMatchObject({ uid: 65534, user: "nobody" });
      expect(runner!.problem).toBeUndefined();
      expect(runner!.env).toMatchObject({ USER: "nobody", LOGNAME: "nobody", HOMEBREW_NO_AUTO_UPDATE: "1" });

      const env = { PATH: "/usr/bin:/bin", EXPECTED_HOME: runner!.env.HOME, TMPDIR: "/var/root-only-tmp" };
      const scan = await scanBrew({ refresh: false, timeoutMs: 5000, env, isRoot: true }, { locations: [path.join(bin, "brew")] });
      expect(scan.run.state).toBe(SubsystemRunState.RAN);
      expect(scan.run.message).toBe("2 updates, 0 security; formulae and casks not refreshed (refresh disabled); run as nobody, who owns Homebrew");
    });
  });
});

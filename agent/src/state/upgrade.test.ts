import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { runPendingUpgrade, type TrialOptions } from "../upgrade-trial.ts";
import { AGENT_VERSION } from "../version.ts";
import {
  CONFIRMED_FILE,
  currentRelease,
  FAILED_FILE,
  MAX_TRIAL_STARTS,
  pruneReleases,
  readFailure,
  readPendingUpgrade,
  recordFailure,
  recordUpgrade,
  switchCurrent,
  UPGRADE_FILE,
} from "./upgrade.ts";

// The trial of a new release, with releases that are shell scripts behaving like the agent
// would: confirming after a poll cycle (writing upgrade-confirmed.json), exiting at once, or
// never polling. test/self-upgrade.test.ts runs the same with real single-file agents.
describe("the trial of a new release", () => {
  let dir: string;
  const NEW = "9.0.0";

  const release = async (version: string, script: string) => {
    const bin = path.join(dir, "releases", version, "bin");
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, "redflag-agent"), `#!/bin/sh\n${script}\n`);
    await chmod(path.join(bin, "redflag-agent"), 0o755);
  };
  const trial = (opts: Partial<TrialOptions> = {}) =>
    runPendingUpgrade({
      installDir: dir,
      args: ["run", "--state-dir", "/nonexistent"],
      env: { PATH: process.env.PATH, INSTALL: dir },
      trialSeconds: 30,
      stopGraceSeconds: 0,
      signal: new AbortController().signal,
      logger: silentLogger,
      restartDelayMs: 0,
      ...opts,
    });
  // As the agent on trial confirms: its own version, after its first poll cycle.
  const confirms = (version: string) =>
    `echo "$@" > "$INSTALL/args"; echo "$REDFLAG_AGENT_UPGRADE_TRIAL" > "$INSTALL/trial-env"; ` +
    `trap 'kill $!; echo stopped > "$INSTALL/stopped"; exit 0' TERM; ` +
    `printf '{"version":"${version}","at":"x"}' > "$INSTALL/${CONFIRMED_FILE}"; sleep 30 & wait`;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-trial-"));
    await mkdir(path.join(dir, "releases", AGENT_VERSION), { recursive: true });
    await symlink(path.join("releases", AGENT_VERSION), path.join(dir, "current"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("does nothing without a pending upgrade, and forgets one for the version that runs", async () => {
    expect(await trial()).toEqual({ outcome: "none" });
    await recordUpgrade(dir, { version: AGENT_VERSION, from: "0.0.9" });
    expect(await trial()).toEqual({ outcome: "none" });
    expect(await readPendingUpgrade(dir)).toBeUndefined();
  });

  it("switches `current` once the new release confirms, stops it, keeps the one before and prunes the rest", async () => {
    await release("0.0.1", "exit 0");
    await release(NEW, confirms(NEW));
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    const outcome = await trial();
    expect(outcome).toEqual({ outcome: "switched", version: NEW, pruned: ["0.0.1"] });
    expect(await readlink(path.join(dir, "current"))).toBe(path.join("releases", NEW));
    expect(await currentRelease(dir)).toBe(NEW);
    // Same arguments, told it is on trial, stopped gracefully.
    expect(await readFile(path.join(dir, "args"), "utf8")).toBe("run --state-dir /nonexistent\n");
    expect(await readFile(path.join(dir, "trial-env"), "utf8")).toBe(`${NEW}\n`);
    expect(await readFile(path.join(dir, "stopped"), "utf8")).toBe("stopped\n");
    expect((await readdir(path.join(dir, "releases"))).sort()).toEqual([AGENT_VERSION, NEW].sort());
    expect((await readdir(dir)).filter((f) => f.startsWith("upgrade"))).toEqual([]);
  });

  it("abandons a release that exits before confirming, after three starts, and leaves `current` alone", async () => {
    await release(NEW, `echo started >> "$INSTALL/starts"; exit 1`);
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    const outcome = await trial();
    expect(outcome).toMatchObject({ outcome: "failed", failure: { version: NEW, from: AGENT_VERSION, reason: `it exited ${MAX_TRIAL_STARTS} times before completing a poll cycle (the last time with exit code 1)` } });
    expect((await readFile(path.join(dir, "starts"), "utf8")).trim().split("\n")).toHaveLength(MAX_TRIAL_STARTS);
    expect(await readlink(path.join(dir, "current"))).toBe(path.join("releases", AGENT_VERSION));
    expect(await readFailure(dir)).toMatchObject({ version: NEW, reason: expect.stringContaining("exit code 1") });
    expect(await readPendingUpgrade(dir)).toBeUndefined();
    // The release that failed is removed; the one that works stays.
    expect(await readdir(path.join(dir, "releases"))).toEqual([AGENT_VERSION]);
    // The next start runs as usual.
    expect(await trial()).toEqual({ outcome: "none" });
  });

  it("kills a release that does not confirm within the trial time", async () => {
    await release(NEW, "exec sleep 60");
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    const outcome = await trial({ trialSeconds: 1 });
    expect(outcome).toMatchObject({ outcome: "failed", failure: { version: NEW, reason: "it did not complete a poll cycle within 1 s" } });
    expect(await readlink(path.join(dir, "current"))).toBe(path.join("releases", AGENT_VERSION));
  });

  it("refuses a release that is another version than it was installed as", async () => {
    await release(NEW, confirms("0.0.7"));
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    expect(await trial()).toMatchObject({ outcome: "failed", failure: { reason: `the release in releases/${NEW} says it is version 0.0.7` } });
    expect(await currentRelease(dir)).toBe(AGENT_VERSION);
  });

  it("abandons a release without its executable, and one whose trial was interrupted three times", async () => {
    await mkdir(path.join(dir, "releases", NEW));
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    expect(await trial()).toMatchObject({ outcome: "failed", failure: { reason: `releases/${NEW} holds no bin/redflag-agent` } });
    await release(NEW, "exec sleep 60");
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    for (let i = 0; i < MAX_TRIAL_STARTS; i++) {
      const stop = new AbortController();
      const running = trial({ signal: stop.signal });
      while ((await readPendingUpgrade(dir))?.starts !== i + 1) await new Promise((r) => setTimeout(r, 20));
      stop.abort();
      expect(await running).toEqual({ outcome: "stopped" });
    }
    expect(await trial()).toMatchObject({ outcome: "failed", failure: { reason: `its trial was interrupted ${MAX_TRIAL_STARTS} times` } });
  });

  it("stops the release on trial before it stops itself", async () => {
    await release(NEW, `trap 'kill $!; echo stopped > "$INSTALL/stopped"; exit 0' TERM; echo up > "$INSTALL/up"; sleep 60 & wait`);
    await recordUpgrade(dir, { version: NEW, from: AGENT_VERSION });
    const stop = new AbortController();
    const running = trial({ signal: stop.signal });
    while (!(await readFile(path.join(dir, "up")).catch(() => undefined))) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    expect(await running).toEqual({ outcome: "stopped" });
    expect(await readFile(path.join(dir, "stopped"), "utf8")).toBe("stopped\n");
    // Still pending: the next start tries again.
    expect(await readPendingUpgrade(dir)).toMatchObject({ version: NEW, starts: 1 });
  });
});

describe("the upgrade records", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rf-upgrade-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("replace an earlier failure with a new attempt", async () => {
    await recordFailure(dir, { version: "0.2.0", from: "0.1.0", reason: "it did not start" });
    expect(await readFailure(dir)).toMatchObject({ version: "0.2.0", reason: "it did not start" });
    await recordUpgrade(dir, { version: "0.3.0", from: "0.1.0" });
    expect(await readFailure(dir)).toBeUndefined();
    expect(await readPendingUpgrade(dir)).toMatchObject({ version: "0.3.0", from: "0.1.0", starts: 0 });
  });

  it("count as absent when damaged or naming a path rather than a version", async () => {
    await writeFile(path.join(dir, UPGRADE_FILE), "{not json");
    expect(await readPendingUpgrade(dir)).toBeUndefined();
    await writeFile(path.join(dir, UPGRADE_FILE), JSON.stringify({ version: "../../etc", from: "0.1.0", starts: 0 }));
    expect(await readPendingUpgrade(dir)).toBeUndefined();
    await writeFile(path.join(dir, FAILED_FILE), JSON.stringify({ version: "0.2.0" }));
    expect(await readFailure(dir)).toBeUndefined();
    // Every poll reports it: a time that is not one must not break the poll.
    await writeFile(path.join(dir, FAILED_FILE), JSON.stringify({ version: "0.2.0", from: "0.1.0", reason: "x", at: "yesterday" }));
    expect(await readFailure(dir)).toBeUndefined();
    expect(await readFailure(undefined)).toBeUndefined();
  });

  it("switch `current` by replacing the link, and prune all but the releases kept and the one in use", async () => {
    for (const v of ["0.1.0", "0.2.0", "0.3.0", "0.4.0"]) await mkdir(path.join(dir, "releases", v), { recursive: true });
    await switchCurrent(dir, "0.1.0");
    await switchCurrent(dir, "0.2.0");
    expect(await readlink(path.join(dir, "current"))).toBe(path.join("releases", "0.2.0"));
    expect(await readdir(dir)).toEqual(["current", "releases"]);
    expect((await pruneReleases(dir, ["0.4.0", "0.3.0"])).sort()).toEqual(["0.1.0"]);
    expect((await readdir(path.join(dir, "releases"))).sort()).toEqual(["0.2.0", "0.3.0", "0.4.0"]);
  });

  // The Windows branch, run here: Node ignores the junction type off Windows and makes a symlink
  // with the same absolute target; what it checks is the order of the renames and the clean-up.
  it("switch `current` on Windows as a junction to the absolute release directory, leaving nothing behind", async () => {
    for (const v of ["0.1.0", "0.2.0"]) await mkdir(path.join(dir, "releases", v), { recursive: true });
    await switchCurrent(dir, "0.1.0", "win32");
    await switchCurrent(dir, "0.2.0", "win32");
    expect(await readlink(path.join(dir, "current"))).toBe(path.join(dir, "releases", "0.2.0"));
    expect(await currentRelease(dir)).toBe("0.2.0");
    expect(await readdir(dir)).toEqual(["current", "releases"]);
  });
});

import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { brewReasonFor, createBrewInstaller, parseBrewDryRun, parseBrewListVersions } from "./install.ts";
import type { InstallOptions } from "../types.ts";

// Recorded `brew upgrade --dry-run --formula git hashicorp/tap/terraform`, Homebrew 4.4: new
// dependencies on one line, dependents joined by ", ".
const DRY_RUN_4 = `==> Would upgrade 2 outdated packages:
git 2.46.0 -> 2.47.0
hashicorp/tap/terraform 1.9.7 -> 1.9.8
==> Would install 2 dependencies for git:
gettext 0.22.5 pcre2 10.42 -> 10.44
==> Would upgrade 2 dependents of upgraded formulae:
git-lfs 3.5.1 -> 3.6.0, tig 2.5.10 -> 2.5.11
==> No currently broken dependents found!
`;

// The same with Homebrew 5 (2026): dependencies first, one per line, split into installs and
// upgrades; the summary is padded, carries download sizes and lists pins.
const DRY_RUN_5 = `==> Would install 1 dependency for git:
gettext 0.22.5
==> Would upgrade 1 dependency for git:
pcre2 10.42 -> 10.44
==> Would upgrade 4 outdated packages
git                      2.46.0 -> 2.47.0 (20.1MB)
hashicorp/tap/terraform  1.9.7  -> 1.9.8
git-lfs                  3.5.1  -> 3.6.0 (4.2MB)
tig                      2.5.10 -> 2.5.11
==> 1 Pinned formula
openssl@3 3.4.0
==> 1 homebrew/core formula that would build from source
tig
`;

const DRY_RUN_CASK = `==> Would upgrade 1 outdated package:
firefox 131.0.3 -> 132.0.2
`;

const OUTDATED = JSON.stringify({
  formulae: [
    { name: "git", installed_versions: ["2.46.0"], current_version: "2.47.0", pinned: false, pinned_version: null },
    { name: "openssl@3", installed_versions: ["3.3.2"], current_version: "3.4.0", pinned: true, pinned_version: "3.3.2" },
    { name: "hashicorp/tap/terraform", installed_versions: ["1.9.7"], current_version: "1.9.8", pinned: false, pinned_version: null },
  ],
  casks: [{ name: "firefox", installed_versions: ["131.0.3"], current_version: "132.0.2" }],
}, null, 2);
const FORMULAE_BEFORE = "git 2.46.0\nopenssl@3 3.3.2\npcre2 10.42\nterraform 1.9.7\nwget 1.24.5\n";
const CASKS_BEFORE = "firefox 131.0.3\n";

describe("parseBrewDryRun", () => {
  const summary = (text: string) => parseBrewDryRun(text).map((c) => [c.kind, c.name, c.fromVersion, c.toVersion]);
  const expected = [
    [PackageChangeKind.UPGRADE, "git", "2.46.0", "2.47.0"],
    [PackageChangeKind.UPGRADE, "hashicorp/tap/terraform", "1.9.7", "1.9.8"],
    [PackageChangeKind.INSTALL, "gettext", "", "0.22.5"],
    [PackageChangeKind.UPGRADE, "pcre2", "10.42", "10.44"],
    [PackageChangeKind.UPGRADE, "git-lfs", "3.5.1", "3.6.0"],
    [PackageChangeKind.UPGRADE, "tig", "2.5.10", "2.5.11"],
  ];

  it("reads Homebrew 4's upgrades, new and upgraded dependencies and dependents", () => {
    expect(summary(DRY_RUN_4)).toEqual(expected);
    expect(parseBrewDryRun(DRY_RUN_4).every((c) => c.source === "brew")).toBe(true);
  });

  it("reads Homebrew 5's padded summary with sizes, ignoring pins and build notes", () => {
    const changes = summary(DRY_RUN_5);
    expect(changes).toHaveLength(6);
    expect(changes).toEqual(expect.arrayContaining(expected));
  });

  it("reads casks, colour codes and cask versions with commas", () => {
    expect(summary(DRY_RUN_CASK)).toEqual([[PackageChangeKind.UPGRADE, "firefox", "131.0.3", "132.0.2"]]);
    expect(summary("\u001b[34m==>\u001b[0m \u001b[1mWould upgrade 1 outdated package:\u001b[0m\ndocker 4.34.0,165256 -> 4.35.1,173168\n")).toEqual([
      [PackageChangeKind.UPGRADE, "docker", "4.34.0,165256", "4.35.1,173168"],
    ]);
  });

  it("finds nothing in errors, warnings or garbage", () => {
    expect(parseBrewDryRun("")).toEqual([]);
    expect(parseBrewDryRun("Warning: Not upgrading git, the latest version is already installed\n")).toEqual([]);
    expect(parseBrewDryRun("==> Would upgrade 1 outdated package:\n$(reboot) now\n")).toEqual([]);
    expect(parseBrewDryRun("==> Would upgrade 1 outdated package:\ngit\n")).toEqual([]);
  });
});

describe("brew helpers", () => {
  it("reads installed versions, several kegs included", () => {
    expect(parseBrewListVersions("git 2.47.0\npython@3.12 3.12.10_1 3.12.11\n\nbroken\n")).toEqual(
      new Map([["git", ["2.47.0"]], ["python@3.12", ["3.12.10_1", "3.12.11"]]]),
    );
  });

  it("finds Homebrew's error about one package", () => {
    const output = [
      'Error: terraform: Failed to download resource "terraform"',
      "Error: A `brew upgrade` process has already locked /opt/homebrew/var/homebrew/locks/git.formula.lock.",
    ].join("\n");
    expect(brewReasonFor("hashicorp/tap/terraform", output)).toBe('Error: terraform: Failed to download resource "terraform"');
    expect(brewReasonFor("git", output)).toMatch(/locks\/git\.formula\.lock/);
    expect(brewReasonFor("gi", output)).toBeUndefined();
    expect(brewReasonFor("wget", output)).toBeUndefined();
    // A name is text, not a pattern.
    expect(brewReasonFor("g.t", output)).toBeUndefined();
  });
});

// A fake brew: `outdated` and `list` answer from "<file>.before" until an upgrade ran (it leaves
// a marker), then from "<file>.after"; `upgrade --dry-run --formula|--cask` prints
// "dry--formula" / "dry--cask"; a real upgrade runs the test's script.
describe("brew installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const fake = async (upgrade: string, files: Record<string, string> = {}) => {
    const script = `pr() { [ -e "$D/$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$D/$1"; }
[ "$HOMEBREW_NO_AUTO_UPDATE" = 1 ] && [ "$HOMEBREW_NO_ASK" = 1 ] || { echo "Error: wrong environment" >&2; exit 9; }
state=before; [ -e "$D/ran" ] && state=after
case "$1" in
outdated) pr "outdated.$state";;
list) case "$3" in --cask) pr "casks.$state";; *) pr "formulae.$state";; esac;;
upgrade) if [ "$2" = "--dry-run" ]; then pr "dry$3"; exit 0; fi
  : > "$D/ran"
  ${upgrade};;
esac`;
    const t = await fakeTools("brew-install", { brew: script }, {
      "outdated.before": OUTDATED,
      "formulae.before": FORMULAE_BEFORE,
      "casks.before": CASKS_BEFORE,
      ...files,
    });
    made.push(t);
    return t;
  };
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "brew", name, version });
  const upgrades = async (t: FakeTools) => (await t.calls("brew")).filter((a) => a[0] === "upgrade");
  const installer = createBrewInstaller({ locations: [] });

  it("upgrades formulae and casks separately and reports each from the Cellar, dependencies included", async () => {
    const t = await fake('echo "==> Upgrading $3"; exit 0', {
      "outdated.after": JSON.stringify({ formulae: JSON.parse(OUTDATED).formulae.slice(1), casks: [] }),
      "formulae.after": "gettext 0.22.5\ngit 2.47.0\nopenssl@3 3.3.2\npcre2 10.44\nterraform 1.9.7\nwget 1.24.5\n",
      "casks.after": "firefox 132.0.2\n",
    });
    const out = await installer.install([ref("git"), ref("firefox"), ref("openssl@3"), ref("wget"), ref("nope")], opts(t));
    expect(out.error).toBeUndefined();
    expect(out.rebootRequired).toBe(false);
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["git", PackageResultState.INSTALLED, "2.46.0", "2.47.0", ""],
      ["firefox", PackageResultState.INSTALLED, "131.0.3", "132.0.2", ""],
      ["openssl@3", PackageResultState.SKIPPED, "3.3.2", "", "pinned in Homebrew (brew unpin openssl@3 to allow it)"],
      ["wget", PackageResultState.SKIPPED, "1.24.5", "", "already up to date"],
      ["nope", PackageResultState.SKIPPED, "", "", "not installed; only upgrades were requested"],
      ["gettext", PackageResultState.INSTALLED, "", "0.22.5", "changed by brew upgrade (formula dependency or dependent)"],
      ["pcre2", PackageResultState.INSTALLED, "10.42", "10.44", "changed by brew upgrade (formula dependency or dependent)"],
    ]);
    expect(await upgrades(t)).toEqual([["upgrade", "--formula", "git"], ["upgrade", "--cask", "firefox"]]);
    expect(out.output.map((o) => o.argv.slice(1))).toEqual([["upgrade", "--formula", "git"], ["upgrade", "--cask", "firefox"]]);
    expect(out.output[0]).toMatchObject({ exitCode: 0, stdoutTail: "==> Upgrading git", timedOut: false });
  });

  it("never hands brew a name it does not list as outdated, so a formula of an untapped repository is never tapped", async () => {
    // `brew upgrade user/tap/formula` would tap github.com/user/homebrew-tap and run its Ruby.
    const t = await fake("exit 0");
    const out = await installer.install([ref("evil/tap/miner"), ref("evil/tap/miner", "1.0")], opts(t));
    expect(out.packages.map((p) => p.state)).toEqual([PackageResultState.SKIPPED, PackageResultState.FAILED]);
    const sim = await installer.dryRun!([ref("evil/tap/miner")], opts(t));
    expect(sim.changes).toEqual([]);
    expect((await t.calls("brew")).filter((a) => a.some((arg) => arg.includes("evil")) || a[0] === "tap" || a[0] === "install")).toEqual([]);
  });

  it("installs everything outdated except pins and holds when asked for nothing in particular", async () => {
    const t = await fake("exit 0", { "formulae.after": FORMULAE_BEFORE.replace("terraform 1.9.7", "terraform 1.9.8"), "casks.after": "firefox 132.0.2\n" });
    const out = await installer.install([], opts(t, { holds: new Set(["git"]) }));
    expect(out.packages.map((p) => [p.name, p.state])).toEqual([
      ["hashicorp/tap/terraform", PackageResultState.INSTALLED],
      ["firefox", PackageResultState.INSTALLED],
    ]);
    expect(await upgrades(t)).toEqual([["upgrade", "--formula", "hashicorp/tap/terraform"], ["upgrade", "--cask", "firefox"]]);
  });

  it("falls back to brew outdated when brew list tells nothing", async () => {
    const t = await fake("exit 0", {
      "formulae.before": "",
      "casks.before": "",
      "outdated.after": JSON.stringify({ formulae: JSON.parse(OUTDATED).formulae.filter((f: { name: string }) => f.name !== "git"), casks: [] }),
    });
    const out = await installer.install([ref("git"), ref("hashicorp/tap/terraform")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["git", PackageResultState.INSTALLED, ""],
      ["hashicorp/tap/terraform", PackageResultState.FAILED, "still outdated after brew upgrade"],
    ]);
  });

  it("reports a package that failed to download while the others upgrade", async () => {
    const t = await fake(
      [
        'echo "==> Fetching hashicorp/tap/terraform"',
        'echo "curl: (6) Could not resolve host: releases.hashicorp.com" >&2',
        'echo "Error: terraform: Failed to download resource \\"terraform\\"" >&2',
        'echo "Download failed: https://releases.hashicorp.com/terraform/1.9.8/terraform_1.9.8_darwin_arm64.zip" >&2',
        "exit 1",
      ].join("\n"),
      { "formulae.after": FORMULAE_BEFORE.replace("git 2.46.0", "git 2.47.0"), "casks.after": CASKS_BEFORE },
    );
    const out = await installer.install([ref("git"), ref("hashicorp/tap/terraform")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["git", PackageResultState.INSTALLED, ""],
      ["hashicorp/tap/terraform", PackageResultState.FAILED, 'Error: terraform: Failed to download resource "terraform"'],
    ]);
    expect(out.error).toBe('brew upgrade failed (exit status 1): Error: terraform: Failed to download resource "terraform"');
    expect(await upgrades(t)).toEqual([["upgrade", "--formula", "git", "hashicorp/tap/terraform"]]);
  });

  it("fails packages another brew process holds locked, with Homebrew's words", async () => {
    const t = await fake(
      'echo "Error: A \\`brew upgrade\\` process has already locked /opt/homebrew/var/homebrew/locks/git.formula.lock." >&2; echo "Please wait for it to finish or terminate it to continue." >&2; exit 1',
      { "formulae.after": FORMULAE_BEFORE, "casks.after": CASKS_BEFORE },
    );
    const out = await installer.install([ref("git")], opts(t));
    expect(out.packages[0]).toMatchObject({
      state: PackageResultState.FAILED,
      fromVersion: "2.46.0",
      toVersion: "2.47.0",
      reason: "Error: A `brew upgrade` process has already locked /opt/homebrew/var/homebrew/locks/git.formula.lock.",
    });
  });

  it("fails a cask whose installer needs a password, saying so", async () => {
    const t = await fake(
      'echo "Error: firefox: Failure while executing; \\`/usr/bin/sudo -u root -E -- /bin/rm -rf /Applications/Firefox.app\\` exited with 1." >&2; echo "sudo: a terminal is required to read the password" >&2; exit 1',
      { "formulae.after": FORMULAE_BEFORE, "casks.after": CASKS_BEFORE },
    );
    const out = await installer.install([ref("firefox")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: expect.stringMatching(/^Error: firefox: Failure while executing; `\/usr\/bin\/sudo/) });
    expect(await upgrades(t)).toEqual([["upgrade", "--cask", "firefox"]]);
  });

  it("refuses a version Homebrew no longer offers, running nothing", async () => {
    const t = await fake("exit 0");
    const out = await installer.install([ref("git", "2.46.5")], opts(t));
    expect(out.packages[0]).toMatchObject({
      state: PackageResultState.FAILED,
      toVersion: "2.46.5",
      reason: "Homebrew can only install the current version of git (2.47.0), not 2.46.5",
    });
    expect(await upgrades(t)).toEqual([]);
  });

  it("previews with --dry-run per kind, and a confirmed preview installs its new dependency too", async () => {
    const t = await fake("exit 0", {
      "dry--formula": DRY_RUN_4,
      "dry--cask": DRY_RUN_CASK,
      "formulae.after": "gettext 0.22.5\ngit 2.47.0\nopenssl@3 3.3.2\npcre2 10.44\nterraform 1.9.7\nwget 1.24.5\n",
      "casks.after": CASKS_BEFORE,
    });
    const sim = await installer.dryRun!([ref("git"), ref("firefox"), ref("openssl@3"), ref("wget")], opts(t));
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => c.name)).toEqual(["git", "hashicorp/tap/terraform", "gettext", "pcre2", "git-lfs", "tig", "firefox"]);
    expect(await upgrades(t)).toEqual([["upgrade", "--dry-run", "--formula", "git"], ["upgrade", "--dry-run", "--cask", "firefox"]]);

    const out = await installer.install([ref("git", "2.47.0"), ref("gettext", "0.22.5"), ref("pcre2", "10.44")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["git", PackageResultState.INSTALLED, "2.46.0", "2.47.0"],
      ["gettext", PackageResultState.INSTALLED, "", "0.22.5"],
      ["pcre2", PackageResultState.INSTALLED, "10.42", "10.44"],
    ]);
    expect((await upgrades(t)).at(-1)).toEqual(["upgrade", "--formula", "git"]);
  });

  it("previews everything pending except pins and holds, and reports brew's errors", async () => {
    const t = await fake("exit 0", { "dry--formula": DRY_RUN_4 });
    const sim = await installer.dryRun!([], opts(t, { holds: new Set(["firefox"]) }));
    expect(sim.error).toBeUndefined();
    expect(await upgrades(t)).toEqual([["upgrade", "--dry-run", "--formula", "git", "hashicorp/tap/terraform"]]);
    // Nothing pending among the requested: nothing runs, nothing changes.
    const none = await installer.dryRun!([ref("wget")], opts(t));
    expect(none.changes).toEqual([]);
    expect(none.error).toBeUndefined();

    const broken = await fakeTools("brew-dry-fails", { brew: `case "$1" in outdated) echo '${OUTDATED.replace(/\n/g, "")}';; *) echo "Error: Cannot write to /opt/homebrew/Cellar" >&2; exit 1;; esac` });
    made.push(broken);
    const failed = await installer.dryRun!([ref("git")], opts(broken));
    expect(failed).toMatchObject({ changes: [], error: "brew upgrade --dry-run failed (exit status 1): Error: Cannot write to /opt/homebrew/Cellar" });
  });

  it("fails everything when brew outdated fails or prints garbage", async () => {
    const t = await fakeTools("brew-garbage", { brew: "echo 'not json'" });
    made.push(t);
    const out = await installer.install([ref("git")], opts(t));
    expect(out.error).toBe("brew outdated printed something that is not its JSON");
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "brew outdated printed something that is not its JSON" });
  });

  it("is killed at its time limit and says so", async () => {
    const t = await fake("exec sleep 30", {});
    const started = Date.now();
    const out = await installer.install([ref("git")], { ...opts(t), timeoutMs: 1500, env: t.env(true) });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out.error).toMatch(/^brew upgrade timed out after \ds$/);
    expect(out.output[0]!.timedOut).toBe(true);
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED });
  });

  it("is absent without brew and has no rollback", async () => {
    const env = { PATH: path.join("/nonexistent", "bin") };
    expect(await installer.present(env)).toBe(false);
    const out = await installer.install([ref("git")], { timeoutMs: 1000, env, isRoot: false, holds: new Set() });
    expect(out).toMatchObject({ error: "Homebrew is not installed on this host", output: [] });
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "Homebrew is not installed on this host" });
    expect(installer.rollback).toBeUndefined();
  });

  it.runIf(process.getuid?.() === 0)("as root, refuses a root-owned Homebrew outside a container without running it", async () => {
    const t = await fake("exit 0");
    const rooted = createBrewInstaller({ locations: [], inContainer: async () => false });
    const out = await rooted.install([ref("git")], opts(t, { isRoot: true }));
    expect(out.error).toMatch(/^Homebrew refuses to run as root and .* is owned by root/);
    expect(await t.calls("brew")).toEqual([]);
  });
});

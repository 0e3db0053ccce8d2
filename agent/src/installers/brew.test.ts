import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import { brewReasonFor, createBrewInstaller, parseBrewDryRun } from "./brew.ts";
import type { InstallOptions } from "./types.ts";

const OUTDATED = readFileSync(path.join(import.meta.dirname, "..", "scanners", "testdata", "brew-outdated.json"), "utf8");
// After upgrading git and firefox: only the pinned openssl, terraform and iterm2 remain.
const AFTER = JSON.stringify({
  formulae: JSON.parse(OUTDATED).formulae.filter((f: { name: string }) => f.name !== "git"),
  casks: JSON.parse(OUTDATED).casks.filter((c: { name: string }) => c.name !== "firefox"),
});

describe("brew parsers", () => {
  it("reads upgrade --dry-run", () => {
    const text = "==> Would upgrade 1 outdated package:\ngit 2.46.0 -> 2.47.0\n==> Would install 2 dependencies for git:\ngettext pcre2 10.44\n";
    expect(parseBrewDryRun(text).map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "git", "2.46.0", "2.47.0"],
      [PackageChangeKind.INSTALL, "gettext", "", "latest"],
      [PackageChangeKind.INSTALL, "pcre2", "", "10.44"],
    ]);
  });

  it("finds Homebrew's error about one package", () => {
    expect(brewReasonFor("hashicorp/tap/terraform", "Error: terraform: SHA256 mismatch\n")).toBe("Error: terraform: SHA256 mismatch");
    expect(brewReasonFor("git", "Error: terraform: SHA256 mismatch\n")).toBeUndefined();
  });
});

describe("brew installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set() });
  const ref = (name: string) => create(PackageRefSchema, { source: "brew", name });
  const tools = async (upgrade: string) => {
    const t = await fakeTools(
      "brew-install",
      { brew: `case "$1" in outdated) if [ -e "$D/ran" ]; then ${printFile("after.json")}; else ${printFile("outdated.json")}; fi; exit 0;; esac\n${upgrade}` },
      { "outdated.json": OUTDATED, "after.json": AFTER },
    );
    made.push(t);
    return t;
  };
  const installer = createBrewInstaller([]);

  it("upgrades formulae and casks separately, skipping pinned and current ones", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    const out = await installer.install([ref("git"), ref("firefox"), ref("openssl@3"), ref("wget")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["git", PackageResultState.INSTALLED, "2.46.0", "2.47.0", ""],
      ["firefox", PackageResultState.INSTALLED, "131.0.3", "132.0.2", ""],
      ["openssl@3", PackageResultState.SKIPPED, "3.3.2", "", "pinned in Homebrew (brew unpin to allow it)"],
      ["wget", PackageResultState.SKIPPED, "", "", "already up to date (or not installed)"],
    ]);
    const upgrades = (await t.calls("brew")).filter((a) => a[0] === "upgrade");
    expect(upgrades).toEqual([["upgrade", "--formula", "git"], ["upgrade", "--cask", "firefox"]]);
  });

  it("fails what is still outdated, with Homebrew's words", async () => {
    const t = await tools('echo "Error: terraform: SHA256 mismatch" >&2; exit 1');
    const out = await installer.install([ref("hashicorp/tap/terraform")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "Error: terraform: SHA256 mismatch" });
  });

  it("previews with --dry-run and has no rollback", async () => {
    const t = await tools(`case "$*" in *--dry-run*) echo "==> Would upgrade 1 outdated package:"; echo "git 2.46.0 -> 2.47.0";; esac; exit 0`);
    const sim = await installer.dryRun!([ref("git")], opts(t));
    expect(sim.changes.map((c) => c.name)).toEqual(["git"]);
    expect(installer.rollback).toBeUndefined();
  });
});

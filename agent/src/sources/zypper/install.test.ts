import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { createZypperInstaller, parseInstallSummary, zypperReasonFor, zypperSpec } from "./install.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

// Recorded `zypper --non-interactive --xmlout update --dry-run curl` (openSUSE Leap 15.6).
const DRY_RUN = readFileSync(path.join(import.meta.dirname, "testdata", "zypper-dry-run.xml"), "utf8");

describe("zypper transactions", () => {
  it("reads the install summary: upgrades, new dependencies and removals, packages only", () => {
    expect(parseInstallSummary(DRY_RUN).map((c) => [c.kind, c.name, c.fromVersion, c.toVersion, c.architecture])).toEqual([
      [PackageChangeKind.UPGRADE, "curl", "8.6.0-150600.4.6.1", "8.6.0-150600.4.9.1", "x86_64"],
      [PackageChangeKind.UPGRADE, "libcurl4", "8.6.0-150600.4.6.1", "8.6.0-150600.4.9.1", "x86_64"],
      [PackageChangeKind.INSTALL, "libnghttp3-3", "", "1.3.0-150600.1.3", "x86_64"],
      [PackageChangeKind.REMOVE, "libcurl-mini4", "8.6.0-150600.4.6.1", "", "x86_64"],
    ]);
  });

  it("builds specs and finds the message about one package", () => {
    expect(zypperSpec({ name: "curl", version: "8.6.0-150600.4.9.1", architecture: "x86_64" })).toBe("curl.x86_64=8.6.0-150600.4.9.1");
    const messages = ["No provider of 'nosuch' found.", "Package 'curl=9.9' not found."];
    expect(zypperReasonFor("nosuch", messages)).toBe("No provider of 'nosuch' found.");
    expect(zypperReasonFor("curl", messages)).toBe("Package 'curl=9.9' not found.");
    expect(zypperReasonFor("nosu", messages)).toBeUndefined();
  });
});

describe("zypper installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "", architecture = "") => create(PackageRefSchema, { source: "zypper", name, version, architecture });
  const tools = async (zypper: string, files: Record<string, string>) => {
    const t = await fakeTools("zypper-install", { zypper, rpm: `if [ -e "$D/ran" ]; then ${printFile("rpm.after")}; else ${printFile("rpm.before")}; fi` }, { "rpm.before": "", "rpm.after": "", ...files });
    made.push(t);
    return t;
  };
  const installer = createZypperInstaller();

  it("previews with --dry-run and never refreshes for it", async () => {
    const t = await tools(`${printFile("dry.xml")}; exit 0`, { "dry.xml": DRY_RUN });
    const sim = await installer.dryRun!([ref("curl")], opts(t));
    expect(sim.changes).toHaveLength(4);
    expect((await t.calls("zypper"))[0]).toEqual(["--non-interactive", "--xmlout", "--no-refresh", "update", "--dry-run", "--auto-agree-with-licenses", "--no-recommends", "--", "curl"]);
  });

  it("installs and reports each package; exit 102 means the host needs a reboot", async () => {
    const t = await tools(`: > "$D/ran"; exit 102`, {
      "rpm.before": "curl.x86_64 8.6.0-150600.4.6.1\n",
      "rpm.after": "curl.x86_64 8.6.0-150600.4.9.1\n",
    });
    const out = await installer.install([ref("curl", "8.6.0-150600.4.9.1", "x86_64")], opts(t));
    expect(out.error).toBeUndefined();
    expect(out.rebootRequired).toBe(true);
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "8.6.0-150600.4.6.1", toVersion: "8.6.0-150600.4.9.1" });
    expect((await t.calls("zypper"))[0]).toEqual(["--non-interactive", "--xmlout", "install", "--auto-agree-with-licenses", "--no-recommends", "--", "curl.x86_64=8.6.0-150600.4.9.1"]);
  });

  it("fails the package zypper names, with its message", async () => {
    const t = await tools(`echo '<stream><message type="error">No provider of &apos;nosuch&apos; found.</message></stream>'; exit 104`, { "rpm.before": "curl.x86_64 1\nnosuch.x86_64 1\n", "rpm.after": "curl.x86_64 1\nnosuch.x86_64 1\n" });
    const out = await installer.install([ref("nosuch"), ref("curl")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["nosuch", PackageResultState.FAILED, "No provider of 'nosuch' found."],
      ["curl", PackageResultState.FAILED, "zypper update failed (exit status 104): No provider of 'nosuch' found."],
    ]);
  });

  it("never installs a package the host does not have: pinned, as an .rpm or a pattern, or as a rollback", async () => {
    const t = await tools(`: > "$D/ran"; exit 0`, { "rpm.before": "curl.x86_64 8.6.0-150600.4.6.1\n", "rpm.after": "curl.x86_64 8.6.0-150600.4.9.1\n" });
    const out = await installer.install([ref("nmap", "7.94-150600.1.1"), ref("curl", "8.6.0-150600.4.9.1"), ref("evil.rpm", "1")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["nmap", PackageResultState.SKIPPED, NOT_INSTALLED],
      ["curl", PackageResultState.INSTALLED, ""],
      ["evil.rpm", PackageResultState.SKIPPED, NOT_INSTALLED],
    ]);
    expect((await t.calls("zypper"))[0]!.slice(-2)).toEqual(["--", "curl=8.6.0-150600.4.9.1"]);
    const back = await installer.rollback!(ref("nmap", "7.90-1"), opts(t));
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect(await t.calls("zypper")).toHaveLength(1);
  });

  it("rolls back with --oldpackage", async () => {
    const t = await tools(`: > "$D/ran"; exit 0`, { "rpm.before": "curl.x86_64 8.6.0-150600.4.9.1\n", "rpm.after": "curl.x86_64 8.6.0-150600.4.6.1\n" });
    const out = await installer.rollback!(ref("curl", "8.6.0-150600.4.6.1"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, toVersion: "8.6.0-150600.4.6.1" });
    expect((await t.calls("zypper"))[0]).toEqual(["--non-interactive", "--xmlout", "install", "--oldpackage", "--auto-agree-with-licenses", "--", "curl=8.6.0-150600.4.6.1"]);
  });

  it("offers the older versions a repository has, newest first, and the one chosen rolls back as listed", async () => {
    const t = await tools(`case "$*" in *search*) ${printFile("search.xml")}; exit 0;; esac; : > "$D/ran"; exit 0`, {
      "search.xml": readFileSync(path.join(import.meta.dirname, "testdata", "zypper-search-curl.xml"), "utf8"),
      "rpm.before": "curl.x86_64 8.6.0-150600.4.9.1\n",
      "rpm.after": "curl.x86_64 8.6.0-150600.4.6.1\n",
    });
    const out = await installer.versions!(ref("curl"), opts(t, { isRoot: false }));
    expect(out.error).toBeUndefined();
    expect(out.installed).toBe("8.6.0-150600.4.9.1");
    // Not the installed one again, not the newer update, not the i586 build.
    expect(out.versions.map((v) => [v.version, v.description])).toEqual([
      ["8.6.0-150600.4.6.1", "from Update repository with updates from SUSE Linux Enterprise 15"],
      ["8.6.0-150600.2.3", "from Main Repository"],
    ]);
    expect((await t.calls("zypper"))[0]).toEqual(["--non-interactive", "--xmlout", "--no-refresh", "search", "-s", "--match-exact", "-t", "package", "--", "curl"]);
    const back = await installer.rollback!(ref("curl", out.versions[0]!.version), opts(t));
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "8.6.0-150600.4.9.1", toVersion: "8.6.0-150600.4.6.1" });
    const none = await installer.versions!(ref("nmap"), opts(t));
    expect(none).toMatchObject({ installed: "", versions: [] });
  });

  it("reports a held lock as the failure of every package", async () => {
    const t = await tools(`echo '<stream><message type="error">System management is locked by the application with pid 4711 (zypper).</message></stream>'; exit 7`, { "rpm.before": "curl.x86_64 1\n", "rpm.after": "curl.x86_64 1\n" });
    const out = await installer.install([ref("curl")], opts(t));
    expect(out.packages[0]!.reason).toBe("zypper update failed (exit status 7): System management is locked by the application with pid 4711 (zypper).");
  });
});

import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { runProcess, type ProcessOptions } from "../../run-process.ts";
import { createWingetInstaller, parseShowVersions } from "./install.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

// A table the way winget lays it out: each column as wide as its widest cell, one space apart.
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i]! + 1) : c)).join("");
  return [line(header), "-".repeat(widths.reduce((a, b) => a + b + 1, -1)), ...rows.map(line)].join("\n") + "\n";
}
// `winget upgrade --include-unknown` with three pending upgrades (the scanner's tests hold the
// recorded variants: spinner, locales, cut-off cells).
const UPGRADE_TABLE =
  table(["Name", "Id", "Version", "Available", "Source"], [
    ["Microsoft Edge", "Microsoft.Edge", "130.0.2849.80", "131.0.2903.51", "winget"],
    ["7-Zip 23.01 (x64)", "7zip.7zip", "23.01", "24.08", "winget"],
    ["Git", "Git.Git", "Unknown", "2.47.0", "winget"],
  ]) + "3 upgrades available.\n";
// `winget list --id X --exact` showing one installed version.
const listing = (id: string, version: string) => table(["Name", "Id", "Version", "Source"], [[`${id.split(".")[0]} app`, id, version, "winget"]]);

// A POSIX fake exits with 8 bits; on Windows winget exits with an HRESULT. The fakes exit
// with these stand-ins and the test's exec reports the HRESULT winget would have returned.
const HRESULTS: Record<number, number> = {
  120: 0x8a150014, // no installed package found
  143: 0x8a15002b, // no applicable upgrade
  168: 0x8a150068, // pinned
  106: 0x8a150006, // the installer failed
  108: 0x8a150008, // download failed
  202: 0x8a150102, // another installation in progress
  117: 0x8a150017, // no manifest (version gone)
};
const exec = async (argv: readonly string[], o: ProcessOptions) => {
  const r = await runProcess(argv, o);
  return { ...r, exitCode: r.exitCode !== null && HRESULTS[r.exitCode] !== undefined ? HRESULTS[r.exitCode]! >> 0 : r.exitCode };
};

// The fake: `winget list --id X` answers from list-X.before until an upgrade or install of X
// ran (it leaves a marker), then from list-X.after; no file means not installed. An upgrade or
// install of X runs the script do-X when the test wrote one, else succeeds quietly.
const WINGET = `pr() { [ -e "$D/$1" ] || return 1; while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$D/$1"; }
case "$1" in
list) if [ -e "$D/ran-$3" ]; then f="list-$3.after"; else f="list-$3.before"; fi
  pr "$f" && exit 0; echo "No installed package found matching input criteria."; exit 120;;
upgrade) if [ "$2" = "--include-unknown" ]; then pr upgrades.txt; exit 0; fi;;
show) pr "show-$3" && exit 0; echo "No package found matching input criteria."; exit 120;;
esac
: > "$D/ran-$3"
[ -e "$D/do-$3" ] && . "$D/do-$3"
echo "Successfully installed"
exit 0`;

describe("winget installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const fake = async (files: Record<string, string>) => {
    const t = await fakeTools("winget-install", { winget: WINGET }, { "upgrades.txt": UPGRADE_TABLE, ...files });
    made.push(t);
    return t;
  };
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "winget", name, version });
  const changing = (id: string, from: string, to: string) => ({ [`list-${id}.before`]: listing(id, from), [`list-${id}.after`]: listing(id, to) });
  const runs = async (t: FakeTools, verb: string) => (await t.calls("winget")).filter((a) => a[0] === verb && a[1] === "--id");
  const installer = createWingetInstaller({ exec, platform: "linux" });

  it("upgrades one package per call, silently, and reports versions from winget list", async () => {
    const t = await fake({ ...changing("Microsoft.Edge", "130.0.2849.80", "131.0.2903.51"), ...changing("7zip.7zip", "23.01", "24.08") });
    const out = await installer.install([ref("Microsoft.Edge"), ref("7zip.7zip", "24.08")], opts(t));
    expect(out.error).toBeUndefined();
    expect(out.rebootRequired).toBe(false);
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["Microsoft.Edge", PackageResultState.INSTALLED, "130.0.2849.80", "131.0.2903.51"],
      ["7zip.7zip", PackageResultState.INSTALLED, "23.01", "24.08"],
    ]);
    expect(await runs(t, "upgrade")).toEqual([
      ["upgrade", "--id", "Microsoft.Edge", "--exact", "--silent", "--accept-package-agreements", "--accept-source-agreements", "--disable-interactivity", "--include-unknown"],
      ["upgrade", "--id", "7zip.7zip", "--version", "24.08", "--exact", "--silent", "--accept-package-agreements", "--accept-source-agreements", "--disable-interactivity", "--include-unknown"],
    ]);
    expect((await t.calls("winget")).filter((a) => a[0] === "list")[0]).toEqual(["list", "--id", "Microsoft.Edge", "--exact", "--accept-source-agreements", "--disable-interactivity"]);
    // Only the upgrades are recorded, not the version queries around them.
    expect(out.output.map((o) => o.argv[1])).toEqual(["upgrade", "upgrade"]);
    expect(out.output[0]).toMatchObject({ exitCode: 0, stdoutTail: "Successfully installed" });
  });

  it("upgrades everything pending except holds when asked for nothing in particular", async () => {
    const t = await fake({ ...changing("7zip.7zip", "23.01", "24.08"), ...changing("Git.Git", "Unknown", "Unknown") });
    const out = await installer.install([], opts(t, { holds: new Set(["Microsoft.Edge"]) }));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["7zip.7zip", PackageResultState.INSTALLED, ""],
      ["Git.Git", PackageResultState.INSTALLED, "winget reported success; it cannot read the installed version (Unknown)"],
    ]);
    expect((await runs(t, "upgrade")).map((a) => a[2])).toEqual(["7zip.7zip", "Git.Git"]);
    expect(out.output.map((o) => o.argv[2])).toEqual(["--id", "--id"]);
  });

  it("reports an installer failure with winget's words while the other package upgrades", async () => {
    const t = await fake({
      ...changing("Microsoft.Edge", "130.0.2849.80", "131.0.2903.51"),
      ...changing("7zip.7zip", "23.01", "23.01"),
      "do-7zip.7zip": 'echo "Starting package install..."; echo "Installer failed with exit code: 1603"; exit 106',
    });
    const out = await installer.install([ref("7zip.7zip"), ref("Microsoft.Edge")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["7zip.7zip", PackageResultState.FAILED, "winget upgrade failed (0x8A150006: running the installer failed): Installer failed with exit code: 1603"],
      ["Microsoft.Edge", PackageResultState.INSTALLED, ""],
    ]);
    expect(out.error).toBe("1 of 2 packages failed");
  });

  it("fails a package while another installation holds the installer lock, or the download fails", async () => {
    const t = await fake({
      ...changing("Microsoft.Edge", "130.0.2849.80", "130.0.2849.80"),
      ...changing("7zip.7zip", "23.01", "23.01"),
      "do-Microsoft.Edge": 'echo "Another installation is already in progress. Try again later."; exit 202',
      "do-7zip.7zip": 'echo "Downloading https://www.7-zip.org/a/7z2408-x64.exe"; echo "An unexpected error occurred while executing the command:"; echo "0x80072ee7 : The server name or address could not be resolved"; exit 108',
    });
    const out = await installer.install([ref("Microsoft.Edge"), ref("7zip.7zip")], opts(t));
    expect(out.packages.map((p) => p.reason)).toEqual([
      "winget upgrade failed (0x8A150102: another installation is in progress; try again later): Another installation is already in progress. Try again later.",
      "winget upgrade failed (0x8A150008: downloading the installer failed (network)): 0x80072ee7 : The server name or address could not be resolved",
    ]);
    expect(out.packages.every((p) => p.state === PackageResultState.FAILED && p.fromVersion !== "")).toBe(true);
  });

  it("skips what is current, not installed or pinned, in winget's terms", async () => {
    const t = await fake({
      "list-Microsoft.Edge.before": listing("Microsoft.Edge", "131.0.2903.51"),
      "list-Microsoft.Edge.after": listing("Microsoft.Edge", "131.0.2903.51"),
      "do-Microsoft.Edge": 'echo "No available upgrade found."; exit 143',
      "do-Not.Installed": 'echo "No installed package found matching input criteria."; exit 120',
      ...changing("Docker.DockerDesktop", "4.34.0", "4.34.0"),
      "do-Docker.DockerDesktop": 'echo "A newer version was found, but the package has a pin that prevents from upgrading it."; exit 168',
    });
    const out = await installer.install([ref("Microsoft.Edge"), ref("Not.Installed"), ref("Docker.DockerDesktop")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.reason])).toEqual([
      ["Microsoft.Edge", PackageResultState.SKIPPED, "131.0.2903.51", "already up to date"],
      ["Not.Installed", PackageResultState.SKIPPED, "", "not installed; only upgrades were requested"],
      ["Docker.DockerDesktop", PackageResultState.SKIPPED, "4.34.0", "pinned in winget (winget pin remove --id Docker.DockerDesktop to allow it)"],
    ]);
    expect(out.error).toBeUndefined();
  });

  it("notices a needed restart, and does not believe a success that changed nothing", async () => {
    const t = await fake({
      ...changing("Microsoft.Edge", "130.0.2849.80", "131.0.2903.51"),
      "do-Microsoft.Edge": 'echo "Restart your PC to finish installation."',
      ...changing("Vendor.Driver", "1.0", "1.0"),
      "do-Vendor.Driver": 'echo "Restart your PC to finish installation."',
      ...changing("7zip.7zip", "23.01", "23.01"),
    });
    const out = await installer.install([ref("Microsoft.Edge"), ref("Vendor.Driver", "2.0"), ref("7zip.7zip")], opts(t));
    expect(out.rebootRequired).toBe(true);
    expect(out.packages.map((p) => [p.name, p.state, p.toVersion, p.reason])).toEqual([
      ["Microsoft.Edge", PackageResultState.INSTALLED, "131.0.2903.51", ""],
      ["Vendor.Driver", PackageResultState.INSTALLED, "2.0", "a restart is needed to finish; winget list still shows 1.0"],
      ["7zip.7zip", PackageResultState.FAILED, "", "winget reported success, but winget list still shows 23.01"],
    ]);
  });

  it("previews one upgrade per requested pending package from the upgrade list", async () => {
    const t = await fake({});
    const sim = await installer.dryRun!([ref("7zip.7zip"), ref("microsoft.edge", "131.0.2903.51"), ref("Not.Pending")], opts(t));
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.kind, c.source, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "winget", "7zip.7zip", "23.01", "24.08"],
      [PackageChangeKind.UPGRADE, "winget", "Microsoft.Edge", "130.0.2849.80", "131.0.2903.51"],
    ]);
    expect(sim.output.map((o) => o.argv.slice(1))).toEqual([["upgrade", "--include-unknown", "--accept-source-agreements", "--disable-interactivity"]]);
    const all = await installer.dryRun!([], opts(t, { holds: new Set(["Git.Git"]) }));
    expect(all.changes.map((c) => c.name)).toEqual(["Microsoft.Edge", "7zip.7zip"]);
    // Nothing was installed by previewing.
    expect(await runs(t, "upgrade")).toEqual([]);

    const broken = await fakeTools("winget-dry-fails", { winget: 'echo "No sources are configured."; exit 1' });
    made.push(broken);
    expect((await installer.dryRun!([ref("7zip.7zip")], opts(broken))).error).toBe("winget upgrade failed (exit status 1): No sources are configured.");
  });

  it("rolls back with install --version --force, and says when the version is gone", async () => {
    const t = await fake({ ...changing("7zip.7zip", "24.08", "23.01") });
    const out = await installer.rollback!(ref("7zip.7zip", "23.01"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "24.08", toVersion: "23.01" });
    expect(await runs(t, "install")).toEqual([
      ["install", "--id", "7zip.7zip", "--version", "23.01", "--force", "--exact", "--silent", "--accept-package-agreements", "--accept-source-agreements", "--disable-interactivity"],
    ]);

    const gone = await fake({ ...changing("7zip.7zip", "24.08", "24.08"), "do-7zip.7zip": 'echo "No version found matching: 9.20"; exit 117' });
    const failed = await installer.rollback!(ref("7zip.7zip", "9.20"), opts(gone));
    expect(failed.packages[0]).toMatchObject({
      state: PackageResultState.FAILED,
      fromVersion: "24.08",
      toVersion: "9.20",
      reason: "winget install failed (0x8A150017: no manifest matches (the version may no longer be in the source)): No version found matching: 9.20",
    });
    expect(failed.error).toBe(failed.packages[0]!.reason);
  });

  it("offers the versions the source still has below the installed one, and rolls back to the one chosen as listed", async () => {
    const t = await fake({ ...changing("7zip.7zip", "24.08", "23.01"), "show-7zip.7zip": "Found 7-Zip [7zip.7zip]\nVersion\n-------\n24.09\n24.08\n23.01\n22.01\n" });
    const out = await installer.versions!(ref("7zip.7zip"), opts(t, { isRoot: false }));
    expect(out.error).toBeUndefined();
    expect(out.installed).toBe("24.08");
    expect(out.versions.map((v) => v.version)).toEqual(["23.01", "22.01"]);
    expect((await t.calls("winget")).find((a) => a[0] === "show")).toEqual(["show", "--id", "7zip.7zip", "--exact", "--versions", "--accept-source-agreements", "--disable-interactivity"]);
    const back = await installer.rollback!(ref("7zip.7zip", out.versions[0]!.version), opts(t));
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "24.08", toVersion: "23.01" });
    expect(await installer.versions!(ref("Evil.Miner"), opts(t))).toMatchObject({ installed: "", versions: [] });
    expect(parseShowVersions("\r   - \r   \\ \rFound Git [Git.Git]\r\nVersion\r\n-------\r\n2.47.1\r\n")).toEqual(["2.47.1"]);
  });

  it("never rolls back, that is installs, a package the host does not have", async () => {
    const t = await fake({ ...changing("7zip.7zip", "24.08", "24.08") });
    const out = await installer.rollback!(ref("Evil.Miner", "1.0"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect(await runs(t, "install")).toEqual([]);
  });

  it("stops at its time limit, leaving the rest unattempted", async () => {
    const t = await fake({ ...changing("Microsoft.Edge", "1", "1"), "do-Microsoft.Edge": "exec sleep 30" });
    const started = Date.now();
    const out = await installer.install([ref("Microsoft.Edge"), ref("7zip.7zip")], { ...opts(t), timeoutMs: 1500, env: t.env(true) });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out.packages.map((p) => [p.name, p.state])).toEqual([
      ["Microsoft.Edge", PackageResultState.FAILED],
      ["7zip.7zip", PackageResultState.SKIPPED],
    ]);
    expect(out.packages[0]!.reason).toMatch(/^winget upgrade timed out after \ds$/);
    expect(out.packages[1]!.reason).toBe("not attempted: out of time");
    expect(out.output[0]!.timedOut).toBe(true);
  });

  it("is absent without winget", async () => {
    const t = await fakeTools("winget-none", {});
    made.push(t);
    expect(await installer.present(t.env())).toBe(false);
    const out = await installer.install([ref("7zip.7zip")], opts(t));
    expect(out).toMatchObject({ error: "winget is not installed on this host", output: [] });
    expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
  });
});

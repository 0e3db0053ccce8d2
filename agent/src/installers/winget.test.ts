import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import { createWingetInstaller } from "./winget.ts";
import type { InstallOptions } from "./types.ts";

const EN = readFileSync(path.join(import.meta.dirname, "..", "scanners", "testdata", "winget-upgrade-en.txt"), "utf8");
const list = (id: string, version: string) => `Name             Id                 Version         Source
-----------------------------------------------------------------
Some Package     ${id.padEnd(19)}${version.padEnd(16)}winget
`;

describe("winget installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set() });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "winget", name, version });
  // `winget list --id X` answers from list-X.before until an install of X ran, then list-X.after.
  const tools = async (upgrade: string, files: Record<string, string>) => {
    const t = await fakeTools(
      "winget-install",
      {
        winget: `case "$1" in
list) if [ -e "$D/ran-$3" ]; then f="$D/list-$3.after"; else f="$D/list-$3.before"; fi; [ -e "$f" ] && while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$f"; exit 0;;
upgrade) if [ "$2" = "--include-unknown" ]; then ${printFile("en.txt")}; exit 0; fi;;
esac
${upgrade}`,
      },
      { "en.txt": EN, ...files },
    );
    made.push(t);
    return t;
  };
  const installer = createWingetInstaller();

  it("upgrades one package per call, silently, and reports versions from winget list", async () => {
    const t = await tools(`: > "$D/ran-$3"; echo "Successfully installed"; exit 0`, {
      "list-Microsoft.Edge.before": list("Microsoft.Edge", "130.0.2849.80"),
      "list-Microsoft.Edge.after": list("Microsoft.Edge", "131.0.2903.51"),
      "list-7zip.7zip.before": list("7zip.7zip", "23.01"),
      "list-7zip.7zip.after": list("7zip.7zip", "24.08"),
    });
    const out = await installer.install([ref("Microsoft.Edge"), ref("7zip.7zip", "24.08")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["Microsoft.Edge", PackageResultState.INSTALLED, "130.0.2849.80", "131.0.2903.51"],
      ["7zip.7zip", PackageResultState.INSTALLED, "23.01", "24.08"],
    ]);
    const upgrades = (await t.calls("winget")).filter((a) => a[0] === "upgrade");
    expect(upgrades[1]).toEqual([
      "upgrade", "--id", "7zip.7zip", "--version", "24.08", "--exact", "--silent", "--accept-package-agreements", "--accept-source-agreements", "--disable-interactivity",
    ]);
  });

  it("fails an installer error with winget's words, and notices a needed restart", async () => {
    const t = await tools(`echo "Installer failed with exit code: 1603"; exit 23`, {
      "list-Microsoft.Edge.before": list("Microsoft.Edge", "130.0.2849.80"),
    });
    const out = await installer.install([ref("Microsoft.Edge")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "winget failed (0x17): Installer failed with exit code: 1603" });
    const restart = await tools(`: > "$D/ran-$3"; echo "Successfully installed. Restart your PC to finish installation."; exit 0`, {
      "list-X.Y.before": list("X.Y", "1.0"),
      "list-X.Y.after": list("X.Y", "2.0"),
    });
    expect((await installer.install([ref("X.Y")], opts(restart))).rebootRequired).toBe(true);
  });

  it("previews from the upgrade list and rolls back with install --version --force", async () => {
    const t = await tools(`: > "$D/ran-$3"; exit 0`, { "list-7zip.7zip.before": list("7zip.7zip", "24.08"), "list-7zip.7zip.after": list("7zip.7zip", "23.01") });
    const sim = await installer.dryRun!([ref("7zip.7zip"), ref("Not.Pending")], opts(t));
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "7zip.7zip", "23.01", "24.08"]]);
    const out = await installer.rollback!(ref("7zip.7zip", "23.01"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "24.08", toVersion: "23.01" });
    expect((await t.calls("winget")).find((a) => a[0] === "install")).toEqual([
      "install", "--id", "7zip.7zip", "--version", "23.01", "--force", "--exact", "--silent", "--accept-package-agreements", "--accept-source-agreements", "--disable-interactivity",
    ]);
  });
});

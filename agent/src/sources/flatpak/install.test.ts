import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { createFlatpakInstaller } from "./install.ts";
import type { InstallOptions } from "../types.ts";

const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const LIST = testdata("flatpak-list.txt");
const AFTER = LIST.replace("org.mozilla.firefox\t131.0.3\tstable\tx86_64\tflathub\t1a2b3c4d5e6f", "org.mozilla.firefox\t132.0.2\tstable\tx86_64\tflathub\t3f8a1c9d2e7b");

describe("flatpak installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set() });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "flatpak", name, version });
  const tools = async (update: string) => {
    const t = await fakeTools(
      "flatpak-install",
      { flatpak: `case "$1" in remote-ls) ${printFile("remote.out")}; exit 0;; list) if [ -e "$D/ran" ]; then ${printFile("after.out")}; else ${printFile("list.out")}; fi; exit 0;; esac\n${update}` },
      { "remote.out": testdata("flatpak-remote-ls-updates.txt"), "list.out": LIST, "after.out": AFTER },
    );
    made.push(t);
    return t;
  };
  const installer = createFlatpakInstaller();

  it("previews from the remote's update list", async () => {
    const t = await tools("exit 1");
    const sim = await installer.dryRun!([ref("org.mozilla.firefox"), ref("org.videolan.VLC")], opts(t));
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "org.mozilla.firefox", "131.0.3", "132.0.2"]]);
    expect((await installer.dryRun!([ref("org.example.Missing")], opts(t))).error).toBe("org.example.Missing is not installed");
  });

  it("updates the named refs non-interactively and reports each", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    const out = await installer.install([ref("org.mozilla.firefox"), ref("org.videolan.VLC")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["org.mozilla.firefox", PackageResultState.INSTALLED, "131.0.3", "132.0.2"],
      ["org.videolan.VLC", PackageResultState.SKIPPED, "3.0.21", ""],
    ]);
    expect((await t.calls("flatpak")).find((a) => a[0] === "update")).toEqual(["update", "--system", "--noninteractive", "-y", "--", "org.mozilla.firefox", "org.videolan.VLC"]);
  });

  it("reports flatpak's error against its ref", async () => {
    const t = await tools('echo "error: Failed to install org.mozilla.firefox: Not enough disk space to complete this operation" >&2; exit 1');
    const out = await installer.install([ref("org.mozilla.firefox")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: "error: Failed to install org.mozilla.firefox: Not enough disk space to complete this operation" });
  });

  it("rolls back to a full commit only", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    const commit = "a".repeat(64);
    await installer.rollback!(ref("org.mozilla.firefox", commit), opts(t));
    expect((await t.calls("flatpak")).find((a) => a[0] === "update")).toEqual(["update", "--system", "--noninteractive", "-y", `--commit=${commit}`, "--", "org.mozilla.firefox"]);
    const bad = await installer.rollback!(ref("org.mozilla.firefox", "131.0.3"), opts(t));
    expect(bad.packages[0]!.reason).toMatch(/^a flatpak rollback needs the full commit/);
  });

  it("offers the remote's commits below the installed one, newest first, and rolls back to the one chosen as listed", async () => {
    const log = testdata("flatpak-remote-info-log.txt");
    const commits = [...new Set([...log.matchAll(/Commit: ([0-9a-f]{64})/g)].map((m) => m[1]!))];
    const t = await tools(`case "$1" in remote-info) ${printFile("log.out")}; exit 0;; esac; : > "$D/ran"; exit 0`);
    // The installed firefox is the second commit of the history (flatpak list shows 12 digits).
    await t.write("list.out", LIST.replace("1a2b3c4d5e6f", commits[1]!.slice(0, 12)));
    await t.write("log.out", log);
    const out = await installer.versions!(ref("org.mozilla.firefox"), { ...opts(t), isRoot: false });
    expect(out.error).toBeUndefined();
    expect(out.installed).toBe("131.0.3");
    expect(out.versions.map((v) => [v.version, v.description])).toEqual([
      [commits[2], "2024-10-09 17:40:02 +0000: Update firefox to 131.0.2 (77e8f9a0)"],
      [commits[3], "2024-10-01 12:00:00 +0000: Update firefox to 131.0 (0b1c2d3e)"],
    ]);
    expect((await t.calls("flatpak")).find((a) => a[0] === "remote-info")).toEqual(["remote-info", "--system", "--log", "--", "flathub", "org.mozilla.firefox/x86_64/stable"]);
    await installer.rollback!(ref("org.mozilla.firefox", out.versions[0]!.version), opts(t));
    expect((await t.calls("flatpak")).find((a) => a[0] === "update")).toEqual(["update", "--system", "--noninteractive", "-y", `--commit=${commits[2]}`, "--", "org.mozilla.firefox"]);
    expect(await installer.versions!(ref("org.example.Missing"), opts(t))).toMatchObject({ installed: "", versions: [] });
  });
});

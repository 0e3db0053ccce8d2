import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { createSnapInstaller } from "./install.ts";
import type { InstallOptions } from "../types.ts";

const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const SNAP_LIST = testdata("snap-list.txt");
const REFRESH_LIST = testdata("snap-refresh-list.txt");
const AFTER = SNAP_LIST.replace("firefox    131.0.3-1        5187", "firefox    132.0.2-1        5273");
const LIST_ALL = `${SNAP_LIST}firefox    130.0-2          5091   latest/stable    mozilla✓    disabled
`;

describe("snap installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "snap", name, version });
  const tools = async (action: string) => {
    const t = await fakeTools(
      "snap-install",
      {
        snap: `case "$1 $2" in "refresh --list") ${printFile("refresh.out")}; exit 0;; "list --all") ${printFile("all.out")}; exit 0;; list*) if [ -e "$D/ran" ]; then ${printFile("after.out")}; else ${printFile("list.out")}; fi; exit 0;; esac\n${action}`,
      },
      { "refresh.out": REFRESH_LIST, "list.out": SNAP_LIST, "after.out": AFTER, "all.out": LIST_ALL },
    );
    made.push(t);
    return t;
  };
  const installer = createSnapInstaller();

  it("previews a refresh from the store's list", async () => {
    const t = await tools("exit 1");
    const sim = await installer.dryRun!([ref("firefox"), ref("lxd")], opts(t));
    expect(sim.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([[PackageChangeKind.UPGRADE, "firefox", "131.0.3-1", "132.0.2-1"]]);
    const missing = await installer.dryRun!([ref("vlc")], opts(t));
    expect(missing.error).toBe('snap "vlc" is not installed');
  });

  it("refreshes and reports versions and revisions", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    const out = await installer.install([ref("firefox"), ref("lxd")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["firefox", PackageResultState.INSTALLED, "131.0.3-1", "132.0.2-1", "revision 5187 → 5273"],
      ["lxd", PackageResultState.SKIPPED, "5.21.2-2f4ba6b", "", "already up to date"],
    ]);
    expect((await t.calls("snap")).find((a) => a[0] === "refresh" && a[1] === "--")).toEqual(["refresh", "--", "firefox", "lxd"]);
  });

  it("reports snapd's error against the snap it names", async () => {
    const t = await tools(`echo 'error: cannot refresh "firefox": snap "firefox" has running apps (firefox), pid 4242' >&2; exit 1`);
    const out = await installer.install([ref("firefox")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: 'error: cannot refresh "firefox": snap "firefox" has running apps (firefox), pid 4242' });
  });

  it("reverts to a revision snapd kept, and refuses one it did not", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    await installer.rollback!(ref("firefox", "130.0-2"), opts(t));
    expect((await t.calls("snap")).find((a) => a[0] === "revert")).toEqual(["revert", "firefox", "--revision", "5091"]);
    const gone = await installer.rollback!(ref("firefox", "120.0-1"), opts(t));
    expect(gone.packages[0]!.reason).toBe("snapd keeps no revision of firefox at 120.0-1; kept: 130.0-2 (rev 5091)");
  });

  it("offers the revisions snapd kept, newest first, and reverts to the one chosen as listed", async () => {
    const t = await tools(': > "$D/ran"; exit 0');
    await t.write("all.out", testdata("snap-list-all.txt"));
    const out = await installer.versions!(ref("firefox"), opts(t, { isRoot: false }));
    expect(out).toMatchObject({ installed: "131.0.3-1" });
    expect(out.error).toBeUndefined();
    expect(out.versions.map((v) => [v.version, v.description])).toEqual([
      ["5091", "version 130.0-2 (revision 5091)"],
      ["4793", "version 129.0.2-1 (revision 4793)"],
    ]);
    expect((await installer.versions!(ref("lxd"), opts(t))).versions).toEqual([]);
    expect(await installer.versions!(ref("vlc"), opts(t))).toMatchObject({ installed: "", versions: [] });
    await installer.rollback!(ref("firefox", out.versions[1]!.version), opts(t));
    expect((await t.calls("snap")).find((a) => a[0] === "revert")).toEqual(["revert", "firefox", "--revision", "4793"]);
  });
});

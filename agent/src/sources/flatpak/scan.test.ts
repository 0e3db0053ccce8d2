import { SubsystemRunState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { parseInstalled, parseRemoteUpdates, scanFlatpak } from "./scan.ts";

// Recorded on Fedora 41 (flatpak 1.15): tab-separated --columns output when piped; sizes use
// no-break spaces in some locales.
const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const REMOTE = testdata("flatpak-remote-ls-updates.txt");
const LIST = testdata("flatpak-list.txt");
// flatpak 1.6 (Ubuntu 20.04) pads columns with spaces instead.
const PADDED = `org.mozilla.firefox   132.0.2   stable   flathub   x86_64   3f8a1c9d2e7b   98.4 MB
`;

describe("flatpak parsers", () => {
  it("reads updates, runtimes without a version included", () => {
    expect(parseRemoteUpdates(REMOTE).map((r) => [r.application, r.version, r.branch, r.origin, r.commit, r.size])).toEqual([
      ["org.mozilla.firefox", "132.0.2", "stable", "flathub", "3f8a1c9d2e7b", "98.4 MB"],
      ["org.freedesktop.Platform.GL.default", "24.2.6", "23.08", "flathub", "b2c4d6e8f0a1", "154.2 MB"],
      ["org.gnome.Platform", "", "47", "flathub", "9e8d7c6b5a43", "210.7\u00a0MB"],
    ]);
    expect(parseRemoteUpdates(PADDED)[0]).toMatchObject({ application: "org.mozilla.firefox", version: "132.0.2", origin: "flathub" });
    expect(parseRemoteUpdates("error: Unable to load summary from remote flathub\nnot an app\n")).toEqual([]);
  });

  it("keys installed refs by app and by app/arch/branch", () => {
    const refs = parseInstalled(LIST);
    expect(refs.get("org.gnome.Platform/x86_64/47")).toMatchObject({ version: "", commit: "7766554433aa" });
    expect(refs.get("org.videolan.VLC")?.version).toBe("3.0.21");
  });
});

describe("scanFlatpak with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (flatpak: string) => {
    const t = await fakeTools("flatpak", { flatpak }, { "remote.out": REMOTE, "list.out": LIST });
    made.push(t);
    return t;
  };

  it("is not present without flatpak", async () => {
    const t = await fakeTools("flatpak", {});
    made.push(t);
    expect((await scanFlatpak({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true })).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("lists updates with installed versions; a runtime's commit stands in for its version", async () => {
    const t = await tools(`case "$1" in remote-ls) ${printFile("remote.out")};; list) ${printFile("list.out")};; esac`);
    const scan = await scanFlatpak({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "3 updates, 0 security" });
    expect(scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository, u.sizeBytes])).toEqual([
      ["org.mozilla.firefox", "131.0.3", "132.0.2", "flathub", 98400000n],
      ["org.freedesktop.Platform.GL.default", "24.2.3", "24.2.6", "flathub", 154200000n],
      ["org.gnome.Platform", "7766554433aa", "9e8d7c6b5a43", "flathub", 210700000n],
    ]);
    expect((await t.calls("flatpak"))[0]).toEqual(["remote-ls", "--system", "--updates", "--columns=application,version,branch,origin,arch,commit,download-size"]);
  });

  it("reads cached remote metadata only when not refreshing", async () => {
    const t = await tools(`case "$1" in remote-ls) ${printFile("remote.out")};; list) ${printFile("list.out")};; esac`);
    const scan = await scanFlatpak({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.message).toBe("3 updates, 0 security; remote metadata not refreshed (refresh disabled)");
    expect((await t.calls("flatpak"))[0]).toContain("--cached");
  });

  it("fails when the remote cannot be reached", async () => {
    const t = await tools(`echo "error: Unable to load summary from remote flathub: Could not resolve hostname" >&2; exit 1`);
    const scan = await scanFlatpak({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "flatpak remote-ls --updates failed (exit status 1): error: Unable to load summary from remote flathub: Could not resolve hostname" });
  });
});

import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { parseListPatches, parseListUpdates, patchMatcher, scanZypper, toZypperUpdates, xmlAttributes } from "./scan.ts";

// Recorded from openSUSE Leap 15.6 (zypper 1.14): `zypper --non-interactive --xmlout list-updates` and `list-patches`.
const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const UPDATES = testdata("zypper-list-updates.xml");
const PATCHES = testdata("zypper-list-patches.xml");

const LOCKED = `<?xml version='1.0'?>
<stream>
<message type="error">System management is locked by the application with pid 4711 (zypper).
Close this application before trying again.</message>
</stream>
`;

describe("zypper XML", () => {
  it("decodes attributes and entities", () => {
    expect(xmlAttributes(`name="a&amp;b" edition='1.0' arch="x86_64"`)).toEqual({ name: "a&b", edition: "1.0", arch: "x86_64" });
  });

  it("reads package updates with installed and new editions and the repository alias", () => {
    expect(parseListUpdates(UPDATES)).toEqual([
      { name: "curl", architecture: "x86_64", availableVersion: "8.6.0-150600.4.9.1", currentVersion: "8.6.0-150600.4.6.1", repository: "repo-sle-update" },
      { name: "libcurl4", architecture: "x86_64", availableVersion: "8.6.0-150600.4.9.1", currentVersion: "8.6.0-150600.4.6.1", repository: "repo-sle-update" },
      { name: "kernel-default", architecture: "x86_64", availableVersion: "6.4.0-150600.23.25.1", currentVersion: "6.4.0-150600.23.22.1", repository: "repo-sle-update" },
      { name: "timezone", architecture: "x86_64", availableVersion: "2024b-150000.75.31.1", currentVersion: "", repository: "repo-sle-update" },
    ]);
  });

  it("reads needed patches only", () => {
    expect(parseListPatches(PATCHES).map((p) => [p.category, p.severity, p.summary, p.rebootRequired])).toEqual([
      ["security", "moderate", "Security update for curl", false],
      ["security", "important", "Security update for the Linux Kernel", true],
      ["recommended", "moderate", "Recommended update for timezone", false],
    ]);
  });

  it.each([
    ["Security update for curl", ["curl", "libcurl4", "libcurl-mini4", "curl-devel"], ["libcurlpp0", "curlftpfs", "ncurses"]],
    ["Security update for the Linux Kernel", ["kernel-default", "kernel-default-devel"], ["kernelshark"]],
    ["Recommended update for python311, python311-base", ["python311", "python311-base", "python311-curses"], ["python3"]],
    ["Optional update", [], ["anything"]],
  ])("%s covers its packages", (summary, yes, no) => {
    const matches = patchMatcher(summary) ?? (() => false);
    for (const name of yes) expect(matches(name), name).toBe(true);
    for (const name of no) expect(matches(name), name).toBe(false);
  });

  it("rates packages by the patches that cover them", () => {
    const updates = toZypperUpdates(parseListUpdates(UPDATES), parseListPatches(PATCHES));
    expect(updates.map((u) => [u.name, u.security, u.severity, u.rebootRequired])).toEqual([
      ["curl", true, UpdateSeverity.MODERATE, false],
      ["libcurl4", true, UpdateSeverity.MODERATE, false],
      ["kernel-default", true, UpdateSeverity.IMPORTANT, true],
      ["timezone", false, UpdateSeverity.UNKNOWN, false],
    ]);
  });
});

describe("scanZypper with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (scripts: Record<string, string>, files: Record<string, string> = {}) => {
    const t = await fakeTools("zypper", scripts, files);
    made.push(t);
    return t;
  };
  const zypper = (listExit: number) =>
    `case "$*" in *list-updates*) ${printFile("updates.xml")}; exit ${listExit};; *list-patches*) ${printFile("patches.xml")}; exit 101;; *refresh*) exit 0;; esac; exit 1`;

  it("is not present without zypper", async () => {
    const t = await tools({});
    expect((await scanZypper({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true })).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("scans, treating zypper's informational exit codes as success", async () => {
    const t = await tools({ zypper: zypper(100), rpm: 'echo "timezone.x86_64 2024a-150000.75.28.1"' }, { "updates.xml": UPDATES, "patches.xml": PATCHES });
    const scan = await scanZypper({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "4 updates, 3 security; 3 patches needed, 2 security" });
    expect(scan.updates.find((u) => u.name === "timezone")?.currentVersion).toBe("2024a-150000.75.28.1");
    expect((await t.calls("zypper")).map((a) => a.at(-1))).toEqual(["refresh", "list-updates", "list-patches"]);
  });

  it("never touches the network when not refreshing", async () => {
    const t = await tools({ zypper: zypper(0) }, { "updates.xml": UPDATES, "patches.xml": PATCHES });
    await scanZypper({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect((await t.calls("zypper"))[0]).toEqual(["--non-interactive", "--xmlout", "--no-refresh", "list-updates"]);
  });

  it("fails with zypper's own words when the system is locked", async () => {
    const t = await tools({ zypper: `${printFile("locked.xml")}; exit 7` }, { "locked.xml": LOCKED });
    const scan = await scanZypper({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/^zypper list-updates failed \(exit status 7\): System management is locked by the application with pid 4711 \(zypper\)/);
  });

  it("notes a failed refresh (no network) and still scans", async () => {
    const t = await tools(
      {
        zypper: `case "$*" in *refresh*) echo '<stream><message type="error">Download (curl) error for &apos;https://download.opensuse.org/update/leap/15.6/sle/repodata/repomd.xml&apos;: Could not resolve host: download.opensuse.org</message></stream>'; exit 4;; *list-updates*) ${printFile("updates.xml")}; exit 0;; esac; exit 0`,
      },
      { "updates.xml": UPDATES },
    );
    const scan = await scanZypper({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.message).toContain("repositories not refreshed: zypper refresh failed (exit status 4): Download (curl) error for 'https://download.opensuse.org");
  });

  it("fails on output that is not zypper's XML", async () => {
    const t = await tools({ zypper: `echo "Segmentation fault"; exit 0` });
    const scan = await scanZypper({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "zypper list-updates printed no update status (unexpected output); repositories not refreshed (refresh disabled)" });
  });
});

import { SubsystemRunState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import type { ProcessResult } from "../run-process.ts";
import { parseUpgradeTable, scanWinget, sliceColumns, wingetFailure } from "./winget.ts";

// Recorded `winget upgrade --include-unknown` (winget 1.9, Windows 11): the spinner's carriage
// returns before the table, a cut-off name, an unknown installed version, a cut-off ID, and a
// second table of packages that need explicit targeting. Then a German locale with a CJK name.
const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const EN = testdata("winget-upgrade-en.txt");
const DE = testdata("winget-upgrade-de.txt");

const result = (exitCode: number, stdout = ""): ProcessResult => ({
  exitCode, signal: null, stdout, stderr: "", timedOut: false, aborted: false, truncated: false, spawnError: undefined, durationMs: 5,
});

describe("winget tables", () => {
  it("reads columns by the header's positions, ignoring the spinner and the second table", () => {
    const { rows, truncated } = parseUpgradeTable(EN);
    expect(rows.map((r) => [r.name, r.id, r.version, r.available, r.source])).toEqual([
      ["Microsoft Edge", "Microsoft.Edge", "130.0.2849.80", "131.0.2903.51", "winget"],
      ["7-Zip 23.01 (x64)", "7zip.7zip", "23.01", "24.08", "winget"],
      ["Microsoft Visual C++ 2015-2022 Re…", "Microsoft.VCRedist.2015+.x64", "14.38.33135.0", "14.40.33810.0", "winget"],
      ["Microsoft Teams Classic", "Microsoft.Teams.Classic", "< 1.7.00.1234", "1.7.00.33761", "winget"],
    ]);
    expect(truncated).toBe(1);
  });

  it("reads a translated header and wide characters by display width", () => {
    expect(parseUpgradeTable(DE).rows.map((r) => [r.name, r.id, r.version, r.available])).toEqual([
      ["Mozilla Firefox (x64 de)", "Mozilla.Firefox", "131.0.3", "132.0.2"],
      ["腾讯会议", "Tencent.TencentMeeting", "3.28.1", "3.29.0"],
    ]);
    expect(sliceColumns("腾讯ab", 2, 5)).toBe("讯a");
  });

  it("finds no table in messages", () => {
    expect(parseUpgradeTable("No installed package found matching input criteria.\n").rows).toEqual([]);
  });

  it("names winget's HRESULTs, signed or unsigned", () => {
    expect(wingetFailure("winget upgrade", result(-1978335215, "Failed when opening source(s); try the 'source reset' command if the problem persists.\n"))).toBe(
      "winget upgrade failed (0x8A150011: the source could not be opened (check the winget sources and the network)): Failed when opening source(s); try the 'source reset' command if the problem persists.",
    );
    expect(wingetFailure("winget", result(2316632107))).toBe("winget failed (0x8A15002B: no applicable upgrade found)");
  });
});

describe("scanWinget with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (winget: string) => {
    const t = await fakeTools("winget", { winget }, { "en.txt": EN });
    made.push(t);
    return t;
  };

  it("is not present without winget", async () => {
    const t = await fakeTools("winget", {});
    made.push(t);
    expect((await scanWinget({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true })).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("lists upgrades by package ID, noting cut-off IDs", async () => {
    const t = await tools(`${printFile("en.txt")}; exit 0`);
    const scan = await scanWinget({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "4 update(s), 0 security; 1 package(s) with cut-off IDs left out" });
    expect(scan.updates[0]).toMatchObject({ source: "winget", name: "Microsoft.Edge", currentVersion: "130.0.2849.80", availableVersion: "131.0.2903.51", repository: "winget" });
    expect((await t.calls("winget"))[0]).toEqual(["upgrade", "--include-unknown", "--accept-source-agreements", "--disable-interactivity"]);
  });

  it("fails with winget's last words on an error", async () => {
    const t = await tools('echo "Failed in attempting to update the source: winget"; exit 17');
    const scan = await scanWinget({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "winget upgrade failed (0x11): Failed in attempting to update the source: winget" });
  });
});

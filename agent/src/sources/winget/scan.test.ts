import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { runProcess, type ProcessOptions, type ProcessResult } from "../../run-process.ts";
import {
  charWidth,
  cleanLines,
  displayWidth,
  findWinget,
  parseListVersion,
  parseUpgradeTable,
  parseWingetTables,
  scanWinget,
  sliceColumns,
  toWingetUpdate,
  wingetFailure,
} from "./scan.ts";

// Recorded `winget upgrade --include-unknown` (winget 1.6, Windows 11, captured from a
// 120-column console): the spinner redrawn with carriage returns before the table, a name and
// an ID cut off with "…", an installed version winget only bounds ("< …") and one it cannot
// read, then the table of pinned packages that need explicit targeting.
const EN_CONSOLE =
  "   - \r   \\ \r   | \r   / \r" + " ".repeat(118) + "\r" +
  `Name                                      Id                                         Version       Available     Source
-----------------------------------------------------------------------------------------------------------------------
Microsoft Edge                            Microsoft.Edge                             130.0.2849.80 131.0.2903.51 winget
7-Zip 23.01 (x64)                         7zip.7zip                                  23.01         24.08         winget
Microsoft Visual C++ 2015-2022 Redistrib… Microsoft.VCRedist.2015+.x64               14.38.33135.0 14.40.33810.0 winget
Microsoft Teams classic                   Microsoft.Teams.Classic                    < 1.7.00.1234 1.7.00.33761  winget
Git                                       Git.Git                                    Unknown       2.47.0        winget
Some Vendor Enterprise Management Consol… SomeVendor.EnterpriseManagementConsoleAge… 10.2.1        10.3.0        winget
6 upgrades available.

The following packages have an upgrade available, but require explicit targeting for upgrade:
Name           Id                   Version Available Source
------------------------------------------------------------
Docker Desktop Docker.DockerDesktop 4.34.0  4.35.1    winget
`;

// winget 1.11 with its output redirected (as the agent runs it): no spinner, nothing cut
// off, CRLF line ends, a Microsoft Store package.
const EN_PIPE = [
  "Name                                                               Id                           Version       Available     Source",
  "-----------------------------------------------------------------------------------------------------------------------------------",
  "Microsoft Edge                                                     Microsoft.Edge               130.0.2849.80 131.0.2903.51 winget",
  "Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.38.33135 Microsoft.VCRedist.2015+.x64 14.38.33135.0 14.40.33810.0 winget",
  "Git                                                                Git.Git                      Unknown       2.47.0        winget",
  "Microsoft To Do                                                    9NBLGGH5R558                 2.114.7122.0  2.117.7242.0  msstore",
  "4 upgrades available.",
  "",
].join("\r\n");

// German Windows: translated titles, a Chinese name two columns per character.
const DE = `Name                     ID                     Version Verfügbar Quelle
------------------------------------------------------------------------
Mozilla Firefox (x64 de) Mozilla.Firefox        131.0.3 132.0.2   winget
腾讯会议                 Tencent.TencentMeeting 3.28.1  3.29.0    winget
Notepad++ (64-bit x64)   Notepad++.Notepad++    8.6.9   8.7.1     winget
3 Aktualisierungen verfügbar.
`;

// Japanese Windows: the titles themselves are wide; on a 70-column console a wide name is cut
// with "…" and padded by one column.
const JA = `名前           ID                バージョン 利用可能 ソース
-----------------------------------------------------------
秀丸エディタ   Hidemaru.Hidemaru 9.22       9.35     winget
Zoom Workplace Zoom.Zoom         6.1.11     6.2.5    winget
2 アップグレードを利用できます。
`;
const JA_CONSOLE = `名前                 ID                    バージョン 利用可能 ソース
---------------------------------------------------------------------
サクラエディタ 非常… SakuraEditor.SakuraE… 2.4.1      2.4.2    winget
Zoom Workplace       Zoom.Zoom             6.1.11     6.2.5    winget
`;

// A translation whose column title has a space in it ("Paket ID").
const SPACED_TITLE = `Name            Paket ID        Version Verfügbar Quelle
--------------------------------------------------------
Mozilla Firefox Mozilla.Firefox 131.0.3 132.0.2   winget
7-Zip           7zip.7zip       23.01   24.08     winget
`;

// `winget list --id Mozilla.Firefox --exact`: with an upgrade pending, without one (the empty
// Available column is left out), and a package from no source.
const LIST_PENDING = `Name                        Id              Version Available Source
--------------------------------------------------------------------
Mozilla Firefox (x64 en-US) Mozilla.Firefox 131.0.3 132.0.2   winget
`;
const LIST_CURRENT = `Name                        Id              Version Source
-----------------------------------------------------------
Mozilla Firefox (x64 en-US) Mozilla.Firefox 132.0.2 winget
`;
const LIST_NO_SOURCE = `Name         Id           Version
---------------------------------
Contoso Tool Contoso.Tool 1.0
`;

const result = (exitCode: number | null, stdout = "", extra: Partial<ProcessResult> = {}): ProcessResult => ({
  exitCode, signal: null, stdout, stderr: "", timedOut: false, aborted: false, truncated: false, spawnError: undefined, durationMs: 5, ...extra,
});

describe("winget tables", () => {
  const summary = (text: string) => parseUpgradeTable(text).rows.map((r) => [r.id, r.version, r.available, r.source]);

  it("reads columns by the header's positions, past the spinner, up to the pinned table", () => {
    const parsed = parseUpgradeTable(EN_CONSOLE);
    expect(parsed.rows.map((r) => [r.name, r.id, r.version, r.available, r.source])).toEqual([
      ["Microsoft Edge", "Microsoft.Edge", "130.0.2849.80", "131.0.2903.51", "winget"],
      ["7-Zip 23.01 (x64)", "7zip.7zip", "23.01", "24.08", "winget"],
      ["Microsoft Visual C++ 2015-2022 Redistrib…", "Microsoft.VCRedist.2015+.x64", "14.38.33135.0", "14.40.33810.0", "winget"],
      ["Microsoft Teams classic", "Microsoft.Teams.Classic", "< 1.7.00.1234", "1.7.00.33761", "winget"],
      ["Git", "Git.Git", "Unknown", "2.47.0", "winget"],
    ]);
    expect(parsed).toMatchObject({ truncated: 1, explicit: 1, ignored: 0 });
  });

  it("reads redirected output with CRLF line ends and Store packages", () => {
    expect(summary(EN_PIPE)).toEqual([
      ["Microsoft.Edge", "130.0.2849.80", "131.0.2903.51", "winget"],
      ["Microsoft.VCRedist.2015+.x64", "14.38.33135.0", "14.40.33810.0", "winget"],
      ["Git.Git", "Unknown", "2.47.0", "winget"],
      ["9NBLGGH5R558", "2.114.7122.0", "2.117.7242.0", "msstore"],
    ]);
    expect(toWingetUpdate(parseUpgradeTable(EN_PIPE).rows[3]!)).toMatchObject({
      source: "winget",
      name: "9NBLGGH5R558",
      currentVersion: "2.114.7122.0",
      availableVersion: "2.117.7242.0",
      repository: "msstore",
      severity: UpdateSeverity.UNKNOWN,
      security: false,
      sizeBytes: 0n,
    });
  });

  it("reads translated titles and wide characters by display width", () => {
    expect(parseUpgradeTable(DE).rows.map((r) => [r.name, r.id, r.version, r.available])).toEqual([
      ["Mozilla Firefox (x64 de)", "Mozilla.Firefox", "131.0.3", "132.0.2"],
      ["腾讯会议", "Tencent.TencentMeeting", "3.28.1", "3.29.0"],
      ["Notepad++ (64-bit x64)", "Notepad++.Notepad++", "8.6.9", "8.7.1"],
    ]);
    expect(parseWingetTables(DE)[0]!.header).toEqual(["Name", "ID", "Version", "Verfügbar", "Quelle"]);
    expect(summary(JA)).toEqual([["Hidemaru.Hidemaru", "9.22", "9.35", "winget"], ["Zoom.Zoom", "6.1.11", "6.2.5", "winget"]]);
    expect(parseWingetTables(JA)[0]!.header).toEqual(["名前", "ID", "バージョン", "利用可能", "ソース"]);
    const cut = parseUpgradeTable(JA_CONSOLE);
    expect(cut.rows.map((r) => [r.name, r.id])).toEqual([["Zoom Workplace", "Zoom.Zoom"]]);
    expect(cut.truncated).toBe(1);
  });

  it("does not split a column at a space inside its title", () => {
    expect(parseWingetTables(SPACED_TITLE)[0]!.header).toEqual(["Name", "Paket ID", "Version", "Verfügbar", "Quelle"]);
    expect(summary(SPACED_TITLE)).toEqual([["Mozilla.Firefox", "131.0.3", "132.0.2", "winget"], ["7zip.7zip", "23.01", "24.08", "winget"]]);
  });

  it("finds no rows in messages and garbage", () => {
    expect(parseUpgradeTable("No installed package found matching input criteria.\n")).toEqual({ rows: [], truncated: 0, explicit: 0, ignored: 0 });
    expect(parseUpgradeTable("")).toMatchObject({ rows: [] });
    const junk = parseUpgradeTable("Name Id Version Available Source\n-------------------------------\nthis is not a row\n");
    expect(junk.rows).toEqual([]);
    expect(junk.ignored).toBe(1);
  });

  it("reads the installed version from winget list", () => {
    expect(parseListVersion(LIST_PENDING, "Mozilla.Firefox")).toBe("131.0.3");
    expect(parseListVersion(LIST_CURRENT, "mozilla.firefox")).toBe("132.0.2");
    expect(parseListVersion(LIST_NO_SOURCE, "Contoso.Tool")).toBe("1.0");
    expect(parseListVersion("No installed package found matching input criteria.\n", "Mozilla.Firefox")).toBeUndefined();
  });

  it("measures display columns and strips terminal codes", () => {
    expect([charWidth("a".codePointAt(0)!), charWidth("腾".codePointAt(0)!), charWidth("ｱ".codePointAt(0)!), charWidth("Ａ".codePointAt(0)!)]).toEqual([1, 2, 1, 2]);
    expect(displayWidth("腾讯会议")).toBe(8);
    // "é" as e + combining accent is one column.
    expect(displayWidth("Caf\u0065\u0301")).toBe(4);
    expect(sliceColumns("腾讯ab", 2, 5)).toBe("讯a");
    expect(cleanLines("\u001b[32mName\u001b[0m  Id\r\n  - \r  \\ \rdone")).toEqual(["Name  Id", "done"]);
  });
});

describe("winget failures", () => {
  it("names winget's HRESULTs, signed or unsigned, with its last words", () => {
    expect(wingetFailure("winget upgrade", result(-1978335162, "Source agreements were not agreed to.\n"))).toBe(
      "winget upgrade failed (0x8A150046: source agreements were not accepted): Source agreements were not agreed to.",
    );
    expect(wingetFailure("winget upgrade", result(2316632085, "   - \r   \\ \rNo sources are configured.\r\n"))).toBe(
      "winget upgrade failed (0x8A150015: no sources are configured (winget source reset --force)): No sources are configured.",
    );
    expect(wingetFailure("winget", result(0x8a15ffff >> 0))).toBe("winget failed (0x8A15FFFF)");
    expect(wingetFailure("winget", result(1, "", { stderr: "boom" }))).toBe("winget failed (exit status 1): boom");
    expect(wingetFailure("winget", result(null, "", { timedOut: true, durationMs: 3000 }))).toBe("winget timed out after 3s");
  });
});

describe("findWinget", () => {
  it("falls back to the App Installer package's winget.exe on Windows, newest first", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "redflag-windowsapps-"));
    try {
      const arch = { x64: "x64", arm64: "arm64", ia32: "x86" }[process.arch as string] ?? "x64";
      for (const version of ["1.9.25200.0", "1.24.25200.0", "1.10.1.0"]) {
        const pkg = path.join(dir, `Microsoft.DesktopAppInstaller_${version}_${arch}__8wekyb3d8bbwe`);
        await mkdir(pkg);
        await writeFile(path.join(pkg, "winget.exe"), "");
      }
      await mkdir(path.join(dir, "Microsoft.DesktopAppInstaller_9.9.9.9_neutral_~_8wekyb3d8bbwe"));
      expect(await findWinget({ PATH: "" }, { platform: "win32", windowsApps: dir })).toBe(
        path.join(dir, `Microsoft.DesktopAppInstaller_1.24.25200.0_${arch}__8wekyb3d8bbwe`, "winget.exe"),
      );
      expect(await findWinget({ PATH: "" }, { platform: "linux", windowsApps: dir })).toBeUndefined();
      expect(await findWinget({ PATH: "" }, { platform: "win32", windowsApps: path.join(dir, "missing") })).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("scanWinget with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (winget: string) => {
    const t = await fakeTools("winget", { winget }, { "en.txt": EN_CONSOLE, "de.txt": DE, "pipe.txt": EN_PIPE });
    made.push(t);
    return t;
  };
  // A POSIX fake exits with 8 bits; Windows reports winget's HRESULT. Fakes exit with the low
  // byte plus 100 and this maps it back to the HRESULT winget would have returned.
  const HRESULTS: Record<number, number> = { 143: 0x8a15002b, 146: 0x8a150046, 121: 0x8a150015, 175: 0x8a15004b };
  const exec = async (argv: readonly string[], o: ProcessOptions) => {
    const r = await runProcess(argv, o);
    return { ...r, exitCode: r.exitCode !== null && HRESULTS[r.exitCode] !== undefined ? HRESULTS[r.exitCode]! >> 0 : r.exitCode };
  };
  const scan = (t: FakeTools, timeoutMs = 5000, extraPath = false) => scanWinget({ refresh: true, timeoutMs, env: t.env(extraPath), isRoot: true }, { exec, platform: "linux" });

  it("is not present without winget", async () => {
    const t = await fakeTools("winget-none", {});
    made.push(t);
    expect((await scan(t)).run).toMatchObject({ subsystem: "winget", state: SubsystemRunState.NOT_PRESENT, message: "winget is not installed on this host" });
  });

  it("lists upgrades by package ID, noting IDs it could not read and pinned packages", async () => {
    const t = await tools(printFile("en.txt"));
    const res = await scan(t);
    expect(res.run).toMatchObject({
      state: SubsystemRunState.RAN,
      updateCount: 5,
      message: "5 updates, 0 security; 1 package left out: winget cut off its ID; 1 pinned package left out (winget pin)",
    });
    expect(res.updates.map((u) => u.name)).toEqual(["Microsoft.Edge", "7zip.7zip", "Microsoft.VCRedist.2015+.x64", "Microsoft.Teams.Classic", "Git.Git"]);
    expect(await t.calls("winget")).toEqual([["upgrade", "--include-unknown", "--accept-source-agreements", "--disable-interactivity"]]);
  });

  it("reads a German table the same way", async () => {
    const t = await tools(printFile("de.txt"));
    const res = await scan(t);
    expect(res.run).toMatchObject({ state: SubsystemRunState.RAN, message: "3 updates, 0 security" });
    expect(res.updates[1]).toMatchObject({ name: "Tencent.TencentMeeting", currentVersion: "3.28.1", availableVersion: "3.29.0", repository: "winget" });
  });

  it("reports nothing to upgrade as a clean run", async () => {
    const t = await tools('echo "No applicable upgrade found."; exit 143');
    expect((await scan(t)).run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0, message: "no updates" });
  });

  it("keeps the other sources' upgrades when one source cannot be reached", async () => {
    const t = await tools(`echo "Failed when searching source: msstore"; echo "An unexpected error occurred while executing the command:"; echo "0x80072ee7 : The server name or address could not be resolved"; ${printFile("pipe.txt")}; exit 175`);
    const res = await scan(t);
    expect(res.run.state).toBe(SubsystemRunState.RAN);
    expect(res.run.message).toBe("4 updates, 0 security; some sources could not be opened (0x8A15004B); their upgrades are missing");
  });

  it("fails when no source can be reached, with winget's words", async () => {
    const t = await tools('echo "Failed when searching source: winget"; echo "An unexpected error occurred while executing the command:"; echo "0x80072ee7 : The server name or address could not be resolved"; exit 175');
    expect((await scan(t)).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "winget upgrade failed (0x8A15004B: one or more sources could not be opened (network or source problem)): 0x80072ee7 : The server name or address could not be resolved",
    });
  });

  it("fails on unaccepted agreements and missing sources", async () => {
    const agreements = await tools('echo "The \'msstore\' source requires that you view the following agreements before using."; echo "Source agreements were not agreed to."; exit 146');
    expect((await scan(agreements)).run.message).toBe("winget upgrade failed (0x8A150046: source agreements were not accepted): Source agreements were not agreed to.");
    const noSources = await tools('echo "No sources are configured."; exit 121');
    expect((await scan(noSources)).run).toMatchObject({ state: SubsystemRunState.FAILED, message: "winget upgrade failed (0x8A150015: no sources are configured (winget source reset --force)): No sources are configured." });
  });

  it("fails on any other error, and notes output it cannot read", async () => {
    const broken = await tools('echo "Segmentation fault" >&2; exit 1');
    expect((await scan(broken)).run).toMatchObject({ state: SubsystemRunState.FAILED, message: "winget upgrade failed (exit status 1): Segmentation fault" });
    const garbage = await tools("echo 'Windows Package Manager v1.9.2411'; echo 'Copyright (c) Microsoft Corporation.'");
    expect((await scan(garbage)).run).toMatchObject({
      state: SubsystemRunState.RAN,
      updateCount: 0,
      message: "no updates; no upgrade table in winget's output: Copyright (c) Microsoft Corporation.",
    });
  });

  it("stops a hung winget at the time limit", async () => {
    const t = await tools("exec sleep 30");
    const started = Date.now();
    const res = await scan(t, 500, true);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(res.run.state).toBe(SubsystemRunState.FAILED);
    expect(res.run.message).toMatch(/^winget upgrade timed out after \ds$/);
  });
});

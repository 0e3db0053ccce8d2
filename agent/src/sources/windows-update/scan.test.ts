import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { jsonList, parseSearch, powershellArgv, scanWindowsUpdate, SEARCH_SCRIPT, toWindowsUpdate, wuFailure, wuMatches, wuName } from "./scan.ts";

// Recorded output of SEARCH_SCRIPT on Windows 11 23H2 (Windows PowerShell 5.1): a cumulative
// update rated Critical, a .NET security update rated Important, a Defender definition update,
// and a driver without a KB article.
const SEARCH = JSON.stringify({
  Updates: [
    {
      Title: "2024-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)",
      KBArticleIDs: ["5046633"],
      UpdateID: "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d",
      RevisionNumber: 1,
      MsrcSeverity: "Critical",
      MaxDownloadSize: 1034567890,
      RebootBehavior: 1,
      Categories: ["Security Updates", "Windows 11"],
      CategoryIDs: ["0fa1201d-4330-4fa8-8ae9-b877473b6441", "72e7624a-5b00-45d2-b92f-e561c0a6a160"],
    },
    {
      Title: "2024-11 .NET 8.0.11 Security Update for x64 Client (KB5047487)",
      KBArticleIDs: ["5047487"],
      UpdateID: "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b",
      RevisionNumber: 200,
      MsrcSeverity: "Important",
      MaxDownloadSize: 60129542,
      RebootBehavior: 0,
      Categories: ["Security Updates", ".NET 8.0"],
      CategoryIDs: ["0fa1201d-4330-4fa8-8ae9-b877473b6441", "1f8d7d53-5a6f-4fab-8f56-7c1b0c5e3cd3"],
    },
    {
      Title: "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.421.1234.0) - Current Channel (Broad)",
      KBArticleIDs: ["2267602"],
      UpdateID: "e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a4b",
      RevisionNumber: 200,
      MsrcSeverity: null,
      MaxDownloadSize: 94371840,
      RebootBehavior: 0,
      Categories: ["Microsoft Defender Antivirus", "Definition Updates"],
      CategoryIDs: ["8c3fcc84-7410-4a95-8b89-a166a0190486", "e0789628-ce08-4437-be74-2495b842f43b"],
    },
    {
      Title: "Intel Corporation - Display - 31.0.101.5590",
      KBArticleIDs: [],
      UpdateID: "77AA88BB-99CC-4DD0-8EE1-FF2233445566",
      RevisionNumber: 1,
      MsrcSeverity: null,
      MaxDownloadSize: 512000000,
      RebootBehavior: 2,
      Categories: ["Drivers"],
      CategoryIDs: ["ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0"],
    },
  ],
  RebootRequired: false,
});

// German Windows 10 22H2: category names are translated (only CategoryIDs say "security"),
// titles carry \u escapes for non-ASCII letters.
const GERMAN = String.raw`{"Updates":[{"Title":"2024-11 Kumulatives Update f\u00fcr Windows 10 Version 22H2 f\u00fcr x64-basierte Systeme (KB5046613)","KBArticleIDs":["5046613"],"UpdateID":"4f1a2b3c-5d6e-4f70-8192-a3b4c5d6e7f8","RevisionNumber":1,"MsrcSeverity":null,"MaxDownloadSize":712345678,"RebootBehavior":1,"Categories":["Sicherheitsupdates","Windows 10, version 1903 and later"],"CategoryIDs":["0fa1201d-4330-4fa8-8ae9-b877473b6441","b3c75dc1-155f-4be4-b015-3f1a91758e52"]}],"RebootRequired":true}`;

// Shapes ConvertTo-Json gives lists in other scripts and PowerShell versions: one update
// unrolled to a bare object (its KBArticleIDs and Categories too), a bare array, the
// {"value","Count"} wrapping of Windows PowerShell 5.1, null and nothing at all.
const ONE_OBJECT = `{"Title":"Update for Microsoft Edge (KB5000000)","KBArticleIDs":"5000000","UpdateID":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","RevisionNumber":3,"MsrcSeverity":null,"MaxDownloadSize":1000,"RebootBehavior":0,"Categories":"Updates"}`;
const BARE_ARRAY = `[${ONE_OBJECT},{"Title":"Windows Malicious Software Removal Tool x64 - v5.129 (KB890830)","KBArticleIDs":["890830"],"UpdateID":"bbbbbbbb-cccc-4ddd-8eee-ffffffffffff","RevisionNumber":1,"MsrcSeverity":null,"MaxDownloadSize":77000000,"RebootBehavior":0,"Categories":["Update Rollups","Windows 11"]}]`;
const WRAPPED = `{"Updates":{"value":[${ONE_OBJECT}],"Count":1},"RebootRequired":false}`;

describe("Windows Update search output", () => {
  it("maps KBs, MSRC severities, classifications, sizes and reboot behaviour", () => {
    const { updates, rebootRequired, ignored } = parseSearch(SEARCH);
    expect([rebootRequired, ignored]).toEqual([false, 0]);
    expect(updates.map(toWindowsUpdate).map((u) => [u.name, u.severity, u.security, u.repository, u.sizeBytes, u.rebootRequired])).toEqual([
      ["KB5046633", UpdateSeverity.CRITICAL, true, "Security Updates", 1034567890n, true],
      ["KB5047487", UpdateSeverity.IMPORTANT, true, "Security Updates", 60129542n, false],
      ["KB2267602", UpdateSeverity.UNKNOWN, false, "Definition Updates", 94371840n, false],
      ["77aa88bb-99cc-4dd0-8ee1-ff2233445566", UpdateSeverity.UNKNOWN, false, "Drivers", 512000000n, true],
    ]);
    expect(toWindowsUpdate(updates[0]!)).toMatchObject({
      source: "windows_update",
      currentVersion: "not installed",
      availableVersion: "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d.1",
      architecture: "",
    });
  });

  it("finds security updates by classification ID in any language", () => {
    const { updates, rebootRequired } = parseSearch(GERMAN);
    expect(rebootRequired).toBe(true);
    expect(updates[0]!.title).toBe("2024-11 Kumulatives Update für Windows 10 Version 22H2 für x64-basierte Systeme (KB5046613)");
    expect(toWindowsUpdate(updates[0]!)).toMatchObject({ name: "KB5046613", security: true, severity: UpdateSeverity.SECURITY, repository: "Sicherheitsupdates" });
  });

  it("accepts one update as a bare object, a bare array, PowerShell's wrapping, null and nothing", () => {
    expect(parseSearch(ONE_OBJECT).updates).toMatchObject([{ kb: ["5000000"], categories: ["Updates"], revision: 3 }]);
    expect(parseSearch(BARE_ARRAY).updates.map(wuName)).toEqual(["KB5000000", "KB890830"]);
    expect(parseSearch(WRAPPED).updates.map(wuName)).toEqual(["KB5000000"]);
    expect(parseSearch('{"Updates":[],"RebootRequired":false}').updates).toEqual([]);
    expect(parseSearch('{"Updates":null,"RebootRequired":true}')).toEqual({ updates: [], rebootRequired: true, ignored: 0 });
    expect(parseSearch("null").updates).toEqual([]);
    expect(parseSearch("").updates).toEqual([]);
    expect(parseSearch("\uFEFF\r\n").updates).toEqual([]);
  });

  it("skips entries without an UpdateID and refuses what is not JSON", () => {
    expect(parseSearch(`{"Updates":[{"Title":"x"},${ONE_OBJECT},{"UpdateID":"not-a-guid"}]}`)).toMatchObject({ ignored: 2, updates: [{ updateId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee" }] });
    expect(() => parseSearch("WARNING: something")).toThrow();
    expect(() => parseSearch('{"Something":"else"}')).toThrow();
    // A line some profile printed before the JSON does not hide it.
    expect(parseSearch(`Loading personal profile...\n${ONE_OBJECT}`).updates).toHaveLength(1);
  });

  it("matches refs by KB in any case or by UpdateID", () => {
    const [u] = parseSearch(SEARCH).updates;
    expect(["KB5046633", "kb5046633", "5046633", "8A3B2C1D-4E5F-4A6B-9C7D-0E1F2A3B4C5D"].map((n) => wuMatches(u!, n))).toEqual([true, true, true, true]);
    expect(wuMatches(u!, "KB504663")).toBe(false);
    expect(jsonList({ value: [1, 2], Count: 2 })).toEqual([1, 2]);
  });

  it("names Windows Update errors by HRESULT", () => {
    const failed = (stderr: string) => ({ exitCode: 1, signal: null, stdout: "", stderr, timedOut: false, aborted: false, truncated: false, spawnError: undefined, durationMs: 9 });
    expect(wuFailure("search", failed("0x80240438 Exception from HRESULT: 0x80240438\r\n"))).toBe(
      "search failed (0x80240438: no route to the update service (network, firewall or policy)): Exception from HRESULT: 0x80240438",
    );
    expect(wuFailure("search", failed("0x8024ABCD something new"))).toBe("search failed (0x8024ABCD): something new");
    expect(wuFailure("search", failed("powershell.exe : The term 'x' is not recognized"))).toBe("search failed (exit status 1): powershell.exe : The term 'x' is not recognized");
  });
});

describe("the search script", () => {
  it("uses the WUA COM API, prints compact JSON, and has nothing the command line could mangle", () => {
    for (const part of [
      "New-Object -ComObject Microsoft.Update.Session",
      "CreateUpdateSearcher()",
      "Search('IsInstalled=0 and IsHidden=0 and Type=''Software''')",
      "InstallationBehavior.RebootBehavior",
      "Microsoft.Update.SystemInfo",
      "ConvertTo-Json",
      "-Depth 4 -Compress",
    ]) {
      expect(SEARCH_SCRIPT).toContain(part);
    }
    expect(SEARCH_SCRIPT).not.toContain('"');
  });

  it("passes arguments only as quoted literals of safe characters", () => {
    expect(powershellArgv("ps", "script", ["online"]).slice(1)).toEqual(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", "script", "'online'"]);
    expect(() => powershellArgv("ps", "script", ["x'; Restart-Computer; '"])).toThrow();
  });
});

describe("scanWindowsUpdate with a fake PowerShell", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (ps: string) => {
    const t = await fakeTools("wu", { "powershell.exe": ps }, { "search.json": SEARCH, "one.json": ONE_OBJECT, "german.json": GERMAN });
    made.push(t);
    return t;
  };
  const opts = (t: FakeTools, refresh = true) => ({ refresh, timeoutMs: 5000, env: t.env(), isRoot: false });

  it("is not present off Windows, or without PowerShell", async () => {
    const t = await tools(printFile("search.json"));
    expect((await scanWindowsUpdate(opts(t), "linux")).run).toMatchObject({ subsystem: "windows_update", state: SubsystemRunState.NOT_PRESENT, message: "Windows Update exists only on Windows" });
    expect(await t.calls("powershell.exe")).toEqual([]);
    const none = await fakeTools("wu-none", {});
    made.push(none);
    expect((await scanWindowsUpdate({ ...opts(none), env: { ...none.env(), SystemRoot: none.dir } }, "win32")).run).toMatchObject({
      state: SubsystemRunState.NOT_PRESENT,
      message: "Windows PowerShell is not available on this host",
    });
  });

  it("searches online through the COM script and reports every update", async () => {
    const t = await tools(printFile("search.json"));
    const scan = await scanWindowsUpdate(opts(t), "win32");
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 4, message: "4 updates, 2 security" });
    const argv = (await t.calls("powershell.exe"))[0]!;
    expect(argv.slice(0, 5)).toEqual(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command"]);
    expect(argv.slice(5, -1).join("\n")).toBe(SEARCH_SCRIPT);
    expect(argv.at(-1)).toBe("'online'");
  });

  it("reads Windows' cached results without refresh, and a single update", async () => {
    const t = await tools(printFile("one.json"));
    const scan = await scanWindowsUpdate(opts(t, false), "win32");
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "1 update, 0 security; results of Windows' last update scan (refresh disabled)" });
    expect((await t.calls("powershell.exe"))[0]!.at(-1)).toBe("'offline'");
  });

  it("reports a pending restart and nothing to install", async () => {
    const german = await tools(printFile("german.json"));
    expect((await scanWindowsUpdate(opts(german), "win32")).run.message).toBe("1 update, 1 security; a restart is pending from an earlier install");
    const empty = await tools("exit 0");
    expect((await scanWindowsUpdate(opts(empty), "win32")).run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0, message: "no updates" });
  });

  it("names Windows Update errors: no network, service disabled, another operation running", async () => {
    const offline = await tools('echo "0x8024402C Exception from HRESULT: 0x8024402C" >&2; exit 1');
    expect((await scanWindowsUpdate(opts(offline), "win32")).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "the Windows Update search failed (0x8024402C: cannot resolve the update server or proxy name (check network, DNS and proxy)): Exception from HRESULT: 0x8024402C",
    });
    const disabled = await tools('echo "0x80070422 The service cannot be started, either because it is disabled or because it has no enabled devices associated with it." >&2; exit 1');
    expect((await scanWindowsUpdate(opts(disabled), "win32")).run.message).toMatch(/^the Windows Update search failed \(0x80070422: the Windows Update service is disabled\): The service cannot be started/);
    const busy = await tools('echo "0x80240009 Exception from HRESULT: 0x80240009" >&2; exit 1');
    expect((await scanWindowsUpdate(opts(busy), "win32")).run.message).toContain("another Windows Update operation is in progress");
  });

  it("fails on garbage and on PowerShell's own errors", async () => {
    const garbage = await tools('echo "WARNING: The names of some imported commands include unapproved verbs."');
    expect((await scanWindowsUpdate(opts(garbage), "win32")).run).toMatchObject({ state: SubsystemRunState.FAILED, message: "the Windows Update search printed something that is not its JSON" });
    const broken = await tools('echo "Program \'powershell.exe\' failed to run: The file cannot be accessed by the system" >&2; exit 2');
    expect((await scanWindowsUpdate(opts(broken), "win32")).run.message).toBe(
      "the Windows Update search failed (exit status 2): Program 'powershell.exe' failed to run: The file cannot be accessed by the system",
    );
  });

  it("stops a search that hangs at the time limit", async () => {
    const t = await tools("exec sleep 30");
    const started = Date.now();
    const scan = await scanWindowsUpdate({ refresh: true, timeoutMs: 500, env: t.env(true), isRoot: false }, "win32");
    expect(Date.now() - started).toBeLessThan(5000);
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED });
    expect(scan.run.message).toMatch(/^the Windows Update search timed out after \ds$/);
  });
});

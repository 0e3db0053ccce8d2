import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import { parseSearch, scanWindowsUpdate, toWindowsUpdate } from "./windows-update.ts";

// Recorded output of SEARCH_SCRIPT on Windows 11 23H2 (Windows PowerShell 5.1).
const SEARCH = readFileSync(path.join(import.meta.dirname, "testdata", "wu-search.json"), "utf8");
// PowerShell 5.1 unrolls a one-element array into an object.
const ONE = `{"Updates":{"Title":"Update for Microsoft Edge (KB5000000)","KBArticleIDs":"5000000","UpdateID":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","RevisionNumber":3,"MsrcSeverity":null,"MaxDownloadSize":1000,"RebootBehavior":0,"Categories":"Updates"},"RebootRequired":true}`;

describe("Windows Update search output", () => {
  it("maps KBs, MSRC severities, categories, sizes and reboot behaviour", () => {
    const { updates, rebootRequired } = parseSearch(SEARCH);
    expect(rebootRequired).toBe(false);
    expect(updates.map(toWindowsUpdate).map((u) => [u.name, u.severity, u.security, u.repository, u.sizeBytes, u.rebootRequired])).toEqual([
      ["KB5046633", UpdateSeverity.CRITICAL, true, "Security Updates", 1034567890n, true],
      ["KB5047487", UpdateSeverity.IMPORTANT, true, "Security Updates", 60129542n, false],
      ["KB2267602", UpdateSeverity.UNKNOWN, false, "Definition Updates", 94371840n, false],
      ["77aa88bb-99cc-4dd0-8ee1-ff2233445566", UpdateSeverity.UNKNOWN, false, "Drivers", 512000000n, true],
    ]);
    expect(toWindowsUpdate(updates[0]!).availableVersion).toBe("8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d.1");
  });

  it("accepts one update as an object and no updates at all", () => {
    expect(parseSearch(ONE)).toMatchObject({ rebootRequired: true, updates: [{ kb: ["5000000"], categories: ["Updates"] }] });
    expect(parseSearch('{"Updates":[],"RebootRequired":false}').updates).toEqual([]);
    expect(parseSearch('{"Updates":null}').updates).toEqual([]);
  });
});

describe("scanWindowsUpdate with a fake PowerShell", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (ps: string) => {
    const t = await fakeTools("wu", { "powershell.exe": ps }, { "search.json": SEARCH });
    made.push(t);
    return t;
  };
  const opts = (t: FakeTools) => ({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: false });

  it("is not present off Windows", async () => {
    const t = await tools("exit 0");
    expect((await scanWindowsUpdate(opts(t), "linux")).run).toMatchObject({ state: SubsystemRunState.NOT_PRESENT, message: "Windows Update exists only on Windows" });
  });

  it("searches through the COM API script and reports every update", async () => {
    const t = await tools(`${printFile("search.json")}`);
    const scan = await scanWindowsUpdate(opts(t), "win32");
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "4 update(s), 2 security" });
    const argv = (await t.calls("powershell.exe"))[0]!;
    expect(argv.slice(0, 5)).toEqual(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command"]);
    expect(argv.slice(5).join("\n")).toContain("CreateUpdateSearcher()");
  });

  it("names Windows Update errors by HRESULT", async () => {
    const t = await tools('echo "0x8024402C Exception from HRESULT: 0x8024402C" >&2; exit 1');
    expect((await scanWindowsUpdate(opts(t), "win32")).run).toMatchObject({
      state: SubsystemRunState.FAILED,
      message: "the Windows Update search failed (0x8024402C: cannot reach Windows Update (the host name does not resolve; check network and proxy)): Exception from HRESULT: 0x8024402C",
    });
    const disabled = await tools('echo "0x80070422 The service cannot be started" >&2; exit 1');
    expect((await scanWindowsUpdate(opts(disabled), "win32")).run.message).toContain("the Windows Update service is disabled");
    const garbage = await tools('echo "WARNING: something"');
    expect((await scanWindowsUpdate(opts(garbage), "win32")).run.message).toBe("the Windows Update search printed something that is not JSON");
  });
});

import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFile } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { createWindowsUpdateInstaller, encodeRequest, INSTALL_SCRIPT, parseInstall, wuKey } from "./install.ts";
import type { InstallOptions } from "../types.ts";

// Recorded search output (Windows 11 23H2): two security updates, a Defender definition
// update, a driver without a KB article.
const SEARCH = `{"Updates":[{"Title":"2024-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)","KBArticleIDs":["5046633"],"UpdateID":"8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d","RevisionNumber":1,"MsrcSeverity":"Critical","MaxDownloadSize":1034567890,"RebootBehavior":1,"Categories":["Security Updates","Windows 11"],"CategoryIDs":["0fa1201d-4330-4fa8-8ae9-b877473b6441","72e7624a-5b00-45d2-b92f-e561c0a6a160"]},{"Title":"2024-11 .NET 8.0.11 Security Update for x64 Client (KB5047487)","KBArticleIDs":["5047487"],"UpdateID":"1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b","RevisionNumber":200,"MsrcSeverity":"Important","MaxDownloadSize":60129542,"RebootBehavior":0,"Categories":["Security Updates"],"CategoryIDs":["0fa1201d-4330-4fa8-8ae9-b877473b6441"]},{"Title":"Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.421.1234.0)","KBArticleIDs":["2267602"],"UpdateID":"e0f1a2b3-c4d5-4e6f-8a7b-9c0d1e2f3a4b","RevisionNumber":200,"MsrcSeverity":null,"MaxDownloadSize":94371840,"RebootBehavior":0,"Categories":["Definition Updates"],"CategoryIDs":["e0789628-ce08-4437-be74-2495b842f43b"]},{"Title":"Intel Corporation - Display - 31.0.101.5590","KBArticleIDs":[],"UpdateID":"77aa88bb-99cc-4dd0-8ee1-ff2233445566","RevisionNumber":1,"MsrcSeverity":null,"MaxDownloadSize":512000000,"RebootBehavior":2,"Categories":["Drivers"],"CategoryIDs":["ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0"]}],"RebootRequired":false}`;

// Recorded INSTALL_SCRIPT output: the cumulative update installed and wants a restart, the .NET
// update failed in its installer (0x80070643).
const INSTALLED = `{"Results":[{"Key":"KB5046633","UpdateID":"8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d","Revision":1,"Title":"2024-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)","Stage":"install","ResultCode":2,"HResult":"0x00000000","RebootRequired":true},{"Key":"KB5047487","UpdateID":"1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b","Revision":200,"Title":"2024-11 .NET 8.0.11 Security Update for x64 Client (KB5047487)","Stage":"install","ResultCode":4,"HResult":"0x80070643","RebootRequired":false}],"RebootRequired":true}`;

describe("Windows Update install helpers", () => {
  it("reads the install script's results, one result unrolled or none", () => {
    expect(parseInstall(INSTALLED).results.map((r) => [r.key, r.stage, r.resultCode, r.hresult, r.rebootRequired])).toEqual([
      ["KB5046633", "install", 2, "0x00000000", true],
      ["KB5047487", "install", 4, "0x80070643", false],
    ]);
    expect(parseInstall('{"Results":{"Key":"KB1","UpdateID":"X","Revision":2,"Stage":"download","ResultCode":4,"HResult":"0x8024402C"},"RebootRequired":false}').results).toMatchObject([
      { key: "KB1", updateId: "x", stage: "download" },
    ]);
    expect(parseInstall('{"Results":[],"RebootRequired":false}')).toEqual({ results: [], rebootRequired: false });
    expect(() => parseInstall("")).toThrow();
    expect(() => parseInstall("[1,2]")).toThrow();
  });

  it("accepts KB articles and UpdateIDs only, and encodes the request as hex", () => {
    expect(["KB5046633", "kb5046633", "5046633", "77AA88BB-99CC-4DD0-8EE1-FF2233445566", "Intel Display", "KB12x", "-KB1"].map(wuKey)).toEqual([
      "KB5046633", "KB5046633", "KB5046633", "77aa88bb-99cc-4dd0-8ee1-ff2233445566", undefined, undefined, undefined,
    ]);
    const hex = encodeRequest([{ Key: "KB1", Version: "" }]);
    expect(hex).toMatch(/^[0-9a-f]+$/);
    expect(Buffer.from(hex, "hex").toString("utf8")).toBe('[{"Key":"KB1","Version":""}]');
  });

  it("downloads and installs through the WUA COM API, reading its request as data", () => {
    for (const part of ["CreateUpdateSearcher()", "CreateUpdateDownloader()", "CreateUpdateInstaller()", "AcceptEula()", "GetUpdateResult($i)", "ConvertFrom-Json", "RebootRequired", "-Depth 4 -Compress"]) {
      expect(INSTALL_SCRIPT).toContain(part);
    }
    expect(INSTALL_SCRIPT).not.toContain('"');
    expect(INSTALL_SCRIPT).not.toMatch(/Invoke-Expression|iex /i);
  });
});

// The fake PowerShell tells the install script (it mentions CreateUpdateInstaller) from the
// search script, keeps the install request it was given, and prints recorded output; a test
// may give it a script to run first (install.sh).
describe("Windows Update installer with a fake PowerShell", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const fake = async (files: Record<string, string> = {}) => {
    const t = await fakeTools(
      "wu-install",
      {
        "powershell.exe": `pr() { [ -e "$D/$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done < "$D/$1"; }
last=""; for a in "$@"; do last="$a"; done
case "$*" in
*CreateUpdateInstaller*) printf '%s\\n' "$last" > "$D/request"; [ -e "$D/install.sh" ] && . "$D/install.sh"; pr install.json;;
*) [ -e "$D/search.sh" ] && . "$D/search.sh"; pr search.json;;
esac`,
      },
      { "search.json": SEARCH, "install.json": INSTALLED, ...files },
    );
    made.push(t);
    return t;
  };
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set(), ...extra });
  const ref = (name: string, version = "") => create(PackageRefSchema, { source: "windows_update", name, version });
  const request = async (t: FakeTools) => {
    const arg = (await readFile(t.file("request"), "utf8")).trim();
    expect(arg).toMatch(/^'[0-9a-f]+'$/);
    return JSON.parse(Buffer.from(arg.slice(1, -1), "hex").toString("utf8"));
  };
  const installer = createWindowsUpdateInstaller("win32");

  it("is present only on Windows, and has no rollback", async () => {
    const t = await fake();
    expect(await createWindowsUpdateInstaller("linux").present(t.env())).toBe(false);
    expect(await installer.present(t.env())).toBe(true);
    expect(installer.rollback).toBeUndefined();
  });

  it("installs the named updates, passing them as data, and reports each result code", async () => {
    const t = await fake();
    const out = await installer.install([ref("KB5046633"), ref("kb5047487"), ref("KB9999999")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion, p.reason])).toEqual([
      ["KB5046633", PackageResultState.INSTALLED, "not installed", "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d.1", ""],
      ["kb5047487", PackageResultState.FAILED, "not installed", "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.200", "installation failed (0x80070643: the update's installer failed)"],
      ["KB9999999", PackageResultState.SKIPPED, "", "", "not pending on this host (installed already, hidden or superseded)"],
    ]);
    expect(out.rebootRequired).toBe(true);
    expect(out.error).toBe("1 of 3 updates failed");
    expect(await request(t)).toEqual([{ Key: "KB5046633", Version: "" }, { Key: "KB5047487", Version: "" }, { Key: "KB9999999", Version: "" }]);
    // One PowerShell run, recorded by the script's name rather than its text.
    expect(out.output).toHaveLength(1);
    expect(out.output[0]!.argv.slice(1, 7)).toEqual(["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", "<windows update install script>"]);
  });

  it("installs everything pending except holds when asked for nothing in particular", async () => {
    const t = await fake({ "install.json": '{"Results":[],"RebootRequired":false}' });
    const out = await installer.install([], opts(t, { holds: new Set(["KB2267602"]) }));
    expect(await request(t)).toEqual([
      { Key: "KB5046633", Version: "" },
      { Key: "KB5047487", Version: "" },
      { Key: "77aa88bb-99cc-4dd0-8ee1-ff2233445566", Version: "" },
    ]);
    expect(out.packages.map((p) => p.name)).toEqual(["KB5046633", "KB5047487", "77aa88bb-99cc-4dd0-8ee1-ff2233445566"]);
    // The search that found them is not part of the record; the install is.
    expect(out.output.map((o) => o.argv[6])).toEqual(["<windows update install script>"]);
  });

  it("says which downloads failed, which revisions changed and which updates need a person", async () => {
    const t = await fake({
      "install.json": JSON.stringify({
        Results: [
          { Key: "KB5046633", UpdateID: "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d", Revision: 1, Title: "t", Stage: "download", ResultCode: 4, HResult: "0x8024402C", RebootRequired: false },
          { Key: "KB5047487", UpdateID: "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b", Revision: 201, Title: "t", Stage: "revision", ResultCode: 0, HResult: "0x00000000", RebootRequired: false },
          { Key: "77aa88bb-99cc-4dd0-8ee1-ff2233445566", UpdateID: "77aa88bb-99cc-4dd0-8ee1-ff2233445566", Revision: 1, Title: "t", Stage: "input", ResultCode: 0, HResult: "0x00000000", RebootRequired: false },
        ],
        RebootRequired: false,
      }),
    });
    const out = await installer.install(
      [ref("KB5046633"), ref("KB5047487", "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.200"), ref("77aa88bb-99cc-4dd0-8ee1-ff2233445566")],
      opts(t),
    );
    expect(out.packages.map((p) => p.reason)).toEqual([
      "download failed (0x8024402C: cannot resolve the update server or proxy name (check network, DNS and proxy))",
      "Windows Update now offers revision 1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.201, not 1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.200; run a new dry run",
      "the update asks for user input and cannot be installed unattended",
    ]);
    expect(out.packages.every((p) => p.state === PackageResultState.FAILED)).toBe(true);
    expect((await request(t))[1]).toEqual({ Key: "KB5047487", Version: "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.200" });
  });

  it("fails every update when another installation holds Windows Update, or the network is gone", async () => {
    const busy = await fake({ "install.sh": 'echo "0x80240016 Exception from HRESULT: 0x80240016" >&2; exit 1' });
    const out = await installer.install([ref("KB5046633"), ref("KB5047487")], opts(busy));
    const reason = "installing Windows updates failed (0x80240016: another installation is in progress, or a restart is pending): Exception from HRESULT: 0x80240016";
    expect(out.error).toBe(reason);
    expect(out.packages.map((p) => [p.state, p.reason])).toEqual([[PackageResultState.FAILED, reason], [PackageResultState.FAILED, reason]]);
    const offline = await fake({ "install.sh": 'echo "0x80072EE7 The server name or address could not be resolved" >&2; exit 1' });
    expect((await installer.install([ref("KB5046633")], opts(offline))).error).toBe(
      "installing Windows updates failed (0x80072EE7: the update server name does not resolve (DNS)): The server name or address could not be resolved",
    );
  });

  it("fails on garbage, and refuses names that are not updates without running anything", async () => {
    const garbage = await fake({ "install.json": "Windows PowerShell\nCopyright (C) Microsoft Corporation." });
    expect((await installer.install([ref("KB5046633")], opts(garbage))).error).toBe("installing Windows updates printed something that is not its JSON");
    const t = await fake();
    const out = await installer.install([ref("Intel-Display")], opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.FAILED, reason: '"Intel-Display" is not a KB article or an UpdateID' });
    expect(await t.calls("powershell.exe")).toEqual([]);
  });

  it("says an install it had to stop may go on in the background", async () => {
    const t = await fake({ "install.sh": "exec sleep 30" });
    const started = Date.now();
    const out = await installer.install([ref("KB5046633")], { ...opts(t), timeoutMs: 1500, env: t.env(true) });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out.error).toMatch(/^installing Windows updates timed out after \ds; Windows Update may still be installing in the background$/);
    expect(out.packages[0]!.state).toBe(PackageResultState.FAILED);
    expect(out.output[0]!.timedOut).toBe(true);
  });

  it("previews one INSTALL per requested pending update at the revision offered", async () => {
    const t = await fake();
    const sim = await installer.dryRun!(
      [ref("KB5046633"), ref("77AA88BB-99CC-4DD0-8EE1-FF2233445566"), ref("KB5047487", "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b.199"), ref("KB9999999")],
      opts(t),
    );
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.kind, c.source, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.INSTALL, "windows_update", "KB5046633", "", "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d.1"],
      [PackageChangeKind.INSTALL, "windows_update", "77aa88bb-99cc-4dd0-8ee1-ff2233445566", "", "77aa88bb-99cc-4dd0-8ee1-ff2233445566.1"],
    ]);
    expect(sim.output.map((o) => o.argv.slice(6))).toEqual([["<windows update search script>", "'online'"]]);
    // Nothing was installed by previewing.
    expect((await t.calls("powershell.exe")).some((a) => a.join("\n").includes("CreateUpdateInstaller"))).toBe(false);

    const all = await installer.dryRun!([], opts(t, { holds: new Set(["KB5046633", "77aa88bb-99cc-4dd0-8ee1-ff2233445566"]) }));
    expect(all.changes.map((c) => c.name)).toEqual(["KB5047487", "KB2267602"]);

    const broken = await fake({ "search.sh": 'echo "0x8024402C Exception from HRESULT: 0x8024402C" >&2; exit 1' });
    expect((await installer.dryRun!([ref("KB5046633")], opts(broken))).error).toMatch(/^the Windows Update search failed \(0x8024402C: /);
    expect((await installer.dryRun!([ref("not an update")], opts(t))).error).toBe('"not an update" is not a KB article or an UpdateID');
  });
});

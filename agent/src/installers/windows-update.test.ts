import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../test/support/fake-tools.ts";
import { createWindowsUpdateInstaller } from "./windows-update.ts";
import type { InstallOptions } from "./types.ts";

const SEARCH = readFileSync(path.join(import.meta.dirname, "..", "scanners", "testdata", "wu-search.json"), "utf8");
const INSTALLED = `{"Results":[{"Key":"KB5046633","Title":"2024-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)","ResultCode":2,"HResult":"0x00000000"},{"Key":"KB5047487","Title":"2024-11 .NET 8.0.11 Security Update for x64 Client (KB5047487)","ResultCode":4,"HResult":"0x80240022"}],"RebootRequired":true}`;

describe("Windows Update installer with a fake PowerShell", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set() });
  const ref = (name: string) => create(PackageRefSchema, { source: "windows_update", name });
  // The install script is recognised by what it reads: the IDs come in through the environment.
  const tools = async () => {
    const t = await fakeTools(
      "wu-install",
      { "powershell.exe": `case "$*" in *REDFLAG_WU_IDS*) printf '%s\\n' "$REDFLAG_WU_IDS" > "$D/ids"; ${printFile("install.json")};; *) ${printFile("search.json")};; esac` },
      { "search.json": SEARCH, "install.json": INSTALLED },
    );
    made.push(t);
    return t;
  };
  const installer = createWindowsUpdateInstaller("win32");

  it("is present only on Windows", async () => {
    const t = await tools();
    expect(await createWindowsUpdateInstaller("linux").present(t.env())).toBe(false);
    expect(await installer.present(t.env())).toBe(true);
  });

  it("installs the named updates, passing their IDs as data, and reports each result code", async () => {
    const t = await tools();
    const out = await installer.install([ref("KB5046633"), ref("KB5047487"), ref("KB9999999")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["KB5046633", PackageResultState.INSTALLED, "2024-11 Cumulative Update for Windows 11 Version 23H2 for x64-based Systems (KB5046633)"],
      ["KB5047487", PackageResultState.FAILED, "failed (0x80240022)"],
      ["KB9999999", PackageResultState.SKIPPED, "not pending on this host (installed already, hidden or superseded)"],
    ]);
    expect(out.rebootRequired).toBe(true);
    expect(readFileSync(t.file("ids"), "utf8").trim()).toBe('["KB5046633","KB5047487","KB9999999"]');
    expect(out.output[0]!.argv.at(-1)).toBe("<install script>");
  });

  it("previews pending updates as installs and refuses unknown ones; no rollback", async () => {
    const t = await tools();
    const sim = await installer.dryRun!([ref("KB5046633")], opts(t));
    expect(sim.changes.map((c) => [c.kind, c.name, c.toVersion])).toEqual([[PackageChangeKind.INSTALL, "KB5046633", "8a3b2c1d-4e5f-4a6b-9c7d-0e1f2a3b4c5d.1"]]);
    expect((await installer.dryRun!([ref("KB1")], opts(t))).error).toBe("KB1 is not a pending update on this host");
    expect(installer.rollback).toBeUndefined();
  });
});

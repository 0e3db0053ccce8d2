import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fakeHost, type FakeHost } from "../../test/support/fake-host.ts";
import { FAKE_ICACLS, FAKE_POWERSHELL, SDDL_INHERITED, SDDL_PRIVATE, SDDL_SQUATTED } from "../../test/support/recorded-host-tools.ts";
import { ensurePrivateDir, StateError } from "./files.ts";
import { foreignAccess, parseSddl } from "./windows-acl.ts";

// The Windows state directory on a fake Windows host: icacls.exe and powershell.exe from
// C:\Windows\System32 are fakes that behave like the real ones (recorded output, failures).
const ICACLS = "C:\\Windows\\System32\\icacls.exe";
const POWERSHELL = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe";
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanup.splice(0)) await undo();
});
const programData = async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "redflag-programdata-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
};
const windows = async (tools: Record<string, string> = { [ICACLS]: FAKE_ICACLS, [POWERSHELL]: FAKE_POWERSHELL }): Promise<FakeHost> => {
  const host = await fakeHost({ platform: "win32", tools });
  cleanup.push(() => host.remove());
  return host;
};
const GRANTS = ["/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"];

describe("the state directory on Windows", () => {
  it("is created with an ACL for SYSTEM and Administrators only (by SID, inherited entries removed) and owned by Administrators", async () => {
    const top = path.join(await programData(), "RedFlag");
    const dir = path.join(top, "agent");
    const host = await windows();
    await ensurePrivateDir(dir, host);
    expect(host.runs).toEqual([
      [ICACLS, top, ...GRANTS],
      [ICACLS, top, "/setowner", "*S-1-5-32-544"],
      [ICACLS, dir, ...GRANTS],
      [ICACLS, dir, "/setowner", "*S-1-5-32-544"],
    ]);
  });

  it("is used as it is when it already exists and is private; its ACL is set only once, at creation", async () => {
    const dir = path.join(await programData(), "RedFlag", "agent");
    await mkdir(dir, { recursive: true });
    const host = await windows();
    await host.tools.write("sddl", `${SDDL_PRIVATE}\r\n`);
    await ensurePrivateDir(dir, host);
    expect(host.runs).toHaveLength(1);
    const [tool, ...args] = host.runs[0]!;
    expect([tool, ...args.slice(0, 3)]).toEqual([POWERSHELL, "-NoProfile", "-NonInteractive", "-EncodedCommand"]);
    // The path travels as a quoted literal inside the encoded script, never as command text.
    expect(Buffer.from(args[3]!, "base64").toString("utf16le")).toBe(`[Console]::Out.Write((Get-Acl -LiteralPath '${dir}').Sddl)`);
  });

  it("is refused when another account owns it or may use it, with who and what to do", async () => {
    const dir = path.join(await programData(), "RedFlag", "agent");
    await mkdir(dir, { recursive: true });
    const host = await windows();
    await host.tools.write("sddl", SDDL_SQUATTED);
    const squatted = await ensurePrivateDir(dir, host).catch((err: unknown) => err);
    expect(squatted).toBeInstanceOf(StateError);
    expect((squatted as Error).message).toBe(
      `${dir} is not private to SYSTEM and Administrators (owned by S-1-5-21-3623811015-3361044348-30300820-1013, ` +
        "S-1-5-21-3623811015-3361044348-30300820-1013 allowed FA, BU allowed 0x1200a9), so the agent does not use it: " +
        "remove it (the agent creates it again, private; then register again), or, if nobody else can have written into it, " +
        `give it their ACL alone: icacls "${dir}" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F /T, then icacls "${dir}" /setowner *S-1-5-32-544 /T`,
    );
    await host.tools.write("sddl", SDDL_INHERITED);
    await expect(ensurePrivateDir(dir, host)).rejects.toThrow(/is not private to SYSTEM and Administrators \(BU allowed 0x1200a9, BU allowed DCLCRPCR\)/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("is refused when who may use it cannot be checked", async () => {
    const dir = await programData();
    const host = await windows();
    await expect(ensurePrivateDir(dir, host)).rejects.toThrow(`cannot check who may use ${dir}: ${POWERSHELL} failed (exit status 1): Get-Acl : Cannot find path because it does not exist.`);
    await host.tools.write("sddl", "garbled\r\n");
    await expect(ensurePrivateDir(dir, host)).rejects.toThrow(`cannot check who may use ${dir}: Get-Acl printed no security descriptor`);
    await expect(ensurePrivateDir(dir, await windows({}))).rejects.toThrow(/cannot check who may use .*powershell\.exe could not start: .*ENOENT/);
  });

  it("is removed again and the agent stops when the ACL cannot be set, or icacls is missing", async () => {
    const root = await programData();
    const top = path.join(root, "RedFlag");
    const host = await windows();
    await host.tools.write("icacls.denied", "");
    const failure = await ensurePrivateDir(path.join(top, "agent"), host).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(StateError);
    expect((failure as Error).message).toBe(
      `cannot restrict ${top} to SYSTEM and Administrators, so it was not created: ${ICACLS} failed (exit status 5): ${top}: Access is denied.`,
    );
    expect(await readdir(root)).toEqual([]);
    await expect(ensurePrivateDir(path.join(top, "agent"), await windows({}))).rejects.toThrow(/icacls\.exe could not start: .*ENOENT/);
    expect(await readdir(root)).toEqual([]);
  });

  it("is removed again when another account wrote into it before its ACL was set", async () => {
    const root = await programData();
    const host = await windows();
    await host.tools.write("icacls.plant", "");
    await expect(ensurePrivateDir(path.join(root, "RedFlag", "agent"), host)).rejects.toThrow(
      `another account wrote into ${path.join(root, "RedFlag")} while the agent was creating it; it was removed again`,
    );
    expect(await readdir(root)).toEqual([]);
  });
});

describe("SDDL", () => {
  it("reads the owner and the DACL's entries", () => {
    expect(parseSddl(SDDL_PRIVATE)).toEqual({
      owner: "BA",
      dacl: [
        { type: "A", flags: "OICI", rights: "FA", sid: "SY" },
        { type: "A", flags: "OICI", rights: "FA", sid: "BA" },
      ],
    });
    expect(foreignAccess(parseSddl(SDDL_PRIVATE)!)).toEqual([]);
    expect(foreignAccess(parseSddl("O:SYG:SYD:NO_ACCESS_CONTROL")!)).toEqual(["no ACL: everyone may use it"]);
    expect(foreignAccess(parseSddl("O:SYG:SYD:P(D;OICI;FA;;;BU)(A;OICI;FA;;;SY)")!)).toEqual([]);
    expect(parseSddl("")).toBeUndefined();
    expect(parseSddl("D:P(A;;FA;;;SY)")).toBeUndefined();
  });
});

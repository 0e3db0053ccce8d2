import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { parseSyncInfo, parseUpgradeList, scanPacman } from "./scan.ts";

// Recorded on Arch Linux (pacman 7.0, pacman-contrib 1.10), LC_ALL=C.
const CHECKUPDATES = `linux 6.11.8.arch1-1 -> 6.11.9.arch1-1
openssl 3.4.0-1 -> 3.4.0-2
python-urllib3 2.2.3-1 -> 2.2.3-2
`;
const QU_WITH_IGNORED = `linux 6.11.8.arch1-1 -> 6.11.9.arch1-1 [ignored]
firefox 132.0.1-1 -> 132.0.2-1
`;
const SI = `Repository      : core
Name            : linux
Version         : 6.11.9.arch1-1
Description     : The Linux kernel and modules
Architecture    : x86_64
Download Size   : 140.05 MiB
Installed Size  : 136.12 MiB

Repository      : core
Name            : openssl
Version         : 3.4.0-2
Architecture    : x86_64
Download Size   : 4.95 MiB

Repository      : extra
Name            : python-urllib3
Version         : 2.2.3-2
Architecture    : any
Download Size   : 201.48 KiB
`;

describe("pacman parsers", () => {
  it("reads checkupdates and pacman -Qu, marking IgnorePkg holds", () => {
    expect(parseUpgradeList(CHECKUPDATES).candidates.map((c) => [c.name, c.currentVersion, c.availableVersion])).toEqual([
      ["linux", "6.11.8.arch1-1", "6.11.9.arch1-1"],
      ["openssl", "3.4.0-1", "3.4.0-2"],
      ["python-urllib3", "2.2.3-1", "2.2.3-2"],
    ]);
    expect(parseUpgradeList(QU_WITH_IGNORED).candidates.map((c) => [c.name, c.ignored])).toEqual([["linux", true], ["firefox", false]]);
    expect(parseUpgradeList("==> ERROR: Cannot fetch updates\nbad line\nx 1 -> $(id)\n").ignoredLines).toBe(2);
  });

  it("reads repository, architecture and download size from pacman -Si", () => {
    const info = parseSyncInfo(SI);
    expect(info.get("linux")).toEqual({ repository: "core", architecture: "x86_64", sizeBytes: 146853069n });
    expect(info.get("python-urllib3")).toEqual({ repository: "extra", architecture: "any", sizeBytes: 206316n });
  });
});

describe("scanPacman with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (scripts: Record<string, string>, files: Record<string, string> = {}) => {
    const t = await fakeTools("pacman", scripts, files);
    made.push(t);
    return t;
  };
  const pacman = `case "$1" in -Si) ${printFile("si.out")}; exit 0;; -Qu) ${printFile("qu.out")}; exit 0;; esac; exit 1`;

  it("is not present without pacman", async () => {
    const t = await tools({ checkupdates: "exit 2" });
    expect((await scanPacman({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true })).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("uses checkupdates, adds repository and size, and AUR updates from paru", async () => {
    const t = await tools(
      { pacman, checkupdates: `${printFile("cu.out")}; exit 0`, paru: 'echo "yay-bin 12.4.1-1 -> 12.4.2-1"; exit 0' },
      { "cu.out": CHECKUPDATES, "si.out": SI, "qu.out": "" },
    );
    const scan = await scanPacman({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: false });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "4 updates, 0 security; 1 from the AUR" });
    expect(scan.updates.map((u) => [u.name, u.repository, u.architecture, u.severity, u.rebootRequired, u.sizeBytes])).toEqual([
      ["linux", "core", "x86_64", UpdateSeverity.UNKNOWN, true, 146853069n],
      ["openssl", "core", "x86_64", UpdateSeverity.UNKNOWN, false, 5190451n],
      ["python-urllib3", "extra", "any", UpdateSeverity.UNKNOWN, false, 206316n],
      ["yay-bin", "aur", "", UpdateSeverity.UNKNOWN, false, 0n],
    ]);
    expect((await t.calls("pacman"))[0]).toEqual(["-Si", "--", "linux", "openssl", "python-urllib3"]);
  });

  it("reads the local databases with pacman -Qu when not refreshing, noting IgnorePkg holds", async () => {
    const t = await tools({ pacman, checkupdates: "exit 1" }, { "si.out": "", "qu.out": QU_WITH_IGNORED });
    const scan = await scanPacman({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.message).toBe("2 updates, 0 security; sync databases not refreshed (refresh disabled); 1 held by IgnorePkg in pacman.conf");
    expect(await t.calls("checkupdates")).toEqual([]);
  });

  it("treats checkupdates' exit 2 as nothing to do, and its exit 1 as a failure", async () => {
    const none = await tools({ pacman, checkupdates: "exit 2" }, { "si.out": "", "qu.out": "" });
    expect((await scanPacman({ refresh: true, timeoutMs: 5000, env: none.env(), isRoot: true })).run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0 });
    const broken = await tools({ pacman, checkupdates: 'echo "==> ERROR: Cannot fetch updates" >&2; exit 1' }, { "si.out": "", "qu.out": "" });
    const scan = await scanPacman({ refresh: true, timeoutMs: 5000, env: broken.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.FAILED, message: "checkupdates failed (exit status 1): ==> ERROR: Cannot fetch updates" });
  });

  it("fails when the local database is locked, and notes an AUR helper that fails", async () => {
    const locked = await tools({ pacman: 'echo "error: failed to init transaction (unable to lock database)" >&2; exit 1' });
    const scan = await scanPacman({ refresh: false, timeoutMs: 5000, env: locked.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/unable to lock database/);

    const failing = await tools({ pacman, checkupdates: "exit 2", yay: 'echo " -> Failed to look up the AUR." >&2; exit 1' }, { "si.out": "", "qu.out": "" });
    const aur = await scanPacman({ refresh: true, timeoutMs: 5000, env: failing.env(), isRoot: false });
    expect(aur.run.state).toBe(SubsystemRunState.RAN);
    expect(aur.run.message).toContain("AUR not checked: yay -Qua failed (exit status 1): -> Failed to look up the AUR.");
  });

  it("as root, asks the AUR helper as the unprivileged build user, and says how to enable AUR builds when there is none", async () => {
    const helper = 'echo "yay-bin 12.4.1-1 -> 12.4.2-1"; exit 0';
    const withUser = await tools(
      { pacman, checkupdates: "exit 2", yay: helper, runuser: 'shift 3; exec "$@"', getent: 'echo "redflag-aur:x:970:970::/var/lib/redflag-aur:/usr/bin/nologin"' },
      { "si.out": "", "qu.out": "" },
    );
    const scan = await scanPacman({ refresh: true, timeoutMs: 5000, env: withUser.env(), isRoot: true });
    expect(scan.updates.map((u) => [u.name, u.repository])).toEqual([["yay-bin", "aur"]]);
    expect(await withUser.calls("runuser")).toEqual([["-u", "redflag-aur", "--", `${withUser.dir}/bin/yay`, "-Qua"]]);

    const noUser = await tools({ pacman, checkupdates: "exit 2", yay: helper, runuser: "exit 0", getent: "exit 2" }, { "si.out": "", "qu.out": "" });
    const without = await scanPacman({ refresh: true, timeoutMs: 5000, env: noUser.env(), isRoot: true });
    expect(without.run.state).toBe(SubsystemRunState.RAN);
    expect(without.run.message).toContain(
      "AUR not checked: AUR builds are not enabled on this host: `sudo redflag-agent install --aur` enables them (it creates redflag-aur, the unprivileged user that builds them)",
    );
    expect(await noUser.calls("yay")).toEqual([]);
  });
});

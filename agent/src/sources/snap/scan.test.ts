import { SubsystemRunState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { parseSnapTable, scanSnap } from "./scan.ts";

// Recorded on Ubuntu 24.04 (snapd 2.66): `snap list` and `snap refresh --list`.
const testdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
const SNAP_LIST = testdata("snap-list.txt");
const REFRESH_LIST = testdata("snap-refresh-list.txt");

describe("parseSnapTable", () => {
  it("reads snap list and snap refresh --list", () => {
    expect(parseSnapTable(SNAP_LIST).map((r) => [r.name, r.version, r.revision, r.fourth])).toEqual([
      ["bare", "1.0", "5", "latest/stable"],
      ["core22", "20240904", "1621", "latest/stable"],
      ["firefox", "131.0.3-1", "5187", "latest/stable/…"],
      ["lxd", "5.21.2-2f4ba6b", "30131", "5.21/stable"],
      ["snapd", "2.65.3", "21759", "latest/stable"],
    ]);
    expect(parseSnapTable("All snaps up to date.\n")).toEqual([]);
  });
});

describe("scanSnap with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (snap: string, files: Record<string, string> = {}) => {
    const t = await fakeTools("snap", { snap }, files);
    made.push(t);
    return t;
  };

  it("is not present without snap", async () => {
    const t = await fakeTools("snap", {});
    made.push(t);
    expect((await scanSnap({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true })).run.state).toBe(SubsystemRunState.NOT_PRESENT);
  });

  it("lists pending refreshes with installed versions, channels and sizes", async () => {
    const t = await tools(`case "$1" in refresh) ${printFile("refresh.out")};; list) ${printFile("list.out")};; esac`, { "refresh.out": REFRESH_LIST, "list.out": SNAP_LIST });
    const scan = await scanSnap({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "2 updates, 0 security" });
    expect(scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository, u.sizeBytes])).toEqual([
      ["core22", "20240904", "20241001", "latest/stable", 77000000n],
      ["firefox", "131.0.3-1", "132.0.2-1", "latest/stable/…", 283000000n],
    ]);
  });

  it("says nothing is pending when all snaps are current", async () => {
    const t = await tools('echo "All snaps up to date." >&2');
    const scan = await scanSnap({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, updateCount: 0 });
  });

  it("fails when snapd is not running, or the store cannot be reached", async () => {
    const down = await tools(`echo 'error: cannot communicate with server: Get "http://localhost/v2/find?select=refresh": dial unix /run/snapd.socket: connect: no such file or directory' >&2; exit 1`);
    const scan = await scanSnap({ refresh: true, timeoutMs: 5000, env: down.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/^snap refresh --list failed \(exit status 1\): error: cannot communicate with server/);
    const offline = await tools(`echo 'error: cannot refresh: Post "https://api.snapcraft.io/v2/snaps/refresh": dial tcp: lookup api.snapcraft.io: no such host' >&2; exit 1`);
    expect((await scanSnap({ refresh: true, timeoutMs: 5000, env: offline.env(), isRoot: true })).run.message).toContain("no such host");
  });
});

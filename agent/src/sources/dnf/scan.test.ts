import { SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { advisoryFor, parseCheckUpdate, parseUpdateInfo, scanDnf } from "./scan.ts";

// Recorded `dnf check-update` (Fedora 40, dnf 4.21), LC_ALL=C.
const FEDORA_DNF4 = `Last metadata expiration check: 0:41:07 ago on Mon 18 Nov 2024 09:12:44 AM UTC.

kernel.x86_64                                      6.11.7-200.fc40                      updates
kernel-core.x86_64                                 6.11.7-200.fc40                      updates
openssl-libs.x86_64                                1:3.2.2-3.fc40                       updates
python3-setuptools-wheel-very-long-name.noarch
                                                   69.0.3-4.fc40                        updates
tzdata.noarch                                      2024b-1.fc40                         updates
Obsoleting Packages
grub2-tools.x86_64                                 1:2.06-121.fc40                      updates
    grub2-tools.x86_64                             1:2.06-120.fc40                      @updates
`;

// dnf5 (Fedora 41) `check-upgrade`: repository chatter first, same columns.
const FEDORA_DNF5 = `Updating and loading repositories:
Repositories loaded.
curl.x86_64                          8.9.1-3.fc41                   updates
libcurl.x86_64                       8.9.1-3.fc41                   updates
`;

// CentOS 7 yum.
const CENTOS7_YUM = `Loaded plugins: fastestmirror
Loading mirror speeds from cached hostfile
 * base: mirror.example.org

bash.x86_64                          4.2.46-35.el7_9                 updates
glibc.i686                           2.17-326.el7_9.3                updates
`;

const UPDATEINFO_DNF4 = `FEDORA-2024-9a4b1c2d3e Important/Sec. kernel-6.11.7-200.fc40.x86_64
FEDORA-2024-9a4b1c2d3e Important/Sec. kernel-core-6.11.7-200.fc40.x86_64
FEDORA-2024-77aa88bb99 Moderate/Sec.  openssl-libs-1:3.2.2-3.fc40.x86_64
FEDORA-2024-0102030405 Critical/Sec.  openssl-libs-1:3.2.2-3.fc40.x86_64
FEDORA-2024-ffeeddccbb enhancement    tzdata-2024b-1.fc40.noarch
`;

const UPDATEINFO_RHEL = `RHSA-2024:8856 Important/Sec. kernel-5.14.0-503.14.1.el9_5.x86_64
RHBA-2024:9001 bugfix         tzdata-2024b-2.el9.noarch
RHSA-2024:9002 security       libxml2-2.9.13-6.el9_5.1.x86_64
`;

const ADVISORY_DNF5 = `Name                    Type        Severity  Package                              Issued
FEDORA-2024-3e1f0a9b2c  security    Important curl-8.9.1-3.fc41.x86_64             2024-11-14 02:11:09
FEDORA-2024-3e1f0a9b2c  security    Important libcurl-8.9.1-3.fc41.x86_64          2024-11-14 02:11:09
FEDORA-2024-aaaaaaaaaa  bugfix                tzdata-2024b-1.fc41.noarch           2024-11-01 00:00:00
`;

describe("parseCheckUpdate", () => {
  it("reads dnf4 output, joins wrapped rows and leaves obsoletes out", () => {
    const { candidates, ignoredLines } = parseCheckUpdate(FEDORA_DNF4);
    expect(ignoredLines).toBe(0);
    expect(candidates.map((c) => [c.name, c.architecture, c.availableVersion, c.repository])).toEqual([
      ["kernel", "x86_64", "6.11.7-200.fc40", "updates"],
      ["kernel-core", "x86_64", "6.11.7-200.fc40", "updates"],
      ["openssl-libs", "x86_64", "1:3.2.2-3.fc40", "updates"],
      ["python3-setuptools-wheel-very-long-name", "noarch", "69.0.3-4.fc40", "updates"],
      ["tzdata", "noarch", "2024b-1.fc40", "updates"],
    ]);
  });

  it("reads dnf5 and yum output", () => {
    expect(parseCheckUpdate(FEDORA_DNF5).candidates.map((c) => c.name)).toEqual(["curl", "libcurl"]);
    expect(parseCheckUpdate(CENTOS7_YUM).candidates.map((c) => `${c.name}.${c.architecture}`)).toEqual(["bash.x86_64", "glibc.i686"]);
  });

  it("counts rows it cannot read instead of inventing updates", () => {
    const { candidates, ignoredLines } = parseCheckUpdate("bash.x86_64 $(reboot) updates\nzsh.x86_64 5.9-1 updates extra\nnoise line here\n");
    expect(candidates).toEqual([]);
    expect(ignoredLines).toBe(2);
  });
});

describe("parseUpdateInfo", () => {
  it("keeps the most severe advisory per package and marks security ones", () => {
    const advisories = parseUpdateInfo(UPDATEINFO_DNF4);
    const openssl = advisoryFor(advisories, { name: "openssl-libs", architecture: "x86_64", availableVersion: "1:3.2.2-3.fc40", repository: "updates" });
    expect(openssl).toEqual({ id: "FEDORA-2024-0102030405", security: true, severity: UpdateSeverity.CRITICAL });
    expect(advisories.get("tzdata-2024b-1.fc40.noarch")).toMatchObject({ security: false, severity: UpdateSeverity.UNKNOWN });
  });

  it("reads RHEL types without a severity and the dnf5 table", () => {
    const rhel = parseUpdateInfo(UPDATEINFO_RHEL);
    expect(rhel.get("libxml2-2.9.13-6.el9_5.1.x86_64")).toMatchObject({ security: true, severity: UpdateSeverity.SECURITY });
    expect(rhel.get("tzdata-2024b-2.el9.noarch")).toMatchObject({ security: false });
    const dnf5 = parseUpdateInfo(ADVISORY_DNF5);
    expect(dnf5.get("curl-8.9.1-3.fc41.x86_64")).toEqual({ id: "FEDORA-2024-3e1f0a9b2c", security: true, severity: UpdateSeverity.IMPORTANT });
    expect(dnf5.get("tzdata-2024b-1.fc41.noarch")).toMatchObject({ security: false });
  });
});

describe("scanDnf with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const tools = async (scripts: Record<string, string>, files: Record<string, string> = {}) => {
    const t = await fakeTools("dnf", scripts, files);
    made.push(t);
    return t;
  };
  const rpm = `${printFile("rpm.out")}`;

  it("is not present without dnf or yum", async () => {
    const t = await tools({ rpm: "exit 0" });
    const scan = await scanDnf({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ subsystem: "dnf", state: SubsystemRunState.NOT_PRESENT, message: "dnf is not installed on this host" });
  });

  it("reports updates with installed versions and advisory severities", async () => {
    const t = await tools(
      {
        dnf: `case "$*" in *check-update*) ${printFile("check.out")}; exit 100;; *updateinfo*) ${printFile("info.out")}; exit 0;; *makecache*) exit 0;; esac; exit 1`,
        rpm,
      },
      {
        "check.out": FEDORA_DNF4,
        "info.out": UPDATEINFO_DNF4,
        "rpm.out": "kernel.x86_64 6.10.12-200.fc40\nkernel-core.x86_64 6.10.12-200.fc40\nopenssl-libs.x86_64 1:3.2.2-2.fc40\ntzdata.noarch 2024a-5.fc40\n",
      },
    );
    const scan = await scanDnf({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "5 updates, 3 security", updateCount: 5 });
    expect(scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.severity, u.security, u.rebootRequired])).toEqual([
      ["kernel", "6.10.12-200.fc40", "6.11.7-200.fc40", UpdateSeverity.IMPORTANT, true, true],
      ["kernel-core", "6.10.12-200.fc40", "6.11.7-200.fc40", UpdateSeverity.IMPORTANT, true, true],
      ["openssl-libs", "1:3.2.2-2.fc40", "1:3.2.2-3.fc40", UpdateSeverity.CRITICAL, true, false],
      ["python3-setuptools-wheel-very-long-name", "", "69.0.3-4.fc40", UpdateSeverity.UNKNOWN, false, false],
      ["tzdata", "2024a-5.fc40", "2024b-1.fc40", UpdateSeverity.UNKNOWN, false, false],
    ]);
    const calls = await t.calls("dnf");
    expect(calls[0]).toEqual(["-q", "makecache"]);
    expect(calls[1]).toEqual(["-q", "check-update"]);
  });

  it("falls back to yum and reads from the cache only when not refreshing", async () => {
    const t = await tools(
      { yum: `case "$*" in *check-update*) ${printFile("check.out")}; exit 100;; *updateinfo*) echo "Loaded plugins: fastestmirror"; exit 0;; esac; exit 1`, rpm },
      { "check.out": CENTOS7_YUM, "rpm.out": "bash.x86_64 4.2.46-34.el7\n" },
    );
    const scan = await scanDnf({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: false });
    expect(scan.run.message).toBe("2 updates, 0 security; metadata not refreshed (refresh disabled); using yum");
    expect((await t.calls("yum"))[0]).toEqual(["-q", "-C", "check-update"]);
  });

  it("says there is nothing when check-update exits 0", async () => {
    const t = await tools({ dnf: "exit 0", rpm });
    const scan = await scanDnf({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run).toMatchObject({ state: SubsystemRunState.RAN, message: "no updates; metadata not refreshed (refresh disabled)" });
  });

  it("fails on a metadata download error, keeping dnf's words", async () => {
    const t = await tools({
      dnf: `echo "Error: Failed to download metadata for repo 'updates': Cannot download repomd.xml: Curl error (6): Couldn't resolve host name" >&2; exit 1`,
    });
    const scan = await scanDnf({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/^dnf check-update failed \(exit status 1\): Error: Failed to download metadata for repo 'updates'/);
  });

  it("notes a failed refresh (rpmdb locked) and still scans the cache", async () => {
    const t = await tools(
      { dnf: `case "$*" in *makecache*) echo "Error: [Errno 11] Resource temporarily unavailable: '/var/lib/dnf/rpmdb_lock.pid'" >&2; exit 1;; *check-update*) ${printFile("check.out")}; exit 100;; esac; exit 1`, rpm },
      { "check.out": FEDORA_DNF5, "rpm.out": "" },
    );
    const scan = await scanDnf({ refresh: true, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.state).toBe(SubsystemRunState.RAN);
    expect(scan.run.message).toMatch(/^2 updates, 0 security; metadata not refreshed: dnf makecache failed \(exit status 1\): .*rpmdb_lock/);
    expect(scan.run.message).toMatch(/no advisory data: dnf updateinfo failed/);
  });

  it("counts garbage it cannot read", async () => {
    const t = await tools({ dnf: `${printFile("check.out")}; exit 100`, rpm }, { "check.out": "\u0000\u0001garbage\nbash.x86_64 not-a-version! updates\n", "rpm.out": "" });
    const scan = await scanDnf({ refresh: false, timeoutMs: 5000, env: t.env(), isRoot: true });
    expect(scan.run.message).toContain("1 unrecognised line in dnf output ignored");
    expect(scan.updates).toEqual([]);
  });

  it("stops a hung dnf at the time limit", async () => {
    const t = await tools({ dnf: "exec sleep 30" });
    const started = Date.now();
    const scan = await scanDnf({ refresh: false, timeoutMs: 1200, env: t.env(true), isRoot: true });
    expect(Date.now() - started).toBeLessThan(8000);
    expect(scan.run.state).toBe(SubsystemRunState.FAILED);
    expect(scan.run.message).toMatch(/^dnf check-update timed out after \ds/);
  });
});

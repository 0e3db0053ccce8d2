import { create } from "@bufbuild/protobuf";
import { PackageChangeKind, PackageRefSchema, PackageResultState } from "@redflag/gen/command_pb";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fakeTools, printFile, removeFakeTools, type FakeTools } from "../../../test/support/fake-tools.ts";
import { createDnfInstaller, dnfReasonFor, parseDnfDuplicates, parseDnfTransaction, rpmSpec } from "./install.ts";
import { NOT_INSTALLED } from "../install-common.ts";
import type { InstallOptions } from "../types.ts";

// `dnf --assumeno upgrade openssl-libs` on Fedora 40 (dnf 4.21).
const DNF4_TRANSACTION = `Last metadata expiration check: 0:02:11 ago on Mon 18 Nov 2024 10:01:02 AM UTC.
Dependencies resolved.
================================================================================
 Package                          Arch    Version              Repository  Size
================================================================================
Upgrading:
 openssl-libs                     x86_64  1:3.2.2-3.fc40       updates    2.3 M
Installing dependencies:
 crypto-policies-scripts-with-a-really-long-name
                                  noarch  20241010-1.git.fc40  updates    112 k
Removing:
 openssl1.1                       x86_64  1:1.1.1w-2.fc40      @fedora    3.8 M
Downgrading:
 ca-certificates                  noarch  2023.2.60-2.fc40     fedora     843 k

Transaction Summary
================================================================================
Install    1 Package
Upgrade    1 Package
Remove     1 Package
Downgrade  1 Package

Total download size: 3.2 M
Operation aborted.
`;

// dnf5 (Fedora 41) shows what an upgrade replaces.
const DNF5_TRANSACTION = `Updating and loading repositories:
Repositories loaded.
Package                    Arch    Version                 Repository      Size
Upgrading:
 curl                      x86_64  8.9.1-3.fc41            updates    793.6 KiB
   replacing curl          x86_64  8.9.1-2.fc41            updates    796.0 KiB
Installing dependencies:
 libnghttp3                x86_64  1.6.0-1.fc41            updates    195.1 KiB

Transaction Summary:
 Installing:         1 package
 Upgrading:          1 package
 Replacing:          1 package
Operation aborted by the user.
`;

describe("parseDnfTransaction", () => {
  it("reads every section of dnf4's table, wrapped rows included", () => {
    expect(parseDnfTransaction(DNF4_TRANSACTION).map((c) => [c.kind, c.name, c.architecture, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "openssl-libs", "x86_64", "", "1:3.2.2-3.fc40"],
      [PackageChangeKind.INSTALL, "crypto-policies-scripts-with-a-really-long-name", "noarch", "", "20241010-1.git.fc40"],
      [PackageChangeKind.REMOVE, "openssl1.1", "x86_64", "1:1.1.1w-2.fc40", ""],
      [PackageChangeKind.DOWNGRADE, "ca-certificates", "noarch", "", "2023.2.60-2.fc40"],
    ]);
  });

  it("takes the replaced version from dnf5", () => {
    expect(parseDnfTransaction(DNF5_TRANSACTION).map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "curl", "8.9.1-2.fc41", "8.9.1-3.fc41"],
      [PackageChangeKind.INSTALL, "libnghttp3", "", "1.6.0-1.fc41"],
    ]);
  });

  it("finds nothing in an error", () => {
    expect(parseDnfTransaction("No match for argument: nosuch\nError: No packages marked for upgrade.\n")).toEqual([]);
  });
});

describe("dnf helpers", () => {
  it("builds specs", () => {
    expect(rpmSpec({ name: "curl", version: "", architecture: "" })).toBe("curl");
    expect(rpmSpec({ name: "openssl-libs", version: "1:3.2.2-3.fc40", architecture: "x86_64" })).toBe("openssl-libs-1:3.2.2-3.fc40.x86_64");
  });

  it("finds the line about one package", () => {
    const out = "No match for argument: nosuch\nError in POSTIN scriptlet in rpm package httpd-2.4.62-1.fc40.x86_64\nError: Unable to find a match: foo bar\n";
    expect(dnfReasonFor("nosuch", out)).toBe("No match for argument: nosuch");
    expect(dnfReasonFor("httpd", out)).toBe("Error in POSTIN scriptlet in rpm package httpd-2.4.62-1.fc40.x86_64");
    expect(dnfReasonFor("bar", out)).toBe("Error: Unable to find a match: foo bar");
    expect(dnfReasonFor("httpd-tools", out)).toBeUndefined();
    expect(dnfReasonFor("nosu", out)).toBeUndefined();
  });
});

describe("dnf installer with fake tools", () => {
  const made: FakeTools[] = [];
  afterAll(() => removeFakeTools(...made));
  const opts = (t: FakeTools, extra: Partial<InstallOptions> = {}): InstallOptions => ({ timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set(), ...extra });
  const ref = (name: string, version = "", architecture = "") => create(PackageRefSchema, { source: "dnf", name, version, architecture });
  // rpm answers from rpm.before until dnf has run a real transaction, then from rpm.after.
  const tools = async (dnf: string, files: Record<string, string>) => {
    const t = await fakeTools("dnf-install", {
      dnf,
      rpm: `if [ -e "$D/ran" ]; then ${printFile("rpm.after")}; else ${printFile("rpm.before")}; fi`,
    }, { "rpm.before": "", "rpm.after": "", ...files });
    made.push(t);
    return t;
  };
  const installer = createDnfInstaller();

  it("simulates with --assumeno, keeps holds out, and fills in installed versions", async () => {
    const t = await tools(`${printFile("tx.out")}; echo "Operation aborted." >&2; exit 1`, {
      "tx.out": DNF4_TRANSACTION,
      "rpm.before": "openssl-libs.x86_64 1:3.2.2-2.fc40\nca-certificates.noarch 2024.2.69-1.fc40\n",
    });
    const sim = await installer.dryRun!([ref("openssl-libs")], opts(t, { holds: new Set(["kernel", "glibc"]) }));
    expect(sim.error).toBeUndefined();
    expect(sim.changes.map((c) => [c.name, c.fromVersion])).toEqual([
      ["openssl-libs", "1:3.2.2-2.fc40"],
      ["crypto-policies-scripts-with-a-really-long-name", ""],
      ["openssl1.1", "1:1.1.1w-2.fc40"],
      ["ca-certificates", "2024.2.69-1.fc40"],
    ]);
    expect((await t.calls("dnf"))[0]).toEqual(["--assumeno", "-C", "--exclude=kernel", "--exclude=glibc", "upgrade", "--", "openssl-libs"]);
  });

  it("fails a simulation dnf refuses", async () => {
    const t = await tools(`echo "No match for argument: nosuch" >&2; echo "Error: No packages marked for upgrade." >&2; exit 1`, {});
    const sim = await installer.dryRun!([ref("nosuch")], opts(t));
    expect(sim.error).toBe("dnf upgrade (simulated) failed (exit status 1): No match for argument: nosuch\nError: No packages marked for upgrade.");
  });

  it("installs, reporting each package from rpm before and after", async () => {
    const t = await tools(`: > "$D/ran"; exit 0`, {
      "rpm.before": "curl.x86_64 8.9.1-2.fc41\nlibcurl.x86_64 8.9.1-2.fc41\n",
      "rpm.after": "curl.x86_64 8.9.1-3.fc41\nlibcurl.x86_64 8.9.1-3.fc41\n",
    });
    const out = await installer.install([ref("curl"), ref("libcurl", "8.9.1-3.fc41", "x86_64")], opts(t, { holds: new Set(["kernel"]) }));
    expect(out.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["curl", PackageResultState.INSTALLED, "8.9.1-2.fc41", "8.9.1-3.fc41"],
      ["libcurl", PackageResultState.INSTALLED, "8.9.1-2.fc41", "8.9.1-3.fc41"],
    ]);
    const calls = await t.calls("dnf");
    expect(calls[0]).toEqual(["-y", "-q", "--exclude=kernel", "upgrade", "--", "curl", "libcurl-8.9.1-3.fc41.x86_64"]);
    // needs-restarting decides the reboot.
    expect(calls[1]).toEqual(["-q", "needs-restarting", "-r"]);
    expect(out.rebootRequired).toBe(false);
  });

  it("reports a failing scriptlet against its package, and the rest as installed", async () => {
    const t = await tools(
      `: > "$D/ran"; echo "Error in POSTIN scriptlet in rpm package httpd-2.4.62-1.fc40.x86_64" >&2; echo "Error: Transaction failed" >&2; exit 1`,
      {
        "rpm.before": "httpd.x86_64 2.4.61-1.fc40\nbash.x86_64 5.2.26-3.fc40\n",
        "rpm.after": "httpd.x86_64 2.4.61-1.fc40\nbash.x86_64 5.2.32-1.fc40\n",
      },
    );
    const out = await installer.install([ref("httpd"), ref("bash")], opts(t));
    expect(out.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["httpd", PackageResultState.FAILED, "Error in POSTIN scriptlet in rpm package httpd-2.4.62-1.fc40.x86_64"],
      ["bash", PackageResultState.INSTALLED, ""],
    ]);
    expect(out.error).toMatch(/^dnf upgrade failed \(exit status 1\)/);
  });

  it("downgrades for a rollback and marks kernels as needing a reboot", async () => {
    const t = await tools(`: > "$D/ran"; exit 0`, { "rpm.before": "kernel-core.x86_64 6.11.7-200.fc40\n", "rpm.after": "kernel-core.x86_64 6.10.12-200.fc40\n" });
    const out = await installer.rollback!(ref("kernel-core", "6.10.12-200.fc40"), opts(t));
    expect(out.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "6.11.7-200.fc40", toVersion: "6.10.12-200.fc40" });
    expect(out.rebootRequired).toBe(true);
    expect((await t.calls("dnf"))[0]).toEqual(["-y", "-q", "downgrade", "--", "kernel-core-6.10.12-200.fc40"]);
  });

  it("never installs a package the host does not have: pinned versions (dnf install) included", async () => {
    const t = await tools(`: > "$D/ran"; exit 0`, { "rpm.before": "curl.x86_64 8.9.1-2.fc41\n", "rpm.after": "curl.x86_64 8.9.1-3.fc41\n" });
    const out = await installer.install([ref("curl", "8.9.1-3.fc41"), ref("nmap", "7.95-1.fc41"), ref("curl", "8.9.1-3.fc41", "i686")], opts(t));
    expect(out.packages.map((p) => [p.name, p.architecture, p.state, p.reason])).toEqual([
      ["curl", "", PackageResultState.INSTALLED, ""],
      ["nmap", "", PackageResultState.SKIPPED, NOT_INSTALLED],
      ["curl", "i686", PackageResultState.SKIPPED, NOT_INSTALLED],
    ]);
    expect((await t.calls("dnf"))[0]).toEqual(["-y", "-q", "install", "--", "curl-8.9.1-3.fc41"]);
    const none = await tools("exit 0", { "rpm.before": "curl.x86_64 8.9.1-2.fc41\n" });
    const back = await installer.rollback!(ref("nmap", "7.90-1.fc41"), opts(none));
    expect(back.packages[0]).toMatchObject({ state: PackageResultState.SKIPPED, reason: NOT_INSTALLED });
    expect(await none.calls("dnf")).toEqual([]);
  });

  it("refuses without root and runs nothing", async () => {
    const t = await tools("exit 0", {});
    const out = await installer.install([ref("curl")], opts(t, { isRoot: false }));
    expect(out.error).toBe("installing with dnf needs root; run the agent as root");
    expect(await t.calls("dnf")).toEqual([]);
  });
});

const dnfTestdata = (name: string) => readFileSync(path.join(import.meta.dirname, "testdata", name), "utf8");
// The layout of `dnf list --showduplicates` as dnf 4 and dnf 5 print it.
const DNF4_DUPLICATES = dnfTestdata("dnf4-list-showduplicates-openssl-libs.txt");
const DNF5_DUPLICATES = dnfTestdata("dnf5-list-showduplicates-curl.txt");

describe("dnf rollback versions", () => {
  it("offers the older versions of the installed architecture, newest first, never newer ones", () => {
    expect(parseDnfDuplicates(DNF4_DUPLICATES, "openssl-libs")).toEqual({
      installed: "1:3.2.2-9.fc41",
      older: [{ version: "1:3.2.2-7.fc41", description: "from fedora" }],
    });
    expect(parseDnfDuplicates(DNF4_DUPLICATES, "openssl-libs", "i686")).toEqual({ installed: "", older: [] });
    expect(parseDnfDuplicates(DNF5_DUPLICATES, "curl")).toEqual({
      installed: "8.9.1-3.fc41",
      older: [
        { version: "8.9.1-2.fc41", description: "from fedora" },
        { version: "8.9.1-1.fc41", description: "from updates-archive" },
      ],
    });
  });

  it("reads a wrapped long name and ignores other packages", () => {
    const text = "Installed Packages\ncrypto-policies-scripts-with-a-really-long-name.noarch\n    20241010-2.fc41   @updates\nAvailable Packages\ncrypto-policies-scripts-with-a-really-long-name.noarch\n    20241010-1.fc41   fedora\ncurl.x86_64  8.0-1.fc41  fedora\n";
    expect(parseDnfDuplicates(text, "crypto-policies-scripts-with-a-really-long-name").older).toEqual([{ version: "20241010-1.fc41", description: "from fedora" }]);
  });

  it("asks dnf from its cache with the name after --, and the version rolls back as listed", async () => {
    const t = await fakeTools(
      "dnf-versions",
      {
        dnf: `case "$*" in *list*) ${printFile("list.out")}; exit 0;; *downgrade*) : > "$D/ran"; exit 0;; esac; exit 1`,
        rpm: `if [ -e "$D/ran" ]; then echo "curl.x86_64 8.9.1-2.fc41"; else echo "curl.x86_64 8.9.1-3.fc41"; fi`,
      },
      { "list.out": DNF5_DUPLICATES },
    );
    try {
      const installer = createDnfInstaller();
      const opts: InstallOptions = { timeoutMs: 10_000, env: t.env(), isRoot: true, holds: new Set() };
      const out = await installer.versions!(create(PackageRefSchema, { source: "dnf", name: "curl" }), opts);
      expect(out.error).toBeUndefined();
      expect(out.versions.map((v) => v.version)).toEqual(["8.9.1-2.fc41", "8.9.1-1.fc41"]);
      expect((await t.calls("dnf"))[0]).toEqual(["-q", "-C", "list", "--showduplicates", "--", "curl"]);
      const back = await installer.rollback!(create(PackageRefSchema, { source: "dnf", name: "curl", version: out.versions[0]!.version }), opts);
      expect(back.packages[0]).toMatchObject({ state: PackageResultState.INSTALLED, fromVersion: "8.9.1-3.fc41", toVersion: "8.9.1-2.fc41" });
      expect((await t.calls("dnf")).find((a) => a.includes("downgrade"))!.slice(-3)).toEqual(["downgrade", "--", "curl-8.9.1-2.fc41"]);
    } finally {
      await removeFakeTools(t);
    }
  });

  it("says the package is not installed when dnf lists nothing, and reports a failing dnf", async () => {
    const t = await fakeTools("dnf-versions-none", { dnf: `case "$*" in *nosuch*) echo "Error: No matching Packages to list" >&2; exit 1;; esac; echo "Cache-only enabled but no cache for 'fedora'" >&2; exit 2` });
    try {
      const opts: InstallOptions = { timeoutMs: 10_000, env: t.env(), isRoot: false, holds: new Set() };
      const none = await createDnfInstaller().versions!(create(PackageRefSchema, { source: "dnf", name: "nosuch" }), opts);
      expect(none).toMatchObject({ installed: "", versions: [] });
      expect(none.error).toBeUndefined();
      const broken = await createDnfInstaller().versions!(create(PackageRefSchema, { source: "dnf", name: "curl" }), opts);
      expect(broken.error).toMatch(/^dnf list --showduplicates failed \(exit status 2\)/);
    } finally {
      await removeFakeTools(t);
    }
  });
});

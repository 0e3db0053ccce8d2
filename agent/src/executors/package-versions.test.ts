import { create } from "@bufbuild/protobuf";
import { AgentConfigSchema, PackageHoldSchema } from "@redflag/gen/common_pb";
import { type Command, CommandOutcome, CommandSchema, ListPackageVersionsSchema, PackageRefSchema, RollbackVersionSchema } from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { createBreakers } from "../breaker.ts";
import { createHeartbeat } from "../heartbeat.ts";
import { silentLogger } from "../log.ts";
import { createSourceLocks, type SourceLocks } from "../source-lock.ts";
import type { Installer } from "../sources/types.ts";
import { defaultExecutors } from "./index.ts";
import { createListPackageVersions } from "./package-versions.ts";
import type { ExecutorContext } from "./types.ts";

// In-memory sources: installed versions and the earlier ones each "tool" keeps.
function source(name: string, init: { installed: Record<string, string>; older: Record<string, string[]>; present?: boolean; rollback?: boolean; lists?: boolean; error?: string }) {
  const asked: string[] = [];
  const installer: Installer = {
    source: name,
    present: async () => init.present ?? true,
    install: async () => ({ packages: [], output: [], rebootRequired: false }),
    ...(init.rollback === false ? {} : { rollback: async () => ({ packages: [], output: [], rebootRequired: false }) }),
    ...(init.lists === false
      ? {}
      : {
          async versions(pkg) {
            asked.push(pkg.name);
            if (init.error) return { installed: "", versions: [], output: [], error: init.error };
            const versions = (init.older[pkg.name] ?? []).map((version) => create(RollbackVersionSchema, { version, description: "from bookworm-security" }));
            return { installed: init.installed[pkg.name] ?? "", versions, output: [] };
          },
        }),
  };
  return { installer, asked };
}

const ref = (source: string, name: string, version = "") => create(PackageRefSchema, { source, name, version });
const list = (...packages: ReturnType<typeof ref>[]): Command["action"] => ({ case: "listPackageVersions", value: create(ListPackageVersionsSchema, { packages }) });

function context(action: Command["action"], extra: { holds?: [string, string][]; locks?: SourceLocks } = {}): ExecutorContext {
  return {
    command: create(CommandSchema, { id: "cmd-1", sequence: 1n, action }),
    signal: new AbortController().signal,
    deadline: Date.now() + 60_000,
    agentConfig: create(AgentConfigSchema, { holds: (extra.holds ?? []).map(([source, name]) => create(PackageHoldSchema, { source, name })) }),
    aptRefresh: false,
    breakers: createBreakers(),
    locks: extra.locks ?? createSourceLocks(),
    heartbeat: createHeartbeat(),
    automatic: false,
    env: process.env,
    logger: silentLogger,
    pins: new Map(),
    installDir: undefined,
    requestRestart: () => {},
  };
}

function setup() {
  const apt = source("apt", { installed: { curl: "7.88.1-10+deb12u14", bash: "5.2.15-2+b8" }, older: { curl: ["7.88.1-10+deb12u5", "7.88.1-10"] } });
  const brew = source("brew", { installed: { wget: "1.24" }, older: {}, rollback: false });
  const winget = source("winget", { installed: {}, older: {}, lists: false });
  const zypper = source("zypper", { installed: {}, older: {}, present: false });
  const dnf = source("dnf", { installed: {}, older: {}, error: "dnf list --showduplicates failed (exit status 1): Cache-only enabled but no cache for 'fedora'" });
  const installers = new Map([apt, brew, winget, zypper, dnf].map((s) => [s.installer.source, s.installer]));
  return { apt, dnf, run: createListPackageVersions({ installers }) };
}

describe("list_package_versions", () => {
  it("is in the agent's executor table", () => {
    expect(defaultExecutors.listPackageVersions).toBeTypeOf("function");
  });

  it("answers each package in order: versions newest first, or why there are none", async () => {
    const { run } = setup();
    const out = await run(context(list(ref("apt", "curl", "ignored"), ref("apt", "bash"), ref("apt", "hello"), ref("brew", "wget"), ref("winget", "Git.Git"), ref("zypper", "vim"))));
    expect(out.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(out.detail?.case).toBe("listPackageVersions");
    const answers = out.detail?.case === "listPackageVersions" ? out.detail.value.packages : [];
    expect(answers.map((a) => [a.package?.source, a.package?.name, a.package?.version, a.installedVersion, a.versions.map((v) => v.version), a.rollbackSupported, a.reason])).toEqual([
      ["apt", "curl", "", "7.88.1-10+deb12u14", ["7.88.1-10+deb12u5", "7.88.1-10"], true, ""],
      ["apt", "bash", "", "5.2.15-2+b8", [], true, "no earlier version of bash is available to go back to"],
      ["apt", "hello", "", "", [], true, "not installed on this host"],
      ["brew", "wget", "", "", [], false, "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one"],
      ["winget", "Git.Git", "", "", [], true, "this agent cannot list the earlier versions of winget packages; name the version to go back to yourself"],
      ["zypper", "vim", "", "", [], false, "zypper is not installed on this host"],
    ]);
    expect(out.message).toMatch(/^curl: 2 earlier versions \(newest 7\.88\.1-10\+deb12u5\); bash: no earlier version/);
  });

  it("fails with the tool's words, and refuses names no tool may see without running anything", async () => {
    const { run, apt } = setup();
    const out = await run(context(list(ref("dnf", "curl"), ref("apt", "-oAPT::Update::Pre-Invoke::=sh"), ref("", "curl"), ref("nix", "curl"))));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    const answers = out.detail?.case === "listPackageVersions" ? out.detail.value.packages : [];
    expect(answers.map((a) => a.reason)).toEqual([
      "dnf list --showduplicates failed (exit status 1): Cache-only enabled but no cache for 'fedora'",
      '"-oAPT::Update::Pre-Invoke::=sh" is not a valid package name',
      "the package source is empty",
      "nix is not a package source this agent knows",
    ]);
    expect(apt.asked).toEqual([]);
  });

  it("offers nothing for a held package, and asks no tool about it", async () => {
    const { run, apt } = setup();
    const out = await run(context(list(ref("apt", "curl")), { holds: [["apt", "curl"]] }));
    const answers = out.detail?.case === "listPackageVersions" ? out.detail.value.packages : [];
    expect(answers[0]).toMatchObject({ versions: [], rollbackSupported: true, reason: "held by the agent config (curl); a held package is not rolled back" });
    expect(apt.asked).toEqual([]);
  });

  it("names the real sources that cannot go back, in words", async () => {
    const out = await createListPackageVersions()(context(list(ref("windows_update", "KB5044284"), ref("brew", "wget"))));
    const answers = out.detail?.case === "listPackageVersions" ? out.detail.value.packages : [];
    expect(answers.map((a) => [a.rollbackSupported, a.reason])).toEqual([
      [false, "Windows Update cannot install an earlier revision of an update; uninstall the update in Windows instead"],
      [false, "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one"],
    ]);
  });

  it("takes 1 to 50 packages", async () => {
    const { run } = setup();
    expect(await run(context(list()))).toMatchObject({ outcome: CommandOutcome.FAILED, message: "list_package_versions names no packages" });
    const many = Array.from({ length: 51 }, (_, i) => ref("apt", `p${i}`));
    expect(await run(context(list(...many)))).toMatchObject({ outcome: CommandOutcome.FAILED, message: "list_package_versions names 51 packages; at most 50" });
  });

  it("reads a source only while no install of it runs", async () => {
    const { run, apt } = setup();
    const locks = createSourceLocks();
    let release!: () => void;
    const install = locks.run("apt", () => new Promise<void>((resolve) => (release = resolve)));
    const listing = run(context(list(ref("apt", "curl")), { locks }));
    await new Promise((resolve) => setImmediate(resolve));
    expect(apt.asked).toEqual([]);
    release();
    await install;
    expect((await listing).outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(apt.asked).toEqual(["curl"]);
  });
});

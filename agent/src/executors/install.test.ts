import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AgentConfigSchema, PackageHoldSchema } from "@redflag/gen/common_pb";
import {
  type Command,
  CommandOutcome,
  CommandSchema,
  ConfirmDependenciesSchema,
  DryRunUpdateSchema,
  InstallUpdatesSchema,
  type PackageChange,
  PackageChangeKind,
  type PackageRef,
  PackageRefSchema,
  PackageResultState,
  PackageUpdateSchema,
  RollbackUpdateSchema,
  SubsystemRunSchema,
  SubsystemRunState,
  ToolOutputSchema,
} from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { createBreakers } from "../breaker.ts";
import { createHeartbeat } from "../heartbeat.ts";
import { packageChange, packageResult } from "../sources/install-common.ts";
import type { Installer, InstallOptions, Scanner } from "../sources/types.ts";
import { silentLogger } from "../log.ts";
import { createSourceLocks, type SourceLocks } from "../source-lock.ts";
import {
  createConfirmDependencies,
  createDryRunUpdate,
  createInstallUpdates,
  createRollbackUpdate,
  holdMatcher,
  type InstallDeps,
} from "./install.ts";
import type { ExecutorContext } from "./types.ts";

// An in-memory package source: `installed` and `available` versions, a dependency it drags in,
// and a log of every call with the options it was given. It behaves like the real installers:
// per-package results from the state before and after.
function memorySource(source: string, init: { installed: Record<string, string>; available: Record<string, string>; dependency?: [string, string] }) {
  const installed = { ...init.installed };
  const calls: { method: string; refs: string[]; opts: InstallOptions }[] = [];
  const changesFor = (refs: readonly PackageRef[]): PackageChange[] => {
    const changes = refs.map((r) =>
      packageChange(installed[r.name] ? PackageChangeKind.UPGRADE : PackageChangeKind.INSTALL, source, r.name, {
        from: installed[r.name],
        to: r.version || init.available[r.name],
      }),
    );
    if (init.dependency && refs.some((r) => r.name === init.dependency![0])) {
      changes.push(packageChange(PackageChangeKind.INSTALL, source, init.dependency[1], { to: "1.0" }));
    }
    return changes;
  };
  const installer: Installer = {
    source,
    present: async () => true,
    async dryRun(refs, opts) {
      calls.push({ method: "dryRun", refs: refs.map((r) => r.name), opts });
      const unknown = refs.find((r) => !init.available[r.name] && !installed[r.name]);
      if (unknown) return { changes: [], output: [], error: `Unable to locate package ${unknown.name}` };
      return { changes: changesFor(refs), output: [create(ToolOutputSchema, { argv: [source, "simulate"], duration: durationFromMs(5) })] };
    },
    async install(refs, opts) {
      calls.push({ method: "install", refs: refs.map((r) => r.name), opts });
      const packages = refs.map((r) => {
        const from = installed[r.name];
        const to = r.version || init.available[r.name];
        if (!to) return packageResult(r, PackageResultState.FAILED, { from, reason: `Unable to locate package ${r.name}` });
        installed[r.name] = to;
        return packageResult(r, PackageResultState.INSTALLED, { from, to });
      });
      return { packages, output: [], rebootRequired: refs.some((r) => r.name.startsWith("linux-image")) };
    },
    async rollback(ref, opts) {
      calls.push({ method: "rollback", refs: [`${ref.name}=${ref.version}`], opts });
      const from = installed[ref.name];
      installed[ref.name] = ref.version;
      return { packages: [packageResult(ref, PackageResultState.INSTALLED, { from, to: ref.version })], output: [], rebootRequired: false };
    },
  };
  const scanner: Scanner = {
    name: source,
    async scan() {
      const updates = Object.entries(init.available)
        .filter(([name, version]) => installed[name] && installed[name] !== version)
        .map(([name, version]) => create(PackageUpdateSchema, { source, name, currentVersion: installed[name], availableVersion: version }));
      return { run: create(SubsystemRunSchema, { subsystem: source, state: SubsystemRunState.RAN }), updates };
    },
  };
  return { installer, scanner, installed, calls };
}

const ref = (source: string, name: string, version = "") => create(PackageRefSchema, { source, name, version });

function context(action: Command["action"], extra: { holds?: [string, string, string?][]; locks?: SourceLocks; deadlineMs?: number } = {}): ExecutorContext {
  return {
    command: create(CommandSchema, { id: "cmd-1", sequence: 1n, action }),
    signal: new AbortController().signal,
    deadline: Date.now() + (extra.deadlineMs ?? 60_000),
    agentConfig: create(AgentConfigSchema, {
      holds: (extra.holds ?? []).map(([source, name, reason]) => create(PackageHoldSchema, { source, name, reason: reason ?? "" })),
    }),
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
  const apt = memorySource("apt", {
    installed: { curl: "7.88.1-1", openssl: "3.0.1-1", "linux-image-amd64": "6.1.1", nginx: "1.22-1" },
    available: { curl: "7.88.1-2", openssl: "3.0.2-1", "linux-image-amd64": "6.1.2", nginx: "1.22-2", "libnginx-new": "1.0", "netcat-traditional": "1.10-47" },
    dependency: ["nginx", "libnginx-new"],
  });
  const dnf = memorySource("dnf", { installed: { bash: "5.2-1" }, available: { bash: "5.2-2" } });
  const sources = { apt, dnf };
  const deps: InstallDeps = {
    installers: new Map([[apt.installer.source, apt.installer], [dnf.installer.source, dnf.installer]]),
    scanner: (name) => (sources as Record<string, { scanner: Scanner }>)[name]?.scanner,
  };
  return { apt, dnf, deps };
}

describe("holdMatcher", () => {
  const holds = holdMatcher([
    create(PackageHoldSchema, { source: "apt", name: "linux-image-*", reason: "kernel freeze" }),
    create(PackageHoldSchema, { source: "*", name: "postgresql-16" }),
    create(PackageHoldSchema, { source: "", name: "a.b" }),
  ]);
  it.each([
    ["apt", "linux-image-6.1.0-28-amd64", "held by the agent config (linux-image-*): kernel freeze"],
    ["dnf", "linux-image-amd64", undefined],
    ["dnf", "postgresql-16", "held by the agent config (postgresql-16)"],
    ["apt", "postgresql-16-extra", undefined],
    ["apt", "a.b", "held by the agent config (a.b)"],
    ["apt", "aXb", undefined],
  ])("%s/%s → %s", (source, name, reason) => {
    expect(holds.reason(source, name)).toBe(reason);
  });
  it("hands installers the exact names only", () => {
    expect(holds.exactNames("apt")).toEqual(new Set(["postgresql-16", "a.b"]));
  });
});

describe("install_updates", () => {
  const install = (packages: PackageRef[], sources: string[] = []) => ({ case: "installUpdates" as const, value: create(InstallUpdatesSchema, { packages, sources }) });

  it("installs named packages per source and reports each one", async () => {
    const { apt, dnf, deps } = setup();
    const out = await createInstallUpdates(deps)(context(install([ref("apt", "curl"), ref("dnf", "bash"), ref("apt", "linux-image-amd64")])));
    expect(out.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(out.message).toBe("installed 3, failed 0, skipped 0; a reboot is required");
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    expect(out.detail.value.packages.map((p) => [p.source, p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["apt", "curl", PackageResultState.INSTALLED, "7.88.1-1", "7.88.1-2"],
      ["apt", "linux-image-amd64", PackageResultState.INSTALLED, "6.1.1", "6.1.2"],
      ["dnf", "bash", PackageResultState.INSTALLED, "5.2-1", "5.2-2"],
    ]);
    expect(out.detail.value.rebootRequired).toBe(true);
    // Simulated first, then installed, one source at a time.
    expect(apt.calls.map((c) => [c.method, c.refs])).toEqual([["dryRun", ["curl", "linux-image-amd64"]], ["install", ["curl", "linux-image-amd64"]]]);
    expect(dnf.calls.map((c) => c.method)).toEqual(["dryRun", "install"]);
    expect(apt.calls[1]!.opts.timeoutMs).toBeGreaterThan(50_000);
  });

  it("starts no package at or after not_after (the window's end) and reports the ones left as skipped (injected clock)", async () => {
    const { apt, dnf, deps } = setup();
    // Each install takes ten minutes of the clock; the window ends 15 minutes in.
    let clock = Date.parse("2026-06-13T23:30:00Z");
    const timed = { ...apt.installer, install: async (refs: readonly PackageRef[], opts: InstallOptions) => ((clock += 600_000), apt.installer.install(refs, opts)) };
    const bounded = { ...deps, installers: new Map([["apt", timed], ["dnf", dnf.installer]]), now: () => clock };
    const action = { case: "installUpdates" as const, value: create(InstallUpdatesSchema, { packages: [ref("apt", "curl"), ref("apt", "openssl"), ref("apt", "nginx"), ref("dnf", "bash")], notAfter: timestampFromMs(Date.parse("2026-06-13T23:45:00Z")) }) };
    const out = await createInstallUpdates(bounded)(context(action));
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    const late = "not started: the maintenance window ended at 2026-06-13T23:45:00.000Z";
    expect(out.detail.value.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["curl", PackageResultState.INSTALLED, ""],
      ["openssl", PackageResultState.INSTALLED, ""],
      ["nginx", PackageResultState.SKIPPED, late],
      ["bash", PackageResultState.SKIPPED, late],
    ]);
    // One package per install call once a window bounds the command; nothing after its end.
    expect(apt.calls.filter((c) => c.method === "dryRun").map((c) => c.refs)).toEqual([["curl"], ["openssl"]]);
    expect(dnf.calls).toEqual([]);
    expect(out.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(out.message).toBe(`installed 2, failed 0, skipped 2; 2 packages ${late}`);

    // Delivered after the window: nothing starts, also for "everything pending in apt".
    const everything = { case: "installUpdates" as const, value: create(InstallUpdatesSchema, { sources: ["apt"], notAfter: timestampFromMs(clock - 1) }) };
    const none = await createInstallUpdates(bounded)(context(everything));
    expect(none.message).toMatch(/^installed 0, failed 0, skipped 2; 2 packages not started: the maintenance window ended at /);
    expect(apt.calls.filter((c) => c.method === "install")).toHaveLength(2);

    // The window ends while the package is simulated: it is not started either.
    const slow = { ...apt.installer, dryRun: async (refs: readonly PackageRef[], opts: InstallOptions) => ((clock += 1_200_000), apt.installer.dryRun!(refs, opts)) };
    const during = { ...deps, installers: new Map([["apt", slow]]), now: () => clock };
    const soon = { case: "installUpdates" as const, value: create(InstallUpdatesSchema, { packages: [ref("apt", "nginx")], notAfter: timestampFromMs(clock + 600_000) }) };
    const skipped = await createInstallUpdates(during)(context(soon));
    expect(skipped.message).toMatch(/^installed 0, failed 0, skipped 1; 1 package not started/);
    expect(apt.calls.filter((c) => c.method === "install")).toHaveLength(2);
  });

  it("skips held packages, fails invalid names, and installs the rest", async () => {
    const { apt, deps } = setup();
    const out = await createInstallUpdates(deps)(
      context(install([ref("apt", "curl"), ref("apt", "linux-image-amd64"), ref("apt", "--force-yes"), ref("apt", "a;rm -rf /"), ref("apt", "curl", "$(id)")]), {
        holds: [["apt", "linux-image-*", "kernel freeze until Friday"]],
      }),
    );
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    expect(out.detail.value.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["linux-image-amd64", PackageResultState.SKIPPED, "held by the agent config (linux-image-*): kernel freeze until Friday"],
      ["--force-yes", PackageResultState.FAILED, '"--force-yes" is not a valid package name'],
      ["a;rm -rf /", PackageResultState.FAILED, '"a;rm -rf /" is not a valid package name'],
      ["curl", PackageResultState.FAILED, '"$(id)" is not a valid version of curl'],
      ["curl", PackageResultState.INSTALLED, ""],
    ]);
    expect(apt.calls.flatMap((c) => c.refs)).toEqual(["curl", "curl"]);
    expect(out.message).toMatch(/^installed 1, failed 3, skipped 1; apt\/--force-yes: "--force-yes" is not a valid package name/);
  });

  it("fails names a source's tool would read as a file, a URL, a group or a repository, before any tool runs", async () => {
    const { apt, dnf, deps } = setup();
    const out = await createInstallUpdates(deps)(
      context(install([ref("apt", "tmp/evil.deb"), ref("apt", "curl/sid"), ref("dnf", "https://evil.example/bash-9.rpm"), ref("dnf", "@development-tools")])),
    );
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    expect(out.detail.value.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["tmp/evil.deb", PackageResultState.FAILED, '"tmp/evil.deb" is not a valid apt package name (no paths, URLs, groups or repositories)'],
      ["curl/sid", PackageResultState.FAILED, '"curl/sid" is not a valid apt package name (no paths, URLs, groups or repositories)'],
      ["https://evil.example/bash-9.rpm", PackageResultState.FAILED, '"https://evil.example/bash-9.rpm" is not a valid dnf package name (no paths, URLs, groups or repositories)'],
      ["@development-tools", PackageResultState.FAILED, '"@development-tools" is not a valid dnf package name (no paths, URLs, groups or repositories)'],
    ]);
    expect([...apt.calls, ...dnf.calls]).toEqual([]);
  });

  it("refuses a transaction that would change a held package as a dependency", async () => {
    const { apt, deps } = setup();
    const out = await createInstallUpdates(deps)(context(install([ref("apt", "nginx")]), { holds: [["apt", "libnginx-new", "pinned by ops"]] }));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    expect(out.detail.value.packages[0]).toMatchObject({
      name: "nginx",
      state: PackageResultState.FAILED,
      reason: "refused: the transaction would install held package libnginx-new (held by the agent config (libnginx-new): pinned by ops)",
    });
    expect(apt.calls.map((c) => c.method)).toEqual(["dryRun"]);
    expect(apt.installed.nginx).toBe("1.22-1");
  });

  it("installs everything pending of a source except holds, handing the installer an explicit list", async () => {
    const { apt, deps } = setup();
    const out = await createInstallUpdates(deps)(context(install([], ["apt"]), { holds: [["*", "openssl"]] }));
    if (out.detail?.case !== "installUpdates") throw new Error("no detail");
    expect(out.detail.value.packages.map((p) => [p.name, p.state])).toEqual([
      ["openssl", PackageResultState.SKIPPED],
      ["curl", PackageResultState.INSTALLED],
      ["linux-image-amd64", PackageResultState.INSTALLED],
      ["nginx", PackageResultState.INSTALLED],
    ]);
    expect(apt.calls.find((c) => c.method === "install")!.refs).toEqual(["curl", "linux-image-amd64", "nginx"]);
    expect(apt.calls.find((c) => c.method === "install")!.opts.holds).toEqual(new Set(["openssl"]));
    expect(apt.installed.openssl).toBe("3.0.1-1");
  });

  it("fails sources this agent or host does not have, and an empty request", async () => {
    const { deps } = setup();
    const missing = await createInstallUpdates(deps)(context(install([ref("portage", "vim")])));
    expect(missing).toMatchObject({ outcome: CommandOutcome.FAILED });
    expect(missing.message).toContain("portage/vim: portage is not a package source this agent can install from");
    const empty = await createInstallUpdates(deps)(context(install([])));
    expect(empty).toEqual({ outcome: CommandOutcome.FAILED, message: "install_updates names no packages and no sources; nothing was installed" });
  });

  it("waits for a scan of the same source to finish before it installs", async () => {
    const { apt, deps } = setup();
    const locks = createSourceLocks();
    let release!: () => void;
    const scanning = locks.run("apt", () => new Promise<void>((resolve) => (release = resolve)));
    const installing = createInstallUpdates(deps)(context(install([ref("apt", "curl")]), { locks }));
    await new Promise((r) => setTimeout(r, 50));
    expect(apt.calls).toEqual([]);
    release();
    await scanning;
    expect((await installing).outcome).toBe(CommandOutcome.SUCCEEDED);
  });
});

describe("dry_run_update and confirm_dependencies", () => {
  const dryRun = (packages: PackageRef[]) => ({ case: "dryRunUpdate" as const, value: create(DryRunUpdateSchema, { packages }) });
  const confirm = (changes: PackageChange[]) => ({ case: "confirmDependencies" as const, value: create(ConfirmDependenciesSchema, { dryRunCommandId: "dry-1", changes }) });

  it("reports every change, new dependencies included, and installs exactly that set on confirm", async () => {
    const { apt, deps } = setup();
    const sim = await createDryRunUpdate(deps)(context(dryRun([ref("apt", "nginx")])));
    expect(sim.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(sim.message).toBe("2 packages would change: 1 upgrade, 1 install");
    if (sim.detail?.case !== "dryRunUpdate") throw new Error("no detail");
    const changes = sim.detail.value.changes;
    expect(changes.map((c) => [c.kind, c.name, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "nginx", "1.22-2"],
      [PackageChangeKind.INSTALL, "libnginx-new", "1.0"],
    ]);
    expect(apt.installed.nginx).toBe("1.22-1");

    const done = await createConfirmDependencies(deps)(context(confirm(changes)));
    expect(done.outcome).toBe(CommandOutcome.SUCCEEDED);
    if (done.detail?.case !== "confirmDependencies") throw new Error("no detail");
    expect(done.detail.value.packages.map((p) => [p.name, p.state, p.toVersion])).toEqual([
      ["nginx", PackageResultState.INSTALLED, "1.22-2"],
      ["libnginx-new", PackageResultState.INSTALLED, "1.0"],
    ]);
    // Re-simulated with the exact versions, the new package checked to be one the upgrade
    // pulls in, then installed with them (the new one allowed as that dependency only).
    expect(apt.calls.slice(1).map((c) => [c.method, c.refs])).toEqual([
      ["dryRun", ["nginx", "libnginx-new"]],
      ["dryRun", ["nginx"]],
      ["install", ["nginx", "libnginx-new"]],
    ]);
    expect([...(apt.calls.at(-1)!.opts.newPackages ?? [])]).toEqual(["libnginx-new"]);
  });

  it("refuses to confirm a new package no update in the set needs, though the set simulates as itself", async () => {
    const { apt, deps } = setup();
    // What an operator could send before: a real upgrade and, riding along, a package the host
    // does not have. Simulated together they are exactly that set.
    const smuggled = [
      packageChange(PackageChangeKind.UPGRADE, "apt", "curl", { from: "7.88.1-1", to: "7.88.1-2" }),
      packageChange(PackageChangeKind.INSTALL, "apt", "netcat-traditional", { to: "1.10-47" }),
    ];
    const out = await createConfirmDependencies(deps)(context(confirm(smuggled)));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    expect(out.message).toContain(
      "refused: netcat-traditional would be new on this host, and no update in the set needs it; RedFlag installs new packages only as dependencies of an update",
    );
    expect(apt.calls.map((c) => c.method)).toEqual(["dryRun", "dryRun"]);
    expect(apt.installed["netcat-traditional"]).toBeUndefined();

    const alone = await createConfirmDependencies(deps)(context(confirm([smuggled[1]!])));
    expect(alone.outcome).toBe(CommandOutcome.FAILED);
    expect(alone.message).toContain("refused: netcat-traditional would be new on this host");
    expect(apt.calls.map((c) => c.method)).toEqual(["dryRun", "dryRun", "dryRun"]);
  });

  it("refuses to confirm when the host would now do something else", async () => {
    const { apt, deps } = setup();
    const stale = [packageChange(PackageChangeKind.UPGRADE, "apt", "nginx", { from: "1.22-1", to: "1.22-2" })];
    const out = await createConfirmDependencies(deps)(context(confirm(stale)));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    expect(out.message).toContain("the changes differ from the confirmed dry run (now also install libnginx-new 1.0); nothing was installed, run a new dry run");
    expect(apt.calls.map((c) => c.method)).toEqual(["dryRun"]);
  });

  it("refuses to confirm a set that touches a hold, and bad entries, before running anything", async () => {
    const { apt, deps } = setup();
    const held = await createConfirmDependencies(deps)(
      context(confirm([packageChange(PackageChangeKind.UPGRADE, "apt", "curl", { to: "7.88.1-2" })]), { holds: [["apt", "curl"]] }),
    );
    expect(held.message).toBe("installed 0, failed 1, skipped 0; apt/curl: refused: curl is held by the agent config (curl)");
    const bad = await createConfirmDependencies(deps)(context(confirm([packageChange(PackageChangeKind.UPGRADE, "apt", "curl", { to: "" })])));
    expect(bad).toEqual({ outcome: CommandOutcome.FAILED, message: "nothing was installed: apt/curl: the change has no target version" });
    const empty = await createConfirmDependencies(deps)(context(confirm([])));
    expect(empty.message).toBe("confirm_dependencies carries no changes of dry run dry-1");
    expect(apt.calls).toEqual([]);
  });

  it("says which packages a dry run cannot simulate and which holds an install would hit", async () => {
    const { deps } = setup();
    const out = await createDryRunUpdate(deps)(context(dryRun([ref("apt", "nosuch"), ref("apt", "nginx")]), { holds: [["apt", "libnginx-new"]] }));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    expect(out.message).toBe("no package would change; apt: Unable to locate package nosuch");
    const held = await createDryRunUpdate(deps)(context(dryRun([ref("apt", "nginx")]), { holds: [["apt", "libnginx-new"]] }));
    expect(held.message).toBe(
      "2 packages would change: 1 upgrade, 1 install; apt/libnginx-new would install but is held by the agent config (libnginx-new); an install would be refused",
    );
  });
});

describe("rollback_update", () => {
  const rollback = (pkg: PackageRef, targetVersion: string) => ({ case: "rollbackUpdate" as const, value: create(RollbackUpdateSchema, { package: pkg, targetVersion }) });

  it("installs the earlier version", async () => {
    const { apt, deps } = setup();
    const out = await createRollbackUpdate(deps)(context(rollback(ref("apt", "curl"), "7.88.1-0")));
    expect(out).toMatchObject({ outcome: CommandOutcome.SUCCEEDED, message: "rolled back 1, failed 0, skipped 0" });
    expect(apt.installed.curl).toBe("7.88.1-0");
  });

  it("says clearly when a source cannot go back, and never touches a held package", async () => {
    const { deps } = setup();
    const { rollback: _, ...withoutRollback } = setup().dnf.installer;
    const noRollback: InstallDeps = { ...deps, installers: new Map([["dnf", withoutRollback as Installer]]) };
    const out = await createRollbackUpdate(noRollback)(context(rollback(ref("dnf", "bash"), "5.1-1")));
    expect(out.outcome).toBe(CommandOutcome.FAILED);
    expect(out.message).toContain("rollback is not supported for dnf: it cannot install an earlier version");

    const { apt, deps: d2 } = setup();
    const held = await createRollbackUpdate(d2)(context(rollback(ref("apt", "curl"), "7.0"), { holds: [["apt", "curl", "vendor pin"]] }));
    expect(held.outcome).toBe(CommandOutcome.FAILED);
    expect(held.message).toContain("held by the agent config (curl): vendor pin");
    expect(apt.calls).toEqual([]);

    const noVersion = await createRollbackUpdate(d2)(context(rollback(ref("apt", "curl"), "")));
    expect(noVersion.message).toContain("no target version to roll back to");
  });

  it("takes only a version of the form list_package_versions reports: never an option, never overlong", async () => {
    const { apt, deps } = setup();
    for (const version of ["--reinstall", "-1", "1 2", `1${"0".repeat(128)}`, "1.0;rm"]) {
      const out = await createRollbackUpdate(deps)(context(rollback(ref("apt", "curl"), version)));
      expect(out.outcome, version).toBe(CommandOutcome.FAILED);
      expect(out.message, version).toMatch(/is not a valid version of curl/);
    }
    expect(apt.calls).toEqual([]);
  });
});

import { CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import { PackageChangeKind, PackageResultState } from "@redflag/gen/command_pb";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { createFakeSnap } from "./support/fake-snap.ts";
import { run } from "./support/processes.ts";

// The operator's patch flow, end to end: a real control plane, the real `redflag` CLI and a
// real agent process on a host whose apt and snap are stateful fakes. Dry run across both
// sources, confirm exactly that set, then install more, and read the per-package outcome from
// the stored results.
// Installing with apt needs root; these machines run the tests as root.
describe.runIf(process.getuid?.() === 0)("install flow: dry run → confirm → install", () => {
  let cp: TestControlPlane;
  let root: string;
  let apt: FakeApt;
  let snap: Awaited<ReturnType<typeof createFakeSnap>>;
  let agentId: string;
  let env: Record<string, string>;
  const stateDir = () => path.join(root, "agent");

  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-install-"));
    apt = await createFakeApt(root, {
      installed: ["curl amd64 7.88.1-10+deb12u14", "nginx amd64 1.22.1-9", "broken-pkg amd64 1.0-1", "base-files amd64 12.4+deb12u11"],
      available: [
        "curl amd64 7.88.1-10+deb12u15 oldstable-security",
        "nginx amd64 1.22.1-9+deb12u2 oldstable-security",
        "libnginx-mod-new amd64 1.22.1-9+deb12u2 oldstable",
        "broken-pkg amd64 1.1-1 oldstable",
        "base-files amd64 12.4+deb12u15 oldstable",
      ],
    });
    snap = await createFakeSnap(root, {
      installed: ["firefox 131.0.3-1 5187", "lxd 5.21.2-2f4ba6b 30131"],
      available: ["firefox 132.0.2-1 5273", "lxd 5.21.2-2f4ba6b 30131"],
    });
    env = {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      PATH: `${apt.bin}:${process.env.PATH}`,
    };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir()], { env });
    expect(reg.code, reg.stderr).toBe(0);
    agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  const cli = async (...args: string[]) => {
    const out = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);
    expect(out.code, out.stderr).toBe(0);
    return out.stdout;
  };
  const queue = async (...args: string[]) => {
    const out = JSON.parse(await cli("--json", "commands", "queue", "--agent", agentId, ...args)) as { command: { id: string } };
    return out.command.id;
  };
  const agentRunsOnce = async () => {
    const out = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir()], { env, timeoutMs: 60_000 });
    expect(out.code, out.stderr).toBe(0);
  };
  const stored = async (id: string): Promise<CommandInfo> => (await cp.admin.commands.getCommand({ id })).command!;

  it("scans, previews nginx with its new dependency, installs exactly that, then reports a failing package", async () => {
    const scan = await queue("--type", "scan_updates", "--subsystem", "apt", "--subsystem", "snap");
    await agentRunsOnce();
    const scanned = await stored(scan);
    expect(scanned.state).toBe(CommandState.SUCCEEDED);
    expect(scanned.result?.message).toMatch(/^found 5 updates, 2 security/);
    const pending = async () => (await cp.admin.fleet.getAgent({ agentId })).agent!.pendingUpdateCount;
    expect(await pending()).toBe(5);

    const dryRun = await queue("--type", "dry_run_update", "--package", "apt:nginx", "--package", "snap:firefox");
    await agentRunsOnce();
    const preview = await stored(dryRun);
    expect(preview.state).toBe(CommandState.SUCCEEDED);
    expect(preview.result?.message).toBe("3 packages would change: 2 upgrades, 1 install");
    if (preview.result?.detail.case !== "dryRunUpdate") throw new Error("no dry-run detail");
    expect(preview.result.detail.value.changes.map((c) => [c.kind, c.name, c.fromVersion, c.toVersion])).toEqual([
      [PackageChangeKind.UPGRADE, "nginx", "1.22.1-9", "1.22.1-9+deb12u2"],
      [PackageChangeKind.INSTALL, "libnginx-mod-new", "", "1.22.1-9+deb12u2"],
      [PackageChangeKind.UPGRADE, "firefox", "131.0.3-1", "132.0.2-1"],
    ]);
    // A preview changes nothing.
    expect((await apt.installed()).get("nginx")).toBe("1.22.1-9");
    expect((await snap.installed()).get("firefox")).toBe("131.0.3-1");

    const confirm = await queue("--type", "confirm_dependencies", "--from-dry-run", dryRun);
    await agentRunsOnce();
    const confirmed = await stored(confirm);
    expect(confirmed.state, confirmed.result?.message).toBe(CommandState.SUCCEEDED);
    if (confirmed.result?.detail.case !== "confirmDependencies") throw new Error("no confirm detail");
    expect(confirmed.result.detail.value.packages.map((p) => [p.name, p.state, p.fromVersion, p.toVersion])).toEqual([
      ["nginx", PackageResultState.INSTALLED, "1.22.1-9", "1.22.1-9+deb12u2"],
      ["libnginx-mod-new", PackageResultState.INSTALLED, "", "1.22.1-9+deb12u2"],
      ["firefox", PackageResultState.INSTALLED, "131.0.3-1", "132.0.2-1"],
    ]);
    expect((await snap.installed()).get("firefox")).toBe("132.0.2-1");
    // The agent rescanned apt and snap after installing: the fleet view lists neither nginx nor firefox.
    expect(await pending()).toBe(3);
    const now = await apt.installed();
    expect([now.get("nginx"), now.get("libnginx-mod-new")]).toEqual(["1.22.1-9+deb12u2", "1.22.1-9+deb12u2"]);
    // Installed with the exact versions of the dry run, through argv, after a fresh simulation,
    // and one of the upgrade alone, which must pull in the new package by itself.
    const log = await apt.argvLog();
    expect(log.at(-3)).toMatch(/^-s .* install --allow-downgrades -- nginx:amd64=1\.22\.1-9\+deb12u2 libnginx-mod-new:amd64=1\.22\.1-9\+deb12u2$/);
    expect(log.at(-2)).toMatch(/^-s .* install --allow-downgrades -- nginx:amd64=1\.22\.1-9\+deb12u2$/);
    expect(log.at(-1)).toMatch(/^install -y -q .* --allow-downgrades -- nginx:amd64=1\.22\.1-9\+deb12u2 libnginx-mod-new:amd64=1\.22\.1-9\+deb12u2$/);

    // The same dry run cannot be confirmed twice: the host has moved on.
    const again = await queue("--type", "confirm_dependencies", "--from-dry-run", dryRun);
    await agentRunsOnce();
    const refused = await stored(again);
    expect(refused.state).toBe(CommandState.FAILED);
    expect(refused.result?.message).toContain("the changes differ from the confirmed dry run");

    const install = await queue("--type", "install_updates", "--package", "apt:curl", "--package", "apt:broken-pkg");
    await agentRunsOnce();
    const installed = await stored(install);
    expect(installed.state).toBe(CommandState.FAILED);
    if (installed.result?.detail.case !== "installUpdates") throw new Error("no install detail");
    expect(installed.result.detail.value.packages.map((p) => [p.name, p.state, p.toVersion, p.reason])).toEqual([
      ["curl", PackageResultState.INSTALLED, "7.88.1-10+deb12u15", ""],
      ["broken-pkg", PackageResultState.FAILED, "1.0-1", "dpkg: error processing package broken-pkg (--configure):"],
    ]);
    expect(installed.result.message).toBe("installed 1, failed 1, skipped 0; apt/broken-pkg: dpkg: error processing package broken-pkg (--configure):");
    const output = installed.result.detail.value.output.at(-1)!;
    expect(output.exitCode).toBe(100);
    expect(output.stderrTail).toContain("E: Sub-process /usr/bin/dpkg returned an error code (1)");

    // The CLI shows the per-package outcome to a person.
    const shown = await cli("commands", "get", install);
    expect(shown).toMatch(/curl\s.*installed/i);
    expect(shown).toMatch(/broken-pkg\s.*failed\s+dpkg: error processing/i);

    // Everything pending that is left: base-files (broken-pkg fails again).
    const rest = await queue("--type", "install_updates", "--source", "apt");
    await agentRunsOnce();
    const all = await stored(rest);
    if (all.result?.detail.case !== "installUpdates") throw new Error("no install detail");
    expect(all.result.detail.value.packages.map((p) => [p.name, p.state])).toEqual([
      ["broken-pkg", PackageResultState.FAILED],
      ["base-files", PackageResultState.INSTALLED],
    ]);
    expect(await pending()).toBe(1);
  });
});

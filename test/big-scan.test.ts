import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandState } from "@redflag/gen/command_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerAgent, runAgent, type RunOptions } from "../agent/src/index.ts";
import { silentLogger } from "../agent/src/log.ts";
import { openAutoScans } from "../agent/src/state/auto-scans.ts";
import { openJournal } from "../agent/src/state/journal.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { availableBackends, freshDatabase } from "../control-plane/test/support/database.ts";
import { run } from "./support/processes.ts";

// A host with thousands of pending updates (issue 13, item 2), through the agent's real scanner,
// executor and reporting against a real control plane: the scan goes in parts of 1,000, is
// applied over several calls, and arrives whole; the control plane keeps answering meanwhile. apt is a stand-in that lists
// the updates (no real host here has thousands); the per-scan limit is lowered so the scans stay
// a few thousand updates.
const MAX_SCAN = 6000;

describe.each(availableBackends)("a big scan from a real agent on %s", (backend) => {
  let cp: TestControlPlane;
  let root: string;
  let stateDir: string;
  let listing: string;
  let agentId: string;
  let options: RunOptions;
  let updates: ReturnType<typeof createClient<typeof UpdateService>>;

  // What `apt list --upgradable` prints: `count` packages, `changed` of them offered in 3.0.
  const list = async (count: number, changed: string[] = []) => {
    const lines = Array.from({ length: count }, (_, i) => {
      const name = `pkg-${String(i).padStart(5, "0")}`;
      return `${name}/bookworm ${changed.includes(name) ? "3.0" : "2.0"} amd64 [upgradable from: 1.0]`;
    });
    await writeFile(listing, `Listing...\n${lines.join("\n")}\n`);
  };

  beforeAll(async () => {
    // Agents poll every second: a scheduled scan is reported at the start of the next cycle. The
    // lowest per-call limit: a call applies at most 1,000 updates, so a scan takes several.
    cp = await startTestControlPlane(
      { REDFLAG_MAX_SCAN_UPDATES: String(MAX_SCAN), REDFLAG_MAX_REPORT_UPDATES: "1000", REDFLAG_POLL_INTERVAL: "1s" },
      { db: await freshDatabase({ backend }), port: 0 },
    );
    updates = createClient(
      UpdateService,
      createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }),
    );
    root = await mkdtemp(path.join(tmpdir(), "rf-big-"));
    stateDir = path.join(root, "state");
    listing = path.join(root, "upgradable.txt");
    const bin = path.join(root, "bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "apt"), `#!/bin/sh\n[ "$1" = list ] || exit 100\nexec /bin/cat '${listing}'\n`);
    await chmod(path.join(bin, "apt"), 0o755);
    const seed = randomBytes(8).toString("hex");
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    ({ agentId } = await registerAgent({ stateDir, serverUrl: cp.url, token: secret, machineIdSeed: seed, logger: silentLogger }));
    options = {
      stateDir,
      machineIdSeed: seed,
      aptRefresh: false,
      longPollSeconds: 0,
      logger: silentLogger,
      // Only the stand-in: no apt-cache (no sizes) and none of the other package tools.
      env: { ...process.env, PATH: bin },
      timing: { backoffBaseMs: 10, backoffCapMs: 50 },
    };
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  const scanCommand = async () =>
    (await cp.admin.commands.createCommand({ agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } })).command!.id;
  const view = async () =>
    (await cp.app.db.prisma.packageUpdate.findMany({ where: { agentId }, select: { name: true, availableVersion: true } })).length;
  // Nothing left to send, nothing left staged.
  const settled = async () => ({
    journal: (await openJournal(stateDir, { readOnly: true })).pending().length,
    reports: (await openAutoScans(stateDir)).pending().length,
    parts: (await readdir(path.join(stateDir, "scan-parts"))).length,
    staged: await cp.app.db.prisma.stagedUpdate.count(),
  });
  const nothingLeft = { journal: 0, reports: 0, parts: 0, staged: 0 };

  // Admin calls made while `work` runs; every one must succeed.
  async function whileAdminCalls<T>(work: Promise<T>) {
    let done = false;
    const calls = { ok: 0, failed: [] as string[] };
    const admin = (async () => {
      while (!done) {
        try {
          await Promise.all([cp.admin.fleet.getAgent({ agentId }), updates.listUpdates({ pageSize: 10 }), cp.admin.commands.listCommands({ agentId })]);
          calls.ok++;
        } catch (err) {
          calls.failed.push(String(err));
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      return { result: await work, calls };
    } finally {
      done = true;
      await admin;
    }
  }

  it("sends a 5,000-update scan in parts; it arrives whole while admin calls keep succeeding", async () => {
    await list(5000);
    const id = await scanCommand();
    const { result: summary, calls } = await whileAdminCalls(runAgent({ ...options, once: true }));
    expect(summary).toMatchObject({ executed: 1, reported: 1 });
    const command = (await cp.admin.commands.getCommand({ id })).command!;
    expect(command.state).toBe(CommandState.SUCCEEDED);
    expect(command.result?.message).toMatch(/found 5000 updates/);
    expect(await view()).toBe(5000);
    expect((await updates.listUpdates({ pageSize: 1, filter: { agentIds: [agentId] } })).total).toBe(5000);
    expect(calls.failed).toEqual([]);
    expect(calls.ok).toBeGreaterThan(0);
    expect(await settled()).toEqual(nothingLeft);
    // The command keeps the scan without its updates; the CLI says where they are, and that works.
    const cli = (...args: string[]) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);
    const shown = await cli("commands", "get", id);
    expect(shown.code, shown.stderr).toBe(0);
    const hint = /`redflag (updates list --agent \S+)` shows them/.exec(shown.stdout);
    expect(hint, shown.stdout).not.toBeNull();
    const listed = await cli(...hint![1]!.split(" "));
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/pkg-0000\d/);
  }, 120_000);

  it("sends a scheduled scan in parts too, and the view follows it", async () => {
    await list(4900, ["pkg-00007"]);
    await cp.admin.fleet.updateSubsystems({ agentId, subsystems: [{ name: "apt", enabled: true, autoRun: true, intervalSeconds: 300, timeoutSeconds: 120 }] });
    const before = (await cp.app.db.prisma.agent.findUniqueOrThrow({ where: { id: agentId } })).lastScanAt!;
    const stop = new AbortController();
    const running = runAgent({ ...options, signal: stop.signal });
    try {
      // Applied, and the agent has the acknowledgement.
      const recorded = async () =>
        (await cp.app.db.prisma.agent.findUniqueOrThrow({ where: { id: agentId } })).lastScanAt! > before &&
        (await openAutoScans(stateDir)).pending().length === 0;
      await expect.poll(recorded, { timeout: 60_000, interval: 200 }).toBe(true);
    } finally {
      stop.abort();
      await running;
    }
    expect(await view()).toBe(4900);
    const changed = await cp.app.db.prisma.packageUpdate.findFirstOrThrow({ where: { agentId, name: "pkg-00007" } });
    expect(changed.availableVersion).toBe("3.0");
    expect(await cp.app.db.prisma.updateEvent.count({ where: { agentId, kind: "found", name: "pkg-00007", version: "3.0" } })).toBe(1);
    expect(await settled()).toEqual(nothingLeft);
  }, 120_000);

  it("reports a scan over the per-scan limit as failed, once, and leaves the view alone", async () => {
    await list(MAX_SCAN + 500);
    const id = await scanCommand();
    const summary = await runAgent({ ...options, once: true });
    expect(summary).toMatchObject({ executed: 1, reported: 1 });
    const command = (await cp.admin.commands.getCommand({ id })).command!;
    expect(command.state).toBe(CommandState.FAILED);
    expect(command.result?.message).toMatch(new RegExp(`did not accept the ${MAX_SCAN + 500} updates this scan found: .*more than ${MAX_SCAN} updates`));
    expect(await view()).toBe(4900);
    // Given up for good: nothing is kept to be sent again.
    expect(await settled()).toEqual(nothingLeft);
  }, 120_000);
});

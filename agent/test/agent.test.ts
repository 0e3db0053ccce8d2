import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { CollectSpecsSchema, type Command, CommandOutcome, DisableHeartbeatSchema, EnableHeartbeatSchema, RebootSchema, ScanUpdatesSchema, SignedCommandSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ExecutorTable } from "../src/executors/index.ts";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import { disableHeartbeat, enableHeartbeat } from "../src/executors/heartbeat.ts";
import { computeMachineId, readHostIdentifiers } from "../src/state/identity.ts";
import { openJournal } from "../src/state/journal.ts";
import { openAutoScans } from "../src/state/auto-scans.ts";
import { ScanReportSchema } from "@redflag/gen/agent_service_pb";
import { silentLogger } from "../src/log.ts";
import { createHostAccess, type HostAccess } from "../src/platform.ts";
import { fakeHost } from "./support/fake-host.ts";
import { FAKE_DNF, FAKE_ZYPPER } from "./support/recorded-host-tools.ts";
import { CONFIRMED_FILE, recordFailure } from "../src/state/upgrade.ts";
import { readPostHook, rememberPostHook } from "../src/executors/reboot-hooks.ts";
import { AGENT_VERSION } from "../src/version.ts";
import { registerAgent, runAgent, readStatus, type RunOptions } from "../src/index.ts";
import { newSigningKey, signCommand, startFakeControlPlane, type FakeControlPlane } from "./support/fake-control-plane.ts";

const collectSpecs = (): Command["action"] => ({ case: "collectSpecs", value: create(CollectSpecsSchema) });

let cp: FakeControlPlane;
let root: string;
let stateDir: string;
let seed: string;
let runs: string[];

// Fast stand-ins for the real executors, counting what ran.
const countingExecutors = (): ExecutorTable => ({
  collectSpecs: async (ctx) => {
    runs.push(ctx.command.id);
    return { outcome: CommandOutcome.SUCCEEDED, message: `ran ${ctx.command.id}` };
  },
});

beforeEach(async () => {
  cp = await startFakeControlPlane();
  root = await mkdtemp(path.join(tmpdir(), "redflag-agent-it-"));
  stateDir = path.join(root, "state");
  seed = randomBytes(8).toString("hex");
  runs = [];
});
afterEach(async () => {
  await cp.close();
  await rm(root, { recursive: true, force: true });
});

const register = () => registerAgent({ stateDir, serverUrl: cp.url, token: cp.token, machineIdSeed: seed, logger: silentLogger });
const options = (extra: Partial<RunOptions> = {}): RunOptions => ({
  stateDir,
  machineIdSeed: seed,
  aptRefresh: false,
  logger: silentLogger,
  executors: countingExecutors(),
  timing: { backoffBaseMs: 10, backoffCapMs: 50, refusedDelayMs: 100 },
  ...extra,
});
const once = (extra: Partial<RunOptions> = {}) => runAgent(options({ once: true, ...extra }));
const agentOnServer = () => [...cp.agents.values()][0]!;
const lastReported = (commandId: string) =>
  cp.reports.flat().filter((r) => r.commandId === commandId).at(-1);

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("register", () => {
  it("enrols with this host's identity and keeps private state private", async () => {
    const outcome = await register();
    const server = agentOnServer();
    expect(outcome.agentId).toBe(server.agentId);
    expect(outcome.pinnedKeyIds).toEqual([cp.key.keyId]);
    expect(server.machineId).toBe(computeMachineId({ ...(await readHostIdentifiers(undefined)).ids, seed }));

    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    for (const name of await readdir(stateDir)) {
      expect((await stat(path.join(stateDir, name))).mode & 0o777, name).toBe(0o600);
    }
    expect((await readdir(stateDir)).sort()).toEqual(["agent.json", "agent.key", "journal.json", "pinned-keys.json"]);
    const saved = JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as Record<string, string>;
    expect(saved).toMatchObject({ agentId: server.agentId, refreshToken: server.refreshToken, registrationToken: cp.token });

    const status = await readStatus({ stateDir, machineIdSeed: seed });
    expect(status).toMatchObject({ agentId: server.agentId, server: cp.url, pinnedKeyIds: [cp.key.keyId], lastSequence: "0" });
    const shown = JSON.stringify(status);
    for (const secret of [server.accessToken, server.refreshToken, cp.token]) expect(shown).not.toContain(secret);
  });

  it("fails clearly with a bad token and leaves no registration", async () => {
    await expect(registerAgent({ stateDir, serverUrl: cp.url, token: "wrong", machineIdSeed: seed })).rejects.toThrow(
      `registration with ${cp.url} failed: Unauthenticated: registration token is not valid`,
    );
    await expect(runAgent(options({ once: true }))).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/^not registered/) });
  });
});

describe("run --once", () => {
  beforeEach(register);

  it("runs a real APT scan, reports it, and tells the control plane about itself on the next poll", async () => {
    const id = cp.queue({ case: "scanUpdates", value: create(ScanUpdatesSchema) });
    const summary = await once({ executors: undefined });
    expect(summary).toMatchObject({ delivered: 1, executed: 1, reported: 1, rejected: 0 });
    const result = cp.results.get(id)!;
    expect(result).toMatchObject({ outcome: CommandOutcome.SUCCEEDED, sequence: 1n });
    expect(result.detail.case).toBe("scanUpdates");
    if (result.detail.case !== "scanUpdates") return;
    expect(result.detail.value.subsystems[0]).toMatchObject({ subsystem: "apt", state: SubsystemRunState.RAN });

    await once();
    const status = cp.polls.at(-1)!.status!;
    expect(cp.polls.at(-1)!.waitSeconds).toBe(0);
    expect(cp.polls.at(-1)!.nonce).toHaveLength(32);
    expect(Buffer.from(cp.polls[0]!.nonce).equals(Buffer.from(cp.polls[1]!.nonce))).toBe(false);
    expect(status).toMatchObject({
      agentVersion: "0.1.0",
      configRevision: 7n,
      lastSequence: 1n,
      pendingUpdateCount: result.detail.value.updates.length,
    });
    expect(status.lastScanTime).toBeDefined();
    expect((await readStatus({ stateDir, machineIdSeed: seed })).journal).toEqual({ entries: 1, unacknowledged: 0 });
  });

  it("says on every poll whether the host needs a reboot, which sources said so, and what it could not read", async () => {
    await register();
    // This host as it is, but with dpkg's flag set, zypper asking for a reboot and dnf broken.
    const real = createHostAccess(process.env);
    const tools = await fakeHost({ platform: "linux", tools: { "/usr/bin/zypper": FAKE_ZYPPER, "/usr/bin/dnf": FAKE_DNF }, outputs: { "zypper.reboot": "", "dnf.broken": "" } });
    const host: HostAccess = {
      ...real,
      readText: async (file) => (file === "/var/run/reboot-required" ? "*** System restart required ***\n" : file === "/var/run/reboot-required.pkgs" ? "libc6\n" : real.readText(file)),
      run: (argv, signal) => (argv[0] === "/usr/bin/zypper" || argv[0] === "/usr/bin/dnf" ? tools.run(argv, signal) : real.run(argv, signal)),
    };
    try {
      await once({ host });
      expect(cp.polls.at(-1)!.status).toMatchObject({ rebootRequired: true, rebootRequiredBy: ["dpkg", "zypper"], rebootRequiredUnknown: "" });
      // With nothing asking for one, a source that failed is said.
      await rm(tools.tools.file("zypper.reboot"));
      await once({ host: { ...host, readText: (file) => real.readText(file === "/var/run/reboot-required" ? "/nonexistent/reboot-required" : file) } });
      expect(cp.polls.at(-1)!.status).toMatchObject({
        rebootRequired: false,
        rebootRequiredBy: [],
        rebootRequiredUnknown: "/usr/bin/dnf needs-restarting failed (exit status 1): Error: rpmdb open failed",
      });
    } finally {
      await tools.remove();
    }
  });

  it("runs the last reboot's post-hook once after the restart and reports its outcome on every poll", async () => {
    await register();
    const hooksDir = path.join(root, "hooks");
    await mkdir(hooksDir, { mode: 0o755 });
    await chmod(hooksDir, 0o755);
    await writeFile(path.join(hooksDir, "undrain"), `#!/bin/sh\necho ran >> "${root}/undrain-ran"\necho "back in the pool"\n`);
    await chmod(path.join(hooksDir, "undrain"), 0o755);
    // A reboot scheduled long before this host last booted.
    await rememberPostHook(stateDir, { commandId: "reboot-1", name: "undrain", timeoutSeconds: 5, scheduledAt: 1000 });
    await once({ hooksDir });
    const deadline = Date.now() + 10_000;
    while (!(await readPostHook(stateDir))?.ran && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await once({ hooksDir });
    expect(cp.polls.at(-1)!.status!.postRebootHook).toMatchObject({ commandId: "reboot-1", name: "undrain", ok: true, message: "ok: back in the pool" });
    await once({ hooksDir });
    expect(cp.polls.at(-1)!.status!.postRebootHook?.ok).toBe(true);
    expect((await readFile(path.join(root, "undrain-ran"), "utf8")).trim().split("\n")).toEqual(["ran"]);
  });

  it("fails every kind it does not support yet, without stopping", async () => {
    const id = cp.queue({ case: "reboot", value: create(RebootSchema) });
    const next = cp.queue(collectSpecs());
    await once();
    expect(cp.results.get(id)).toMatchObject({ outcome: CommandOutcome.FAILED, message: "reboot is not supported by this agent yet" });
    expect(cp.results.get(next)?.outcome).toBe(CommandOutcome.SUCCEEDED);
  });

  it("rejects forged, foreign, expired, replayed and mismatched commands, and never runs them", async () => {
    const good = cp.queue(collectSpecs());
    await once();
    expect(runs).toEqual([good]);

    const now = Date.now();
    const stranger = newSigningKey();
    const cases = {
      tampered: cp.queue(collectSpecs(), {
        deliver: (command) => ({
          command,
          mutateBytes: (signed) => {
            signed.command[signed.command.length - 1]! ^= 0x01;
            return signed;
          },
        }),
      }),
      unknownKey: cp.queue(collectSpecs(), { deliver: (command) => ({ command, key: stranger }) }),
      otherAgent: cp.queue(collectSpecs(), { deliver: (command) => ({ command: { ...command, agentId: randomUUID() } }) }),
      expired: cp.queue(collectSpecs(), {
        deliver: (command) => ({ command: { ...command, expireTime: timestampFromDate(new Date(now - 1000)) } }),
      }),
      wrongNonce: cp.queue(collectSpecs(), { deliver: (command) => ({ command: { ...command, nonce: randomBytes(32) } }) }),
      replayed: cp.queue(collectSpecs(), { deliver: (command) => ({ command: { ...command, sequence: 1n } }) }),
    };
    // Bytes nobody can name: logged and dropped.
    cp.injectRaw(() => create(SignedCommandSchema, { command: new Uint8Array([0xff]), signature: new Uint8Array(64), keyId: cp.key.keyId }));

    const summary = await once();
    expect(summary).toMatchObject({ delivered: 7, executed: 0, rejected: 6, dropped: 1 });
    expect(runs).toEqual([good]);
    const reason = (id: string) => {
      const result = cp.results.get(id);
      expect(result?.outcome, id).toBe(CommandOutcome.REJECTED);
      return result!.message;
    };
    expect(reason(cases.tampered)).toBe(`signature does not verify with pinned key ${cp.key.keyId}`);
    expect(cp.results.get(cases.tampered)!.sequence).toBe(0n);
    expect(reason(cases.unknownKey)).toBe(`unknown signing key ${stranger.keyId}`);
    expect(reason(cases.otherAgent)).toBe("command is for another agent");
    expect(reason(cases.expired)).toMatch(new RegExp(`^command expired at ${new Date(now - 1000).toISOString()}; this host's clock says `));
    expect(reason(cases.wrongNonce)).toBe("nonce does not match this poll");
    expect(reason(cases.replayed)).toBe("sequence 1 is not above last executed 1");
    expect((await readStatus({ stateDir, machineIdSeed: seed })).lastSequence).toBe("1");
  });

  it("does not let a forged copy in the same poll take the place of the genuine command", async () => {
    const id = randomUUID();
    const stranger = newSigningKey();
    cp.injectRaw((req, agent) => {
      const forged = signCommand({ id, agentId: agent.agentId, sequence: 1n, nonce: req.nonce, action: collectSpecs() }, stranger);
      return { ...forged, keyId: cp.key.keyId };
    });
    cp.queue(collectSpecs(), { id });
    const summary = await once();
    expect(summary).toMatchObject({ executed: 1, rejected: 0, dropped: 1 });
    expect(runs).toEqual([id]);
    expect(cp.results.get(id)?.outcome).toBe(CommandOutcome.SUCCEEDED);
  });

  it("does not let a stale signed copy in the same poll take the place of the command's re-delivery", async () => {
    // The control plane delivered this command once (sequence 1, another poll's nonce), the
    // answer was lost, and after the lease it delivers it again, freshly numbered; the first
    // delivery is replayed beside it. Found by the verification fuzzer.
    const id = randomUUID();
    cp.injectRaw((_req, agent) =>
      signCommand(
        {
          id,
          agentId: agent.agentId,
          sequence: 1n,
          nonce: randomBytes(32),
          issueTime: timestampFromDate(new Date()),
          expireTime: timestampFromDate(new Date(Date.now() + 600_000)),
          action: collectSpecs(),
        },
        cp.key,
      ),
    );
    cp.queue(collectSpecs(), { id, deliver: (command) => ({ command: { ...command, sequence: 2n } }) });
    const summary = await once();
    expect(summary).toMatchObject({ executed: 1, rejected: 0, dropped: 1 });
    expect(runs).toEqual([id]);
    expect(cp.results.get(id)).toMatchObject({ outcome: CommandOutcome.SUCCEEDED, sequence: 2n });
  });

  it("runs the commands of one poll in sequence order", async () => {
    // Delivered as [sequence 2, sequence 1]: sorted, both run; in delivery order the second would be a replay.
    const later = cp.queue(collectSpecs(), { deliver: (command) => ({ command: { ...command, sequence: 2n } }) });
    const earlier = cp.queue(collectSpecs(), { deliver: (command) => ({ command: { ...command, sequence: 1n } }) });
    await once();
    expect(runs).toEqual([earlier, later]);
  });

  it("re-reports a command delivered again, and never runs it twice", async () => {
    const id = cp.queue(collectSpecs());
    await once();
    const original = lastReported(id)!;
    cp.queue(collectSpecs(), { id });
    const summary = await once();
    expect(summary).toMatchObject({ delivered: 1, executed: 0, redelivered: 1, rejected: 0 });
    expect(runs).toEqual([id]);
    expect(cp.reports.flat().filter((r) => r.commandId === id)).toHaveLength(2);
    expect(lastReported(id)).toEqual(original);
  });

  it("keeps results until acknowledged and sends them again", async () => {
    cp.withholdAcks = true;
    const id = cp.queue(collectSpecs());
    await once();
    expect((await readStatus({ stateDir, machineIdSeed: seed })).journal.unacknowledged).toBe(1);
    await once();
    expect(cp.reports.flat().filter((r) => r.commandId === id)).toHaveLength(2);
    cp.withholdAcks = false;
    await once();
    expect(cp.reports.flat().filter((r) => r.commandId === id)).toHaveLength(3);
    expect((await readStatus({ stateDir, machineIdSeed: seed })).journal.unacknowledged).toBe(0);
    const reportsBefore = cp.reports.length;
    await once();
    expect(cp.reports.length).toBe(reportsBefore);
    expect(runs).toEqual([id]);
  });

  it("drops results the control plane refuses for good, and still never runs that command again", async () => {
    const id = cp.queue(collectSpecs());
    cp.refuse.add(id);
    await once();
    expect((await readStatus({ stateDir, machineIdSeed: seed })).journal).toEqual({ entries: 1, unacknowledged: 0 });
    const reportsBefore = cp.reports.length;
    await once();
    expect(cp.reports.length).toBe(reportsBefore);
    // No result reached the control plane, so it delivers the command again: answered, not run.
    cp.queue(collectSpecs(), { id });
    expect(await once()).toMatchObject({ executed: 0, redelivered: 1 });
    expect(runs).toEqual([id]);
  });

  it("isolates a result the control plane calls invalid, and delivers the rest", async () => {
    const a = cp.queue(collectSpecs());
    const b = cp.queue(collectSpecs());
    cp.failures.reportResults = [Code.InvalidArgument, Code.InvalidArgument];
    await once();
    expect(cp.results.has(a)).toBe(false);
    expect(cp.results.get(b)?.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect((await readStatus({ stateDir, machineIdSeed: seed })).journal.unacknowledged).toBe(0);
  });

  it("gives up a scan report the control plane refuses as invalid or too large, and never sends it again", async () => {
    const scans = await openAutoScans(stateDir);
    const report = (id: string) => create(ScanReportSchema, { id, scanTime: timestampFromDate(new Date()), result: { subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN }] } });
    await scans.add(report(randomUUID()));
    await scans.add(report(randomUUID()));
    // The pair is refused, then each alone: one as invalid, one as too large (no retry-after).
    cp.failures.reportResults = [Code.InvalidArgument, Code.InvalidArgument, Code.ResourceExhausted];
    await once();
    expect(cp.scans).toEqual([]);
    expect((await openAutoScans(stateDir)).pending()).toEqual([]);
    const calls = cp.reports.length;
    await once();
    expect(cp.reports.length).toBe(calls);
  });

  it("reports a command a crash interrupted as failed, and does not run it again", async () => {
    const id = cp.queue(collectSpecs());
    const journal = await openJournal(stateDir);
    await journal.begin(id, 1n);
    await once();
    expect(cp.results.get(id)).toMatchObject({ outcome: CommandOutcome.FAILED, sequence: 1n });
    expect(cp.results.get(id)!.message).toMatch(/stopped before the command finished/);
    expect(runs).toEqual([]);
  });

  it("renews on Unauthenticated and saves the rotated refresh token before using it", async () => {
    agentOnServer().accessToken = "expired-on-the-server";
    await once();
    expect(cp.renewals).toBe(1);
    const saved = JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as Record<string, string>;
    expect(saved.refreshToken).toBe(agentOnServer().refreshToken);
    expect(saved.accessToken).toBe(agentOnServer().accessToken);
    expect(cp.polls).toHaveLength(1);
  });

  it("renews before the access token runs out", async () => {
    cp.accessTtlMs = 1500;
    await register();
    // Past 80% of the token's life: renewed before the poll, so the poll is not refused.
    await new Promise((r) => setTimeout(r, 1300));
    await once();
    expect(cp.renewals).toBe(1);
    expect(cp.polls).toHaveLength(1);
  });

  it("registers again with the stored token when its credentials were revoked", async () => {
    const before = agentOnServer();
    const agentId = before.agentId;
    before.accessToken = "revoked";
    before.refreshToken = "rotated-elsewhere";
    cp.queue(collectSpecs());
    await once();
    expect(cp.registrations).toBe(2);
    expect(agentOnServer().agentId).toBe(agentId);
    expect(runs).toHaveLength(1);
    expect((await readStatus({ stateDir, machineIdSeed: seed })).pinnedKeyIds).toEqual([cp.key.keyId]);
  });

  it("exits with a clear error when the credentials are gone for good", async () => {
    agentOnServer().accessToken = "revoked";
    agentOnServer().refreshToken = "rotated-elsewhere";
    cp.token = "revoked-token";
    await expect(once()).rejects.toThrow(/credentials were refused and registering again failed \(Unauthenticated: registration token is not valid\)/);
  });

  it("exits non-zero when the control plane is unreachable", async () => {
    await cp.close();
    await expect(once()).rejects.toMatchObject({ exitCode: 1, message: expect.stringMatching(/failed: Unavailable/) });
  });
});

describe("run", () => {
  beforeEach(register);

  const start = (extra: Partial<RunOptions> = {}) => {
    const stop = new AbortController();
    const done = runAgent(options({ signal: stop.signal, longPollSeconds: 0, ...extra }));
    return { stop: () => (stop.abort(), done), done };
  };

  it("keeps polling at the configured interval and runs what comes", async () => {
    cp.nextPollSeconds = 1;
    const agent = start();
    await until(() => cp.polls.length >= 1, "first poll");
    const id = cp.queue(collectSpecs());
    await until(() => cp.results.has(id), "the result");
    const summary = await agent.stop();
    expect(summary.executed).toBe(1);
    expect(summary.cycles).toBeGreaterThanOrEqual(2);
  });

  it("polls every few seconds in heartbeat mode, then falls back when it is switched off", async () => {
    cp.nextPollSeconds = 30;
    const on = cp.queue({ case: "enableHeartbeat", value: create(EnableHeartbeatSchema, { intervalSeconds: 1, duration: { seconds: 600n } }) });
    const agent = start({ longPollSeconds: 60, executors: { enableHeartbeat, disableHeartbeat } });
    await until(() => cp.results.has(on), "heartbeat on", 8000);
    expect(cp.results.get(on)).toMatchObject({ outcome: CommandOutcome.SUCCEEDED, detail: { case: "heartbeat", value: { intervalSeconds: 1 } } });
    const afterOn = cp.polls.length;
    await until(() => cp.polls.length >= afterOn + 3, "three quick polls", 8000);
    expect(cp.polls.slice(afterOn, afterOn + 3).map((p) => p.waitSeconds)).toEqual([1, 1, 1]);
    const off = cp.queue({ case: "disableHeartbeat", value: create(DisableHeartbeatSchema) });
    await until(() => cp.results.has(off), "heartbeat off", 8000);
    // The result goes out at the start of the next cycle, whose poll already waits the normal interval.
    await until(() => cp.polls.at(-1)?.waitSeconds === 30, "a normal poll", 8000);
    await agent.stop();
  });

  it("runs scheduled scans on their interval and reports them without a command", async () => {
    cp.agentConfig = create(AgentConfigSchema, {
      revision: 8n,
      pollIntervalSeconds: 1,
      subsystems: [
        { name: "system", enabled: true, autoRun: true, intervalSeconds: 3600 },
        { name: "storage", enabled: true, autoRun: false, intervalSeconds: 60 },
      ],
    });
    // Delivered with the first poll: the revision differs from the one given at registration.
    const agent = start({ executors: undefined });
    await until(() => cp.scans.length >= 1, "a scheduled scan report");
    await until(() => cp.polls.length >= 4, "more polls");
    const summary = await agent.stop();
    // Once per interval: the next run is an hour away, also after a restart.
    expect(cp.scans).toHaveLength(1);
    expect(cp.scans[0]!.result?.subsystems.map((s) => s.subsystem)).toEqual(["system"]);
    expect(cp.scans[0]!.result?.systemMetrics?.cpuCores).toBeGreaterThan(0);
    expect(summary.executed).toBe(0);
    const again = start({ executors: undefined });
    await until(() => cp.polls.length >= 6, "polls after the restart");
    await again.stop();
    expect(cp.scans).toHaveLength(1);
  });

  it("long-polls, never longer than the poll interval", async () => {
    cp.nextPollSeconds = 2;
    const agent = start({ longPollSeconds: 20 });
    await until(() => cp.polls.length >= 2, "two polls", 6000);
    // The first interval comes from the registration's config (1 s), the next from the poll answer.
    expect(cp.polls.map((p) => p.waitSeconds).slice(0, 2)).toEqual([1, 2]);
    await agent.stop();
  });

  it("backs off on transient errors and never gives up", async () => {
    cp.failures.pollCommands = [Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Internal];
    const id = cp.queue(collectSpecs());
    const agent = start();
    await until(() => cp.results.has(id), "the result after the errors");
    expect(cp.failures.pollCommands).toEqual([]);
    await agent.stop();
  });

  it("waits long after PermissionDenied and lost credentials, then tries again", async () => {
    cp.failures.pollCommands = [Code.PermissionDenied];
    const agent = start({ timing: { refusedDelayMs: 300, backoffBaseMs: 10, backoffCapMs: 50 } });
    await until(() => cp.polls.length >= 1, "a poll after PermissionDenied");
    await agent.stop();

    agentOnServer().accessToken = "revoked";
    agentOnServer().refreshToken = "rotated-elsewhere";
    const token = cp.token;
    cp.token = "revoked-token";
    const polls = cp.polls.length;
    const again = start({ timing: { refusedDelayMs: 100, backoffBaseMs: 10, backoffCapMs: 50 } });
    await new Promise((r) => setTimeout(r, 300));
    cp.token = token;
    await until(() => cp.polls.length > polls, "a poll after registering again");
    await again.stop();
  });

  it("lets the running command finish within the grace period when stopped", async () => {
    let release!: () => void;
    const id = cp.queue(collectSpecs());
    const agent = start({
      stopGraceSeconds: 10,
      executors: {
        collectSpecs: async () => {
          await new Promise<void>((r) => (release = r));
          return { outcome: CommandOutcome.SUCCEEDED, message: "finished" };
        },
      },
    });
    await until(() => release !== undefined, "the command to start");
    const stopped = agent.stop();
    setTimeout(() => release(), 100);
    await stopped;
    expect(cp.results.get(id)).toMatchObject({ outcome: CommandOutcome.SUCCEEDED, message: "finished" });
  });

  it("ends the running command as failed after the grace period, and reports it before exiting", async () => {
    let started = false;
    const id = cp.queue(collectSpecs());
    const queuedAfter = cp.queue(collectSpecs());
    const agent = start({
      stopGraceSeconds: 0,
      executors: {
        collectSpecs: (ctx) => {
          started = true;
          return new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve({ outcome: CommandOutcome.SUCCEEDED, message: "too late" })));
        },
      },
    });
    await until(() => started, "the command to start");
    await agent.stop();
    expect(cp.results.get(id)).toMatchObject({ outcome: CommandOutcome.FAILED, message: "agent stopped before the command finished" });
    expect(cp.results.get(queuedAfter)).toMatchObject({ outcome: CommandOutcome.FAILED, message: "agent stopped before running the command" });
  });

});

describe("TLS", () => {
  it("talks to an https:// control plane whose CA it is given, and to no other", async () => {
    await cp.close();
    const cert = path.join(root, "cert.pem");
    const key = path.join(root, "key.pem");
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
    ]);
    cp = await startFakeControlPlane({ tls: { cert: await readFile(cert), key: await readFile(key) } });
    expect(cp.url).toMatch(/^https:/);

    await expect(register()).rejects.toThrow(/registration with https:\/\/127\.0\.0\.1:\d+ failed: .*certificate/);
    await registerAgent({ stateDir, serverUrl: cp.url, token: cp.token, caFile: cert, machineIdSeed: seed, logger: silentLogger });
    const id = cp.queue(collectSpecs());
    // The CA given at registration is remembered.
    await once();
    expect(cp.results.get(id)?.outcome).toBe(CommandOutcome.SUCCEEDED);
  });
});

describe("the self-upgrade in the poll loop", () => {
  beforeEach(register);

  it("a release on trial confirms after its first complete poll cycle; any release reports the upgrade it abandoned", async () => {
    const installDir = path.join(root, "opt");
    await mkdir(installDir);
    const confirmation = path.join(installDir, CONFIRMED_FILE);
    await once({ installDir, upgradeTrial: true });
    expect(JSON.parse(await readFile(confirmation, "utf8"))).toMatchObject({ version: AGENT_VERSION });
    expect(cp.polls.at(-1)!.status!.upgradeFailure).toBeUndefined();

    // Not on trial: nothing is confirmed; an abandoned upgrade is in every poll's status.
    await rm(confirmation);
    await recordFailure(installDir, { version: "9.9.9", from: AGENT_VERSION, reason: "it did not complete a poll cycle within 300 s" });
    await once({ installDir });
    await expect(stat(confirmation)).rejects.toMatchObject({ code: "ENOENT" });
    expect(cp.polls.at(-1)!.status!.upgradeFailure).toMatchObject({ version: "9.9.9", reason: "it did not complete a poll cycle within 300 s" });
    expect(cp.polls.at(-1)!.status!.upgradeFailure!.time).toBeDefined();
  });
});

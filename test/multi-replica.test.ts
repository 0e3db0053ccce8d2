import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import type { AgentService } from "@redflag/gen/agent_service_pb";
import { CommandOutcome, CommandSchema } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LINK_APPLICATION_NAME } from "../control-plane/src/cluster/cluster.ts";
import { SUBSYSTEMS } from "../control-plane/src/domain/agent-config.ts";
import { createCommand } from "../control-plane/src/store/commands.ts";
import { COMMAND_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "../control-plane/src/signing/keys.ts";
import { newRegistrationToken, nonce, randomMachineId, registerRequest, registerTestAgent, signedRenew, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { freshDatabase, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { root, run } from "./support/processes.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;
};
const collectSpecs = { case: "collectSpecs" as const, value: {} };

// Two real control planes on one PostgreSQL database, as a scaled-out deployment runs them: the
// same DATABASE_URL and REDFLAG_MASTER_KEY (so both sign with the same keys).
describe.skipIf(!process.env.TEST_DATABASE_URL)("two control-plane replicas on one PostgreSQL", () => {
  let db: FreshDatabase;
  let a: TestControlPlane;
  let b: TestControlPlane;
  const open = new Set<TestControlPlane>();
  const env = { REDFLAG_MASTER_KEY: randomBytes(32).toString("base64"), REDFLAG_SWEEP_INTERVAL_MS: "300" };

  beforeAll(async () => {
    db = await freshDatabase({ backend: "postgres" });
    a = await startTestControlPlane(env, { db, port: 0 });
    open.add(a);
    b = await startTestControlPlane(env, { db, port: 0 });
    open.add(b);
  });
  afterAll(async () => {
    for (const cp of open) await cp.app.close();
    await db?.cleanup();
  });

  // An agent's clients for both replicas.
  const clientsOf = (agent: TestAgent): [Client<typeof AgentService>, Client<typeof AgentService>] => {
    const headers = { authorization: `Bearer ${agent.accessToken}`, "x-machine-id": agent.machineId };
    return [a.agentClient(headers), b.agentClient(headers)];
  };

  it("share signing keys and elect one scheduler leader", () => {
    expect(a.app.signingKeyId).toBe(b.app.signingKeyId);
    expect([a.app.isLeader(), b.app.isLeader()].filter(Boolean)).toHaveLength(1);
  });

  it("wake a long-poll held on one replica when a command is queued on the other", async () => {
    const token = await newRegistrationToken(a, 10);
    const agents = await Promise.all(Array.from({ length: 10 }, (_, i) => registerTestAgent(i % 2 ? a : b, token)));
    const latencies: number[] = [];
    for (const [i, agent] of agents.entries()) {
      // Even agents long-poll on B and are queued for on A; odd ones the other way round.
      const [onA, onB] = clientsOf(agent);
      const polling = i % 2 === 0 ? onB : onA;
      const queueOn = i % 2 === 0 ? a : b;
      const started = Date.now();
      const poll = polling.pollCommands({ nonce: nonce(), waitSeconds: 30 });
      await sleep(200);
      const queuedAt = Date.now();
      await queueOn.admin.commands.createCommand({ agentId: agent.agentId, action: collectSpecs });
      const res = await poll;
      expect(res.commands).toHaveLength(1);
      latencies.push(Date.now() - queuedAt);
      expect(Date.now() - started).toBeLessThan(10_000);
    }
    console.log(
      `cross-replica wake-up, queue to delivery over ${latencies.length} long-polls: p50 ${percentile(latencies, 50)} ms, max ${Math.max(...latencies)} ms (long-poll wait 30 s)`,
    );
    expect(Math.max(...latencies)).toBeLessThan(2_000);
  });

  it("stream a command queued and run on one replica to a WatchEvents feed on the other", async () => {
    const agent = await registerTestAgent(a, await newRegistrationToken(a));
    const [onA] = clientsOf(agent);
    const abort = new AbortController();
    const seen: CommandState[] = [];
    // Resolves when the feed has shown `state` (within 10 s). The feed sends a command as it is
    // when the notice of a change arrives, so each step waits for the last one to show: the
    // replica link may bring a notice after the next change was made.
    const waiters = new Map<CommandState, () => void>();
    const shown = (state: CommandState) =>
      Promise.race([new Promise<void>((resolve) => (seen.includes(state) ? resolve() : waiters.set(state, resolve))), sleep(10_000)]);
    const stream = b.admin.commands.watchEvents({ agentId: agent.agentId }, { signal: abort.signal });
    // The feed says it is live with a keep-alive at once; only then is anything queued (a fixed
    // pause lost the first events on a loaded machine).
    let live!: () => void;
    const isLive = new Promise<void>((resolve) => (live = resolve));
    const reading = (async () => {
      for await (const event of stream) {
        live();
        if (event.kind !== "command") continue;
        seen.push(event.command!.state);
        waiters.get(event.command!.state)?.();
        if (event.command!.state === CommandState.SUCCEEDED) break;
      }
    })();
    await Promise.race([isLive, sleep(10_000)]);
    await a.admin.commands.createCommand({ agentId: agent.agentId, action: collectSpecs });
    await shown(CommandState.PENDING);
    const polled = await onA.pollCommands({ nonce: nonce() });
    const cmd = fromBinary(CommandSchema, polled.commands[0]!.command);
    await shown(CommandState.SENT);
    await onA.reportResults({ results: [{ commandId: cmd.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: cmd.sequence }] });
    await Promise.race([reading, sleep(10_000)]);
    abort.abort();
    expect(seen).toEqual([CommandState.PENDING, CommandState.SENT, CommandState.SUCCEEDED]);
  });

  it("deliver and run every command exactly once while agents poll both replicas", async () => {
    const AGENTS = 20;
    const PER_AGENT = 10;
    const token = await newRegistrationToken(a, AGENTS);
    const agents = await Promise.all(Array.from({ length: AGENTS }, (_, i) => registerTestAgent(i % 2 ? b : a, token)));
    const delivered = new Map<string, { agentId: string; replica: number; at: number }>();
    const problems: string[] = [];
    const stop = new AbortController();

    // Each agent polls A and B in turn (long-poll, a few commands at a time), checks every command
    // as a real agent does, and reports its results to the replica it did not poll.
    const runAgent = async (agent: TestAgent, index: number) => {
      const clients = clientsOf(agent);
      const keys = new Map(agent.registration.trustedKeys.map((k) => [k.keyId, k.publicKey]));
      let lastSequence = 0n;
      for (let turn = index; !stop.signal.aborted; turn++) {
        const replica = turn % 2;
        const n = nonce();
        let res;
        try {
          res = await clients[replica]!.pollCommands({ nonce: n, waitSeconds: 3, maxCommands: 3 }, { signal: stop.signal });
        } catch (err) {
          if (stop.signal.aborted) return;
          throw err;
        }
        const results = [];
        for (const signed of res.commands) {
          const key = keys.get(signed.keyId);
          if (!key || !verifySignature(key, COMMAND_TYPE, signed.command, signed.signature)) problems.push(`bad signature from replica ${replica}`);
          const cmd = fromBinary(CommandSchema, signed.command);
          if (cmd.agentId !== agent.agentId) problems.push(`command ${cmd.id} for another agent`);
          if (Buffer.compare(Buffer.from(cmd.nonce), Buffer.from(n)) !== 0) problems.push(`command ${cmd.id} without the poll's nonce`);
          if (cmd.sequence <= lastSequence) problems.push(`agent ${agent.agentId}: sequence ${cmd.sequence} after ${lastSequence}`);
          lastSequence = cmd.sequence;
          if (delivered.has(cmd.id)) problems.push(`command ${cmd.id} delivered twice`);
          delivered.set(cmd.id, { agentId: agent.agentId, replica, at: Date.now() });
          results.push({ commandId: cmd.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: cmd.sequence });
        }
        if (results.length > 0) {
          const ack = await clients[1 - replica]!.reportResults({ results });
          if (ack.acknowledgedCommandIds.length !== results.length) problems.push(`results not all acknowledged`);
        }
      }
    };
    const running = agents.map((agent, i) => runAgent(agent, i));

    // Commands queued through both replicas at once, a few in flight at a time.
    const queued = new Map<string, { replica: number; at: number }>();
    const jobs = agents.flatMap((agent, i) => Array.from({ length: PER_AGENT }, (_, j) => ({ agent, replica: (i + j) % 2 })));
    const started = Date.now();
    await Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        for (let k = worker; k < jobs.length; k += 8) {
          const { agent, replica } = jobs[k]!;
          const at = Date.now();
          const cmd = (await (replica ? b : a).admin.commands.createCommand({ agentId: agent.agentId, action: collectSpecs })).command!;
          queued.set(cmd.id, { replica, at });
        }
      }),
    );
    const total = jobs.length;
    const deadline = Date.now() + 60_000;
    const succeeded = () => a.app.db.prisma.command.count({ where: { id: { in: [...queued.keys()] }, state: "succeeded" } });
    while ((await succeeded()) < total && Date.now() < deadline) await sleep(100);
    const elapsed = Date.now() - started;
    stop.abort();
    await Promise.all(running);

    const rows = await a.app.db.prisma.command.findMany({ where: { id: { in: [...queued.keys()] } }, select: { id: true, state: true, deliveryCount: true } });
    const latencies = [...delivered].filter(([id]) => queued.has(id)).map(([id, d]) => d.at - queued.get(id)!.at);
    const cross = [...delivered].filter(([id, d]) => queued.has(id) && queued.get(id)!.replica !== d.replica).length;
    console.log(
      [
        `${total} commands for ${AGENTS} agents queued through both replicas, all run in ${elapsed} ms`,
        `queued on A/B: ${[...queued.values()].filter((q) => q.replica === 0).length}/${[...queued.values()].filter((q) => q.replica === 1).length}; ` +
          `delivered by A/B: ${[...delivered.values()].filter((d) => d.replica === 0).length}/${[...delivered.values()].filter((d) => d.replica === 1).length}; ` +
          `delivered by the other replica than the one that queued: ${cross}`,
        `queue to delivery: p50 ${percentile(latencies, 50)} ms, p95 ${percentile(latencies, 95)} ms, max ${Math.max(...latencies)} ms`,
        `states: ${JSON.stringify(Object.fromEntries([...new Set(rows.map((r) => r.state))].map((s) => [s, rows.filter((r) => r.state === s).length])))}, ` +
          `delivery counts: ${JSON.stringify([...new Set(rows.map((r) => r.deliveryCount))])}, problems: ${problems.length}`,
      ].join("\n"),
    );
    expect(problems).toEqual([]);
    expect(rows).toHaveLength(total);
    expect(rows.every((r) => r.state === "succeeded" && r.deliveryCount === 1)).toBe(true);
    expect(delivered.size).toBe(total);
    expect(cross).toBeGreaterThan(0);
    expect(new Set([...delivered.values()].map((d) => d.replica))).toEqual(new Set([0, 1]));
  });

  it("let real agent processes, each on one replica, run commands queued on the other exactly once", async () => {
    const stateRoot = await mkdtemp(path.join(tmpdir(), "rf-replicas-"));
    const token = await newRegistrationToken(a, 2);
    const agents: { id: string; child: ChildProcess; queueOn: TestControlPlane }[] = [];
    try {
      for (const [i, server] of [a, b].entries()) {
        const stateDir = path.join(stateRoot, `agent-${i}`);
        const env = { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_LONG_POLL_SECONDS: "30" };
        const registered = await run(["agent/src/main.ts", "register", "--server", server.url, "--token", token, "--state-dir", stateDir], { env });
        expect(registered.code, registered.stderr).toBe(0);
        const id = (JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string }).agentId;
        // Scheduled scans just ran, as far as the agent knows: this test times command delivery, not apt.
        const lastRun = Object.fromEntries(SUBSYSTEMS.map((name) => [name, new Date().toISOString()]));
        await writeFile(path.join(stateDir, "auto-scans.json"), JSON.stringify({ lastRun, pending: [] }));
        const child = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], { cwd: root, env: { ...process.env, ...env }, stdio: "ignore" });
        agents.push({ id, child, queueOn: server === a ? b : a });
      }
      // Long-polling from the start; then five commands each, queued on the replica the agent does not poll.
      await sleep(1500);
      const started = Date.now();
      const ids: string[] = [];
      for (let k = 0; k < 5; k++) {
        for (const agent of agents) ids.push((await agent.queueOn.admin.commands.createCommand({ agentId: agent.id, action: collectSpecs })).command!.id);
      }
      const deadline = Date.now() + 30_000;
      const done = () => a.app.db.prisma.command.count({ where: { id: { in: ids }, state: "succeeded" } });
      while ((await done()) < ids.length && Date.now() < deadline) await sleep(100);
      const elapsed = Date.now() - started;
      const rows = await a.app.db.prisma.command.findMany({ where: { id: { in: ids } }, orderBy: [{ createdAt: "asc" }, { id: "asc" }] });
      const waits = rows.map((r) => (r.sentAt ? r.sentAt.getTime() - r.createdAt.getTime() : NaN));
      console.log(
        `2 real agents, 10 commands queued on the other replica: all succeeded in ${elapsed} ms (long-poll wait 30 s); ` +
          `queue to delivery: ${waits.join(", ")} ms; delivery to result: ${rows.map((r) => (r.finishedAt && r.sentAt ? r.finishedAt.getTime() - r.sentAt.getTime() : NaN)).join(", ")} ms`,
      );
      expect(rows.map((r) => r.state)).toEqual(ids.map(() => "succeeded"));
      expect(rows.every((r) => r.deliveryCount === 1)).toBe(true);
      for (const agent of agents) {
        const sequences = rows.filter((r) => r.agentId === agent.id).map((r) => Number(r.sequence));
        expect(sequences).toHaveLength(5);
        expect(new Set(sequences).size).toBe(5);
      }
      expect(elapsed).toBeLessThan(15_000);
    } finally {
      for (const agent of agents) {
        if (agent.child.exitCode === null) {
          const exited = new Promise((resolve) => agent.child.once("exit", resolve));
          agent.child.kill("SIGTERM");
          await exited;
        }
      }
      await rm(stateRoot, { recursive: true, force: true });
    }
  });

  it("drop each other's caches at once: a setting changed and an agent decommissioned on one are seen on the other", async () => {
    const agent = await registerTestAgent(a, await newRegistrationToken(a));
    const [, onB] = clientsOf(agent);
    // B now caches the agent's registration and the settings (each for 30 s otherwise).
    expect((await onB.pollCommands({ nonce: nonce() })).nextPollSeconds).toBe(60);
    const settingsOnA = createClient(
      SettingsService,
      createConnectTransport({ baseUrl: a.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${a.adminKey}` })] }),
    );
    await settingsOnA.updateSettings({ values: { poll_interval: "2m" } });
    await expect.poll(async () => (await onB.pollCommands({ nonce: nonce() })).nextPollSeconds, { timeout: 3_000, interval: 50 }).toBe(120);
    await settingsOnA.updateSettings({ values: { poll_interval: "1m" } });

    await a.admin.fleet.decommissionAgent({ agentId: agent.agentId });
    const refusal = () => onB.pollCommands({ nonce: nonce() }).then(() => "accepted", (err: unknown) => ConnectError.from(err).rawMessage);
    await expect.poll(refusal, { timeout: 3_000, interval: 50 }).toBe("this agent has been decommissioned");
  });

  it("stop an agent's access tokens on both at once when one sees its refresh token re-used", async () => {
    const agent = await registerTestAgent(a, await newRegistrationToken(a));
    const [, onB] = clientsOf(agent);
    // B has verified the token and caches the agent's registration.
    await expect(onB.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    await a.agentClient().renew(signedRenew(agent, agent.refreshToken));
    await expect(a.agentClient().renew(signedRenew(agent, agent.refreshToken))).rejects.toMatchObject({ code: Code.Unauthenticated });
    const refusal = () => onB.pollCommands({ nonce: nonce() }).then(() => "accepted", (err: unknown) => ConnectError.from(err).rawMessage);
    await expect.poll(refusal, { timeout: 3_000, interval: 50 }).toMatch(/credentials were revoked/);
  });

  it("reconnect their replica links after the database drops them, and wake across replicas again", async () => {
    const dropped = await a.app.db.prisma.$queryRaw<{ pid: number }[]>`
      SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity
       WHERE application_name = ${LINK_APPLICATION_NAME} AND datname = current_database()`;
    expect(dropped).toHaveLength(2);
    const deadline = Date.now() + 15_000;
    while ([a.app.isLeader(), b.app.isLeader()].filter(Boolean).length !== 1 && Date.now() < deadline) await sleep(50);
    expect([a.app.isLeader(), b.app.isLeader()].filter(Boolean)).toHaveLength(1);
    // Both links listen again: a command queued on A wakes a long-poll on B.
    const agent = await registerTestAgent(a, await newRegistrationToken(a));
    const [, onB] = clientsOf(agent);
    // Idle after a first statement: the LISTEN is done.
    let links = 0;
    while (links < 2 && Date.now() < deadline) {
      links = (await a.app.db.prisma.$queryRaw<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE application_name = ${LINK_APPLICATION_NAME} AND datname = current_database() AND state = 'idle' AND query <> ''`)[0]!.n;
      if (links < 2) await sleep(50);
    }
    const poll = onB.pollCommands({ nonce: nonce(), waitSeconds: 30 });
    await sleep(200);
    const queuedAt = Date.now();
    await a.admin.commands.createCommand({ agentId: agent.agentId, action: collectSpecs });
    expect((await poll).commands).toHaveLength(1);
    expect(Date.now() - queuedAt).toBeLessThan(2_000);
  });

  it("deliver a command whose wake-up was lost while the replica link was down, when the link is back", async () => {
    const agent = await registerTestAgent(a, await newRegistrationToken(a));
    const [, onB] = clientsOf(agent);
    // Idle first: B's pending index knows this agent has nothing queued.
    expect((await onB.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
    const poll = onB.pollCommands({ nonce: nonce(), waitSeconds: 40 });
    await sleep(200);
    await a.app.db.prisma.$queryRaw`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE application_name = ${LINK_APPLICATION_NAME} AND datname = current_database()`;
    // Queued with no wake-up at all (as if its NOTIFY was lost): only the link's return can find it.
    await createCommand(a.app.db.prisma, {
      agentId: agent.agentId,
      type: "collect_specs",
      action: toBinary(CommandSchema, create(CommandSchema, { action: collectSpecs })),
      timeoutSeconds: 0,
      createdBy: "test",
      createdByKind: "admin_key",
    });
    const res = await poll;
    expect(res.commands).toHaveLength(1);
  });

  it("tell a WatchEvents feed that it may have missed changes when the replica link comes back", async () => {
    const abort = new AbortController();
    const kinds: string[] = [];
    const reading = (async () => {
      for await (const event of b.admin.commands.watchEvents({}, { signal: abort.signal })) {
        kinds.push(event.kind);
        if (event.kind === "resync") return;
      }
    })().catch(() => {});
    await expect.poll(() => kinds.length, { timeout: 3_000, interval: 20 }).toBe(1);
    await a.app.db.prisma.$queryRaw`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE application_name = ${LINK_APPLICATION_NAME} AND datname = current_database()`;
    try {
      await expect.poll(() => kinds.at(-1), { timeout: 15_000, interval: 50 }).toBe("resync");
    } finally {
      abort.abort();
      await reading;
    }
  });

  it("hand the scheduler to the other replica when the leader stops", async () => {
    const leader = a.app.isLeader() ? a : b;
    const other = leader === a ? b : a;
    expect(other.app.isLeader()).toBe(false);
    await leader.app.close();
    open.delete(leader);
    const deadline = Date.now() + 10_000;
    while (!other.app.isLeader() && Date.now() < deadline) await sleep(50);
    expect(other.app.isLeader()).toBe(true);
  });
});

// Register and Renew are rate-limited per address, per registration token and per agent. The
// buckets are per replica, so this runs on whichever database the run has.
describe("Register and Renew rate limits", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_REGISTER_RATE_PER_ADDRESS: "1:5" });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("refuse a burst of Register calls beyond the limit with ResourceExhausted and a retry-after hint, registering nothing more", async () => {
    const token = await newRegistrationToken(cp, 50);
    const client = cp.agentClient();
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, () => client.register(registerRequest(token, randomMachineId(), generateKeyPair()))));
    const refused = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason)] : []));
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(5);
    expect(refused).toHaveLength(7);
    for (const err of refused) {
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.rawMessage).toMatch(/^too many Register calls from this address; retry after \d+s$/);
      expect(Number(err.metadata.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
    expect(await cp.app.db.prisma.agent.count()).toBe(5);
  });

  // Several replicas need PostgreSQL.
  it.skipIf(!process.env.TEST_DATABASE_URL)("add up over replicas: two replicas at 1:4 each let 8 of a burst through, so a fleet-wide limit L takes L/N on each", async () => {
    const fleet = await freshDatabase({ backend: "postgres" });
    const shared = { REDFLAG_MASTER_KEY: randomBytes(32).toString("base64"), REDFLAG_REGISTER_RATE_PER_ADDRESS: "1:4" };
    const one = await startTestControlPlane(shared, { db: fleet, port: 0 });
    const two = await startTestControlPlane(shared, { db: fleet, port: 0 });
    try {
      const token = await newRegistrationToken(one, 50);
      // A load balancer spreading the calls over both replicas.
      const clients = [one.agentClient(), two.agentClient()];
      const outcomes = await Promise.allSettled(Array.from({ length: 14 }, (_, i) => clients[i % 2]!.register(registerRequest(token, randomMachineId(), generateKeyPair()))));
      const refused = outcomes.flatMap((o) => (o.status === "rejected" ? [ConnectError.from(o.reason)] : []));
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(8);
      expect(refused.map((e) => e.code)).toEqual(Array.from({ length: 6 }, () => Code.ResourceExhausted));
      expect(await one.app.db.prisma.agent.count()).toBe(8);
    } finally {
      await one.app.close();
      await two.app.close();
      await fleet.cleanup();
    }
  });

  it("refuse an agent renewing faster than its limit, counting only calls its own key signed", async () => {
    // Its own control plane: the previous test emptied this address's Register bucket.
    const renewing = await startTestControlPlane({ REDFLAG_RENEW_RATE_PER_AGENT: "1:2" });
    try {
      await renewLimit(renewing);
    } finally {
      await renewing.close();
    }
  });
});

async function renewLimit(cp: TestControlPlane) {
  const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
  let refresh = agent.refreshToken;
  // A forged renewal (wrong key) for this agent does not use up its budget.
  await expect(cp.agentClient().renew(signedRenew(agent, refresh, { signingKey: generateKeyPair() }))).rejects.toMatchObject({ code: Code.Unauthenticated });
  for (let i = 0; i < 2; i++) refresh = (await cp.agentClient().renew(signedRenew(agent, refresh))).refreshToken;
  const err = await cp.agentClient().renew(signedRenew(agent, refresh)).then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  expect(err?.code).toBe(Code.ResourceExhausted);
  expect(err?.rawMessage).toMatch(/^too many Renew calls for this agent; retry after \d+s$/);
  expect(err?.metadata.get("retry-after")).toMatch(/^\d+$/);
}

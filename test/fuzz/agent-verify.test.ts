import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, type CommandResult, CommandResultSchema, CommandSchema } from "@redflag/gen/command_pb";
import { AgentConfigSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { randomBytes } from "node:crypto";
import { appendFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerAgent, runAgent } from "../../agent/src/index.ts";
import type { Executor, ExecutorTable } from "../../agent/src/executors/index.ts";
import { silentLogger } from "../../agent/src/log.ts";
import { startFakeControlPlane, type FakeControlPlane } from "../../agent/test/support/fake-control-plane.ts";
import { createFakeApt, type FakeApt } from "../support/fake-apt.ts";
import { root, run } from "../support/processes.ts";
import { type Action, createRng, type Item, keyFrom, keySetRevision, type Model, planRound, recentResultIds, type RoundPlan } from "./verify-cases.ts";

// The verification fuzzer (docs/security.md, "Attacking RedFlag in CI"): every round is one poll
// answer mixing genuine new commands with tampered, re-signed, replayed, re-delivered, foreign,
// expired, future, other-poll and garbage ones, and now and then a key set or a config, genuine or
// not (the cases are in verify-cases.ts). The agent must run exactly the genuine new commands,
// each once, in sequence order; answer every other command it can name with REJECTED (or, for a
// command it already answered, with that same result); and apply a key set or config only when it
// is genuine and newer. The fuzzer keeps its own model of what the agent's state must be and
// checks it after every round.
//
// Most rounds drive the agent's own poll cycle in this process (runAgent, once, against the fake
// control plane over HTTP/2: real verification, journal and state files; only the executors are
// stand-ins that note what ran). A few rounds, spread over the run, are the real `redflag-agent
// run --once` process on the same state directory, with a fake apt-get noting what it was asked.
//
// REDFLAG_FUZZ_SEED=<seed> replays a run (every failure prints its seed); REDFLAG_FUZZ_ROUNDS sets
// the number of rounds (REDFLAG_FUZZ_ROUNDS=20000 for a long run).

const seed = process.env.REDFLAG_FUZZ_SEED || randomBytes(8).toString("hex");
const rounds = (() => {
  const text = process.env.REDFLAG_FUZZ_ROUNDS;
  if (!text) return 150;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`REDFLAG_FUZZ_ROUNDS=${text} must be a whole number of at least 1`);
  return n;
})();
// A real process costs about a second a round: a few, spread over the run, exercise the state
// written in this process and the other way round.
const processRounds = new Set(Array.from({ length: Math.min(6, rounds) }, (_, i) => Math.round(((i + 1) * rounds) / (Math.min(6, rounds) + 1)) || 1));
const MAX_ITEMS = 10;
// The same number of rounds: it decides which rounds are agent processes.
const replay = `REDFLAG_FUZZ_SEED=${seed} REDFLAG_FUZZ_ROUNDS=${rounds} npx vitest run test/fuzz/agent-verify.test.ts`;
// A round that hangs fails with its seed rather than as a bare test timeout.
const ROUND_LIMIT_MS = 60_000;

const REJECTED = CommandOutcome.REJECTED;
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
// Command IDs are UUIDs; anything else is shown as it is.
const short = (id: string | undefined) => (id === undefined ? "(no readable ID)" : /^[0-9a-f-]{36}$/.test(id) ? id.slice(0, 8) : JSON.stringify(id.slice(0, 80)));
const describeResult = (r: CommandResult) => `${CommandOutcome[r.outcome]} (sequence ${r.sequence}) ${JSON.stringify(r.message)}`;

describe("the agent's command verification, fuzzed", () => {
  let cp: FakeControlPlane;
  let work: string;
  let stateDir: string;
  let apt: FakeApt;
  // Commands the in-process executors were handed, in order. The sequence tells deliveries of
  // one command apart: a stale copy carries the genuine command's ID.
  const ran: Ran[] = [];
  let logs: string[] = [];

  const note: Executor = async ({ command }) => {
    ran.push({ id: command.id, sequence: command.sequence });
    return { outcome: CommandOutcome.SUCCEEDED, message: `ran ${command.id}` };
  };
  const executors: ExecutorTable = { collectSpecs: note, dryRunUpdate: note };
  const logger = pino({ level: "info" }, { write: (line: string) => void logs.push(line.trim()) });

  beforeAll(async () => {
    cp = await startFakeControlPlane();
    work = await mkdtemp(path.join(tmpdir(), "rf-verify-fuzz-"));
    stateDir = path.join(work, "state");
    apt = await createFakeApt(path.join(work, "apt"), { installed: [], available: [] });
    await registerAgent({ stateDir, serverUrl: cp.url, token: cp.token, machineIdSeed: seed, logger: silentLogger });
  });
  afterAll(async () => {
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("runs exactly the genuine new commands of each poll", { timeout: 120_000 + rounds * 250 }, async () => {
    const rng = createRng(seed);
    const agentId = [...cp.agents.values()][0]!.agentId;
    const registered = cp.signedConfigs[0]!;
    const registeredConfig = fromBinary(AgentConfigSchema, registered.config);
    const registeredKeys = fromBinary(TrustedKeySetSchema, cp.registerKeySet!.keySet);
    const model: Model = {
      agentId,
      lastSequence: 0n,
      nextSequence: 1n,
      pins: [cp.key],
      keySetIssued: timestampDate(registeredKeys.issueTime!).getTime(),
      retired: [],
      everPinned: new Map([[cp.key.keyId, cp.key]]),
      keySets: [cp.registerKeySet!],
      strangers: Array.from({ length: 3 }, () => keyFrom(rng)),
      config: { revision: registeredConfig.revision, issueNanos: nanos(registeredConfig.issueTime!) },
      configs: [{ signed: registered, issueNanos: nanos(registeredConfig.issueTime!) }],
      configRevisions: 100n,
      configClock: nanos(registeredConfig.issueTime!),
      results: new Map(),
      resultOrder: [],
      deliveries: [],
      nonces: [],
    };
    // The fake control plane sends a config whenever the agent's revision differs from its own:
    // with one the agent never has, every poll goes through configDelivery, which sends this
    // round's config or none.
    cp.agentConfig = create(AgentConfigSchema, { revision: 1n << 52n });
    let plan: RoundPlan | undefined;
    cp.configDelivery = () => plan?.config?.signed;
    const tally = { genuine: 0, answered: 0, keySets: 0, keySetsTaken: 0, configs: 0, configsApplied: 0 };

    for (let round = 1; round <= rounds; round++) {
      const real = processRounds.has(round);
      const packages: string[] = [];
      const action = (i: number): Action => {
        if (!real) return { case: "collectSpecs", value: {} };
        const name = `fz-${round}-${i}`;
        packages.push(name);
        return { case: "dryRunUpdate", value: { packages: [{ source: "apt", name }] } };
      };
      plan = planRound(rng, model, { action, maxItems: MAX_ITEMS });
      const current = plan;
      for (const item of current.items) cp.injectRaw((req) => (item.signed = item.build(req.nonce)));
      cp.nextKeySet = current.keySet?.signed;
      const before = { reports: cp.reports.length, ran: ran.length, polls: cp.polls.length, apt: (await apt.argvLog()).length };
      logs = [];
      try {
        if (real) {
          await appendFile(path.join(work, "apt", "state", "available"), packages.map((p) => `${p} amd64 1.0 bookworm\n`).join(""));
          const agent = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], {
            cwd: root,
            timeoutMs: ROUND_LIMIT_MS,
            env: {
              REDFLAG_AGENT_MACHINE_ID_SEED: seed,
              REDFLAG_AGENT_APT_REFRESH: "0",
              REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
              REDFLAG_AGENT_LOG_LEVEL: "info",
              PATH: `${apt.bin}:${process.env.PATH}`,
            },
          });
          logs = agent.stderr.split("\n");
          expect(agent.code, "the agent process exits 0").toBe(0);
        } else {
          await within(ROUND_LIMIT_MS, runAgent({ stateDir, machineIdSeed: seed, aptRefresh: false, logger, executors, once: true }));
        }
        expect(cp.polls.length, "the agent polled once").toBe(before.polls + 1);
        const poll = cp.polls.at(-1)!;
        // What the agent says about itself in the poll is the state before this round.
        expect(poll.status?.lastSequence, "last sequence in the poll's status").toBe(model.lastSequence);
        expect(poll.status?.configRevision, "config revision in the poll's status").toBe(model.config.revision);
        expect(poll.status?.trustedKeysRevision, "key set revision in the poll's status").toBe(keySetRevision(model.pins.map((k) => k.keyId)));

        const reports = cp.reports.slice(before.reports).flat();
        const order = real ? await ranByAptGet(apt, before.apt, current.items) : ran.slice(before.ran);
        if (real) expect(ran.length, "nothing ran through the in-process executors").toBe(before.ran);
        checkCommands(current, model, reports, order, real);
        await checkState(current, model, stateDir);
        learn(current, model, reports, poll.nonce);
        tally.genuine += order.length;
        tally.answered += new Set(reports.map((r) => r.commandId)).size - order.length;
        tally.keySets += current.keySet ? 1 : 0;
        tally.keySetsTaken += current.keySet?.accept ? 1 : 0;
        tally.configs += current.config ? 1 : 0;
        tally.configsApplied += current.config?.apply ? 1 : 0;
      } catch (err) {
        throw explain(err as Error, round, real, current, logs);
      }
    }
    console.log(
      `verification fuzzer: seed ${seed}, ${rounds} polls (${processRounds.size} by the agent process): ${tally.genuine} genuine commands run, ` +
        `${tally.answered} others answered without running, key sets ${tally.keySetsTaken}/${tally.keySets} taken, configs ${tally.configsApplied}/${tally.configs} applied`,
    );
  });
});

interface Ran {
  id: string;
  sequence: bigint | undefined;
}

// What the fake apt-get was asked to simulate this round, in order: every piece of the poll names
// a package of its own.
async function ranByAptGet(apt: FakeApt, from: number, items: Item[]): Promise<Ran[]> {
  const byPackage = new Map<string, Ran>();
  for (const item of items) {
    if (!item.signed) continue;
    try {
      const command = fromBinary(CommandSchema, item.signed.command);
      if (command.action.case === "dryRunUpdate") byPackage.set(command.action.value.packages[0]!.name, { id: command.id, sequence: command.sequence });
    } catch {
      // garbage: it names no package
    }
  }
  return (await apt.argvLog()).slice(from).map((line) => {
    const name = line.split(" -- ")[1] ?? line;
    return byPackage.get(name) ?? { id: `(package ${name}, of no command of this poll)`, sequence: undefined };
  });
}

type Expectation =
  | { kind: "run"; item: Item }
  | { kind: "reject"; item: Item }
  // Answered before: any answer is that same result; `resend` when a verified delivery asks for it.
  | { kind: "stored"; resend: boolean }
  // Answered long ago: the agent may have forgotten it; it must still not run.
  | { kind: "ancient" };

function expectations(plan: RoundPlan, model: Model): Map<string, Expectation> {
  const recent = new Set(recentResultIds(model));
  const out = new Map<string, Expectation>();
  for (const item of plan.items) if (item.id !== undefined && item.sequence !== undefined) out.set(item.id, { kind: "run", item });
  for (const item of plan.items) {
    const id = item.id;
    if (id === undefined || out.get(id)?.kind === "run") continue;
    if (recent.has(id)) {
      const prior = out.get(id);
      out.set(id, { kind: "stored", resend: (prior?.kind === "stored" && prior.resend) || item.verified });
    } else if (model.results.has(id)) {
      out.set(id, { kind: "ancient" });
    } else {
      if (out.has(id) || item.reason === undefined) throw new Error(`fuzzer bug: ${item.label} has a fresh ID but no single expected rejection`);
      out.set(id, { kind: "reject", item });
    }
  }
  return out;
}

function checkCommands(plan: RoundPlan, model: Model, reports: CommandResult[], order: Ran[], real: boolean): void {
  const genuine = plan.items.filter((i) => i.sequence !== undefined).sort((a, b) => (a.sequence! < b.sequence! ? -1 : 1));
  const named = ({ id, sequence }: Ran) => {
    const item = plan.items.find((i) => i.id === id && i.sequence === sequence) ?? plan.items.find((i) => i.id === id);
    return `${short(id)} sequence ${sequence ?? "?"}${item ? ` (${item.label})` : ""}`;
  };
  expect(order.map(named), "the commands that ran, in order: exactly the genuine new ones, by sequence").toEqual(
    genuine.map((g) => named({ id: g.id!, sequence: g.sequence })),
  );

  const expected = expectations(plan, model);
  const byId = new Map<string, CommandResult[]>();
  for (const r of reports) byId.set(r.commandId, [...(byId.get(r.commandId) ?? []), r]);
  let unnamed = plan.items.filter((i) => i.id === undefined).length;
  for (const [id, results] of byId) {
    const first = results[0]!;
    const bytes = toBinary(CommandResultSchema, first);
    for (const r of results) expect(same(toBinary(CommandResultSchema, r), bytes), `${short(id)}: one result per command, however often it is sent`).toBe(true);
    const e = expected.get(id);
    const stored = model.results.get(id);
    if (!e) {
      // Only a piece whose ID the fuzzer damaged (or garbage that happens to hold one) may be
      // answered under an ID nobody planned, and then only with a rejection.
      expect(unnamed-- > 0, `result for ${short(id)}, an ID no command of this poll carried: ${describeResult(first)}`).toBe(true);
      expect(first.outcome, `${short(id)}: ${describeResult(first)}`).toBe(REJECTED);
      expect(stored, `${short(id)} already had a result`).toBeUndefined();
      continue;
    }
    if (e.kind === "run") {
      expect(first.outcome, `genuine command ${short(id)} (${e.item.label}): ${describeResult(first)}`).not.toBe(REJECTED);
      expect(first.sequence, `genuine command ${short(id)}: sequence of its result`).toBe(e.item.sequence);
      if (!real) expect(first.message, `genuine command ${short(id)}`).toBe(`ran ${id}`);
    } else if (e.kind === "reject") {
      expect(first.outcome, `${short(id)} (${e.item.label}): ${describeResult(first)}`).toBe(REJECTED);
      expect(first.message, `${short(id)} (${e.item.label}): the reason`).toMatch(reasonPattern(e.item.reason!));
    } else if (e.kind === "stored") {
      expect(same(bytes, stored!), `${short(id)} was answered before: sent again, it must be that same result, got ${describeResult(first)}`).toBe(true);
    } else {
      expect(same(bytes, stored!) || first.outcome === REJECTED, `${short(id)}, answered long ago: ${describeResult(first)}`).toBe(true);
    }
  }
  for (const [id, e] of expected) {
    if (byId.has(id)) continue;
    if (e.kind === "run") expect.fail(`genuine command ${short(id)} (${e.item.label}, sequence ${e.item.sequence}) has no result`);
    if (e.kind === "reject") expect.fail(`${short(id)} (${e.item.label}) got no REJECTED result`);
    if (e.kind === "stored" && e.resend) expect.fail(`${short(id)} was delivered again and not answered with its stored result`);
  }
}

const reasonPattern = (reason: string | RegExp) => (typeof reason === "string" ? new RegExp(`^${reason.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) : reason);

// The agent's state files after the round against the model.
async function checkState(plan: RoundPlan, model: Model, stateDir: string): Promise<void> {
  const journal = JSON.parse(await readFile(path.join(stateDir, "journal.json"), "utf8")) as { lastSequence: string };
  const ranTo = plan.items.reduce((max, i) => (i.sequence !== undefined && i.sequence > max ? i.sequence : max), model.lastSequence);
  expect(BigInt(journal.lastSequence), "last executed sequence").toBe(ranTo);

  const pins = JSON.parse(await readFile(path.join(stateDir, "pinned-keys.json"), "utf8")) as {
    keys: { keyId: string }[];
    keySet?: { issueTime: string };
    retiredKeyIds: string[];
  };
  const accept = plan.keySet?.accept;
  const keys = accept ? accept.keys : model.pins;
  const what = plan.keySet ? `after "${plan.keySet.label}"` : "with no key set in the poll";
  expect(pins.keys.map((k) => k.keyId).sort(), `pinned keys ${what}`).toEqual(keys.map((k) => k.keyId).sort());
  expect(pins.keySet?.issueTime, `key set issue time ${what}`).toBe(new Date(accept ? accept.issued : model.keySetIssued).toISOString());
  expect([...pins.retiredKeyIds].sort(), `retired keys ${what}`).toEqual(retiredAfter(model, plan).sort());

  const registration = JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentConfig: string };
  const config = fromBinary(AgentConfigSchema, Buffer.from(registration.agentConfig, "base64"));
  const apply = plan.config?.apply;
  const want = apply ?? model.config;
  const said = plan.config ? `after "${plan.config.label}"` : "with no config in the poll";
  expect({ revision: config.revision, issued: nanos(config.issueTime!) }, `config in force ${said}`).toEqual({ revision: want.revision, issued: want.issueNanos });
}

// A key set replaces the pins; the keys it leaves out are remembered as retired (the newest 64).
function retiredAfter(model: Model, plan: RoundPlan): string[] {
  const accept = plan.keySet?.accept;
  if (!accept) return [...model.retired];
  const kept = new Set(accept.keys.map((k) => k.keyId));
  const dropped = model.pins.map((k) => k.keyId).filter((id) => !kept.has(id));
  return [...model.retired.filter((id) => !dropped.includes(id)), ...dropped].slice(-64);
}

// Moves the model past a round the agent passed.
function learn(plan: RoundPlan, model: Model, reports: CommandResult[], nonce: Uint8Array): void {
  for (const item of plan.items) {
    if (item.sequence !== undefined && item.sequence > model.lastSequence) model.lastSequence = item.sequence;
    if (item.verified && item.id !== undefined && item.signed) model.deliveries.push({ id: item.id, signed: item.signed });
  }
  model.nextSequence = plan.nextSequence;
  for (const r of reports) {
    const stored = model.results.get(r.commandId);
    const bytes = toBinary(CommandResultSchema, r);
    if (!stored || !same(stored, bytes)) model.results.set(r.commandId, bytes);
  }
  const reported = new Set(reports.map((r) => r.commandId));
  model.resultOrder = [...model.resultOrder.filter((id) => !reported.has(id)), ...reported].slice(-1000);
  model.deliveries = model.deliveries.slice(-600);
  model.nonces = [...model.nonces, nonce].slice(-50);
  const accept = plan.keySet?.accept;
  if (accept) {
    model.retired = retiredAfter(model, plan);
    model.pins = accept.keys;
    model.keySetIssued = accept.issued;
    for (const k of accept.keys) model.everPinned.set(k.keyId, k);
    model.keySets.push(plan.keySet!.signed);
  }
  const apply = plan.config?.apply;
  if (apply) model.config = apply;
}

function explain(err: Error, round: number, real: boolean, plan: RoundPlan, logs: string[]): Error {
  const pieces = plan.items.map((i) => `  - ${i.label}: ${short(i.id)}${i.sequence !== undefined ? ` (sequence ${i.sequence})` : ""}`);
  err.message = [
    `REDFLAG_FUZZ_SEED=${seed}, round ${round} of ${rounds} (${real ? "agent process" : "in process"}): ${err.message}`,
    `poll answer: key set: ${plan.keySet?.label ?? "none"}; config: ${plan.config?.label ?? "none"}; commands:`,
    ...pieces,
    "agent log:",
    ...logs.filter(Boolean).slice(-40).map((l) => `  ${l.slice(0, 400)}`),
    `replay: ${replay}`,
  ].join("\n");
  return err;
}

async function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the agent's poll cycle did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, limit]);
  } finally {
    clearTimeout(timer);
  }
}

function nanos(t: { seconds: bigint; nanos: number }): bigint {
  return t.seconds * 1_000_000_000n + BigInt(t.nanos);
}

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AgentConfigSchema, type AgentConfig, type SignedAgentConfig } from "@redflag/gen/common_pb";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "../src/log.ts";
import { readStatus, registerAgent, runAgent } from "../src/index.ts";
import { registrationFile } from "../src/state/registration.ts";
import { newSigningKey, signConfig, startFakeControlPlane, type FakeControlPlane } from "./support/fake-control-plane.ts";

// The agent and the config it is sent: whatever a man in the middle does to it, the agent applies
// only a config the control plane signed for it, newer than the one it has; otherwise it keeps
// the last verified config, holds included, and says so in its log.

let cp: FakeControlPlane;
let root: string;
let stateDir: string;
let seed: string;
let logs: Record<string, unknown>[];

beforeEach(async () => {
  cp = await startFakeControlPlane();
  root = await mkdtemp(path.join(tmpdir(), "redflag-agent-config-"));
  stateDir = path.join(root, "state");
  seed = randomBytes(8).toString("hex");
  logs = [];
});
afterEach(async () => {
  await cp.close();
  await rm(root, { recursive: true, force: true });
});

const config = (revision: bigint, holds: string[]): AgentConfig =>
  create(AgentConfigSchema, {
    revision,
    pollIntervalSeconds: 1,
    commandTimeoutSeconds: 30,
    holds: holds.map((name) => ({ source: "apt", name, reason: "change freeze" })),
  });
const register = () => registerAgent({ stateDir, serverUrl: cp.url, token: cp.token, machineIdSeed: seed, logger: silentLogger });
const logger = pino({ level: "info" }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
const once = () => runAgent({ stateDir, machineIdSeed: seed, aptRefresh: false, logger, once: true, executors: {} });
const applied = async () => (await registrationFile(stateDir).load())!.agentConfig;
const refusals = () => logs.filter((l) => l.msg === "agent config refused; keeping the last verified config");
const agentId = () => [...cp.agents.values()][0]!.agentId;

// Removes the holds from signed bytes and leaves the signature: the attack of issue 13.
const stripHolds = (signed: SignedAgentConfig): SignedAgentConfig => {
  const body = fromBinary(AgentConfigSchema, signed.config);
  body.holds = [];
  return { ...signed, config: toBinary(AgentConfigSchema, body) };
};

describe("a delivered agent config", () => {
  it("is applied only when signed by a pinned key for this agent and newer; otherwise the last verified one stays", async () => {
    // Registered with revision 6 (no holds): a man in the middle keeps a copy.
    cp.agentConfig = config(6n, []);
    await register();
    const captured = cp.signedConfigs[0]!;
    expect(await applied()).toMatchObject({ revision: 6n, agentId: agentId(), holds: [] });

    // The operator holds openssl: delivered, verified, applied.
    cp.agentConfig = config(7n, ["openssl"]);
    await once();
    expect(await applied()).toMatchObject({ revision: 7n, holds: [{ name: "openssl" }] });
    expect(refusals()).toEqual([]);
    const issued = timestampDate(fromBinary(AgentConfigSchema, cp.signedConfigs.at(-1)!.config).issueTime!).toISOString();
    expect(await readStatus({ stateDir, machineIdSeed: seed })).toMatchObject({ configRevision: "7", configIssueTime: issued });

    // Then nginx too (revision 8), and every delivery of it is tampered with on the way.
    cp.agentConfig = config(8n, ["openssl", "nginx"]);
    const anHourAhead = () => {
      const time = cp.issueTime();
      time.seconds += 3600n;
      return time;
    };
    const attacks: [string, (signed: SignedAgentConfig) => SignedAgentConfig, string][] = [
      ["holds stripped", stripHolds, `signature does not verify with pinned key ${cp.key.keyId}`],
      ["signed for another agent", () => signConfig(config(8n, []), randomUUID(), cp.issueTime(), cp.key), "config is for agent "],
      ["replayed from before the holds", () => captured, "config revision 6 issued at "],
      ["signed by a key never pinned", () => signConfig(config(8n, []), agentId(), cp.issueTime(), newSigningKey()), "unknown signing key "],
      ["issued an hour ahead", () => signConfig(config(8n, []), agentId(), anHourAhead(), cp.key), "config issued in the future at "],
    ];
    for (const [what, tamper, reason] of attacks) {
      logs = [];
      cp.configDelivery = tamper;
      await once();
      const kept = await applied();
      expect(kept, what).toMatchObject({ revision: 7n, holds: [{ name: "openssl" }] });
      expect(refusals(), what).toHaveLength(1);
      expect(refusals()[0], what).toMatchObject({ keptRevision: "7", keptHolds: 1, reason: expect.stringContaining(reason) });
      // The agent still says it applies revision 7, so the control plane keeps offering 8.
      expect(cp.polls.at(-1)!.status!.configRevision, what).toBe(7n);
    }

    // The genuine delivery gets through.
    cp.configDelivery = undefined;
    logs = [];
    await once();
    expect(await applied()).toMatchObject({ revision: 8n, holds: [{ name: "openssl" }, { name: "nginx" }] });
    expect(logs.find((l) => l.msg === "agent config applied")).toMatchObject({ revision: "8" });
  });

  it("in a Register answer that does not verify fails `register` and leaves no registration", async () => {
    cp.agentConfig = config(6n, ["openssl"]);
    cp.configDelivery = stripHolds;
    await expect(register()).rejects.toThrow(
      `registration refused: the agent config in the control plane's answer is not valid (signature does not verify with pinned key ${cp.key.keyId})`,
    );
    expect(await readdir(stateDir)).not.toContain("agent.json");
    expect(await readdir(stateDir)).not.toContain("pinned-keys.json");
  });

  it("in an automatic re-registration is checked like a polled one", async () => {
    cp.agentConfig = config(7n, ["openssl"]);
    await register();
    const server = [...cp.agents.values()][0]!;
    server.accessToken = "revoked";
    server.refreshToken = "rotated-elsewhere";
    cp.agentConfig = config(8n, ["openssl", "nginx"]);
    cp.configDelivery = stripHolds;
    await once();
    expect(cp.registrations).toBe(2);
    expect(await applied()).toMatchObject({ revision: 7n, holds: [{ name: "openssl" }] });
    expect(refusals().length).toBeGreaterThanOrEqual(1);
  });
});

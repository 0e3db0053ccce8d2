import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, RenewPayloadSchema, type PollCommandsRequest, type ScanReport } from "@redflag/gen/agent_service_pb";
import { type Command, type CommandResult, CommandSchema, type SignedCommand, SignedCommandSchema } from "@redflag/gen/command_pb";
import { type AgentConfig, AgentConfigSchema, type SignedAgentConfig, SignedAgentConfigSchema, type SignedKeySet, SignedKeySetSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import * as ed from "@noble/ed25519";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

// @noble/ed25519 v3 needs SHA-512 for its synchronous API.
ed.hashes.sha512 = (m: Uint8Array) => new Uint8Array(createHash("sha512").update(m).digest());

// Written independently of agent/src: the test server must not share the code under test.
export function pae(type: string, body: Uint8Array): Uint8Array {
  const head = Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${body.length} `);
  return new Uint8Array(Buffer.concat([head, body]));
}

export interface SigningKey {
  keyId: string;
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export function newSigningKey(): SigningKey {
  const secretKey = ed.utils.randomSecretKey();
  const publicKey = ed.getPublicKey(secretKey);
  return { keyId: createHash("sha256").update(publicKey).digest("hex").slice(0, 16), publicKey, secretKey };
}

export function signCommand(command: MessageInitShape<typeof CommandSchema>, key: SigningKey): SignedCommand {
  const bytes = toBinary(CommandSchema, create(CommandSchema, command));
  return create(SignedCommandSchema, {
    command: bytes,
    signature: ed.sign(pae("redflag.v1.Command", bytes), key.secretKey),
    keyId: key.keyId,
  });
}

// Signs a config for one agent as the control plane does: the agent ID and issue time inside the
// signed bytes, Ed25519 over PAE("redflag.v1.AgentConfig", bytes).
export function signConfig(config: AgentConfig, agentId: string, issueTime: Timestamp, key: SigningKey): SignedAgentConfig {
  const bytes = toBinary(AgentConfigSchema, create(AgentConfigSchema, { ...config, agentId, issueTime }));
  return create(SignedAgentConfigSchema, {
    config: bytes,
    signature: ed.sign(pae("redflag.v1.AgentConfig", bytes), key.secretKey),
    keyId: key.keyId,
  });
}

// Issue times that only move forward, in microseconds (two deliveries may share a millisecond).
export function createIssueClock(): () => Timestamp {
  let last = 0;
  return () => {
    last = Math.max(Date.now() * 1000, last + 1);
    return create(TimestampSchema, { seconds: BigInt(Math.floor(last / 1e6)), nanos: (last % 1e6) * 1000 });
  };
}

// A TrustedKeySet of `keys` issued at `issueTime`, signed by each of `signers`.
export function signKeySet(keys: SigningKey[], signers: SigningKey[], issueTime: Date): SignedKeySet {
  const keySet = toBinary(
    TrustedKeySetSchema,
    create(TrustedKeySetSchema, { keys: keys.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey })), issueTime: timestampFromDate(issueTime) }),
  );
  return create(SignedKeySetSchema, {
    keySet,
    signatures: signers.map((k) => ({ keyId: k.keyId, signature: ed.sign(pae("redflag.v1.TrustedKeySet", keySet), k.secretKey) })),
  });
}

type Action = Command["action"];

interface FakeAgent {
  agentId: string;
  machineId: string;
  publicKey: Uint8Array;
  accessToken: string;
  accessExpires: Date;
  refreshToken: string;
  sequence: bigint;
}

export interface QueuedCommand {
  id: string;
  action: Action;
  timeoutSeconds?: number;
}

// What a test may change about the next delivery of a command.
export type Delivery = (command: MessageInitShape<typeof CommandSchema>, agent: FakeAgent) => {
  command: MessageInitShape<typeof CommandSchema>;
  key?: SigningKey;
  mutateBytes?: (signed: SignedCommand) => SignedCommand;
};

export interface FakeControlPlane {
  url: string;
  readonly key: SigningKey;
  token: string;
  agents: Map<string, FakeAgent>;
  queue(action: Action, opts?: { id?: string; timeoutSeconds?: number; deliver?: Delivery }): string;
  // Hands this exact signed command to the next poll, whatever it holds.
  injectRaw(build: (req: PollCommandsRequest, agent: FakeAgent) => SignedCommand): void;
  results: Map<string, CommandResult>;
  reports: CommandResult[][];
  polls: PollCommandsRequest[];
  // Scheduled scan reports received.
  scans: ScanReport[];
  // The config handed out at registration and on polls, signed for the agent at delivery; tests
  // may change it before registering.
  agentConfig: AgentConfig;
  // Replaces the signed config of a delivery (a man in the middle): undefined sends none.
  configDelivery: ((signed: SignedAgentConfig, agent: FakeAgent) => SignedAgentConfig | undefined) | undefined;
  // Every signed config handed out, in order.
  signedConfigs: SignedAgentConfig[];
  // The issue time of the next signed config.
  issueTime: () => Timestamp;
  renewals: number;
  registrations: number;
  // Errors thrown by the next calls of a method, in order.
  failures: Partial<Record<"register" | "renew" | "pollCommands" | "reportResults", Code[]>>;
  // Results not acknowledged while set.
  withholdAcks: boolean;
  refuse: Set<string>;
  accessTtlMs: number;
  nextPollSeconds: number;
  // Sent in Register answers (signed by `key`, issued when the fake started); a test may replace it.
  registerKeySet: SignedKeySet | undefined;
  // Handed to the next poll as its key_set, once.
  nextKeySet: SignedKeySet | undefined;
  close(): Promise<void>;
}

// Cleartext HTTP/2 (h2c) by default; with `tls`, HTTPS with ALPN h2.
export async function startFakeControlPlane(opts: { tls?: { cert: Buffer; key: Buffer } } = {}): Promise<FakeControlPlane> {
  const key = newSigningKey();
  const pending: { queued: QueuedCommand; deliver?: Delivery | undefined }[] = [];
  const raw: ((req: PollCommandsRequest, agent: FakeAgent) => SignedCommand)[] = [];
  const delivered = new Set<string>();
  const agentConfig = create(AgentConfigSchema, {
    revision: 7n,
    pollIntervalSeconds: 1,
    pollJitterPercent: 10,
    commandTimeoutSeconds: 30,
    subsystems: [{ name: "apt", enabled: true, timeoutSeconds: 120 }],
  });

  const cp: Omit<FakeControlPlane, "url" | "close"> = {
    key,
    token: "rfreg_test",
    agents: new Map(),
    results: new Map(),
    reports: [],
    polls: [],
    scans: [],
    agentConfig,
    configDelivery: undefined,
    signedConfigs: [],
    issueTime: createIssueClock(),
    renewals: 0,
    registrations: 0,
    failures: {},
    withholdAcks: false,
    refuse: new Set(),
    accessTtlMs: 15 * 60_000,
    nextPollSeconds: 1,
    registerKeySet: signKeySet([key], [key], new Date()),
    nextKeySet: undefined,
    queue(action, opts = {}) {
      const id = opts.id ?? randomUUID();
      pending.push({ queued: { id, action, ...(opts.timeoutSeconds ? { timeoutSeconds: opts.timeoutSeconds } : {}) }, deliver: opts.deliver });
      return id;
    },
    injectRaw(build) {
      raw.push(build);
    },
  };

  const deliverConfig = (agent: FakeAgent): SignedAgentConfig | undefined => {
    const signed = signConfig(cp.agentConfig, agent.agentId, cp.issueTime(), key);
    cp.signedConfigs.push(signed);
    return cp.configDelivery ? cp.configDelivery(signed, agent) : signed;
  };
  const fail = (method: keyof FakeControlPlane["failures"]) => {
    const code = cp.failures[method]?.shift();
    if (code !== undefined) throw new ConnectError(`injected ${Code[code]}`, code);
  };
  const issue = (agent: FakeAgent) => {
    agent.accessToken = randomBytes(16).toString("hex");
    agent.accessExpires = new Date(Date.now() + cp.accessTtlMs);
    agent.refreshToken = randomBytes(16).toString("hex");
  };
  const authenticate = (ctx: HandlerContext): FakeAgent => {
    const token = ctx.requestHeader.get("authorization")?.replace(/^Bearer /, "");
    const agent = [...cp.agents.values()].find((a) => a.accessToken === token);
    if (!agent || agent.accessExpires.getTime() < Date.now()) throw new ConnectError("bad access token", Code.Unauthenticated);
    if (ctx.requestHeader.get("x-machine-id") !== agent.machineId) throw new ConnectError("machine ID mismatch", Code.PermissionDenied);
    return agent;
  };

  const routes = (router: ConnectRouter) =>
    router.service(AgentService, {
      register(req) {
        fail("register");
        if (req.registrationToken !== cp.token) throw new ConnectError("registration token is not valid", Code.Unauthenticated);
        cp.registrations++;
        let agent = [...cp.agents.values()].find((a) => a.machineId === req.machineId);
        if (!agent) {
          agent = { agentId: randomUUID(), machineId: req.machineId, publicKey: req.agentPublicKey, accessToken: "", accessExpires: new Date(), refreshToken: "", sequence: 0n };
          cp.agents.set(agent.agentId, agent);
        }
        agent.publicKey = req.agentPublicKey;
        issue(agent);
        return {
          agentId: agent.agentId,
          accessToken: agent.accessToken,
          refreshToken: agent.refreshToken,
          accessTokenExpireTime: timestampFromDate(agent.accessExpires),
          trustedKeys: [{ keyId: key.keyId, publicKey: key.publicKey }],
          signedConfig: deliverConfig(agent),
          keySet: cp.registerKeySet,
        };
      },
      renew(req) {
        fail("renew");
        const payload = fromBinary(RenewPayloadSchema, req.payload);
        const agent = cp.agents.get(payload.agentId);
        if (!agent) throw new ConnectError("unknown agent", Code.Unauthenticated);
        if (!ed.verify(req.signature, pae("redflag.v1.RenewPayload", req.payload), agent.publicKey)) {
          throw new ConnectError("bad renew signature", Code.Unauthenticated);
        }
        if (payload.machineId !== agent.machineId) throw new ConnectError("machine ID mismatch", Code.PermissionDenied);
        if (Math.abs(timestampDate(payload.signTime!).getTime() - Date.now()) > 60_000) {
          throw new ConnectError("stale sign time", Code.Unauthenticated);
        }
        if (payload.refreshToken !== agent.refreshToken) {
          agent.refreshToken = randomBytes(16).toString("hex");
          agent.accessToken = "revoked";
          throw new ConnectError("refresh token re-use: credentials revoked", Code.Unauthenticated);
        }
        cp.renewals++;
        issue(agent);
        return {
          accessToken: agent.accessToken,
          refreshToken: agent.refreshToken,
          accessTokenExpireTime: timestampFromDate(agent.accessExpires),
        };
      },
      pollCommands(req, ctx) {
        fail("pollCommands");
        const agent = authenticate(ctx);
        cp.polls.push(req);
        const commands: SignedCommand[] = raw.splice(0).map((build) => build(req, agent));
        for (const { queued, deliver } of pending.splice(0)) {
          agent.sequence++;
          const now = Date.now();
          let init: MessageInitShape<typeof CommandSchema> = {
            id: queued.id,
            agentId: agent.agentId,
            sequence: agent.sequence,
            issueTime: timestampFromDate(new Date(now)),
            expireTime: timestampFromDate(new Date(now + 600_000)),
            nonce: req.nonce,
            timeoutSeconds: queued.timeoutSeconds ?? 0,
            action: queued.action,
          };
          let signingKey = key;
          let mutate: ((s: SignedCommand) => SignedCommand) | undefined;
          if (deliver) {
            const d = deliver(init, agent);
            init = d.command;
            signingKey = d.key ?? key;
            mutate = d.mutateBytes;
          }
          delivered.add(queued.id);
          const signed = signCommand(init, signingKey);
          commands.push(mutate ? mutate(signed) : signed);
        }
        const keySet = cp.nextKeySet;
        cp.nextKeySet = undefined;
        return {
          commands,
          signedConfig: req.status?.configRevision === cp.agentConfig.revision ? undefined : deliverConfig(agent),
          nextPollSeconds: cp.nextPollSeconds,
          keySet,
        };
      },
      reportResults(req, ctx) {
        fail("reportResults");
        authenticate(ctx);
        cp.reports.push(req.results);
        const acknowledgedCommandIds: string[] = [];
        const refused: { commandId: string; reason: string }[] = [];
        for (const result of req.results) {
          if (cp.refuse.has(result.commandId)) {
            refused.push({ commandId: result.commandId, reason: "never delivered to this agent" });
            continue;
          }
          if (!cp.results.has(result.commandId)) cp.results.set(result.commandId, result);
          if (!cp.withholdAcks) acknowledgedCommandIds.push(result.commandId);
        }
        cp.scans.push(...req.scans);
        return { acknowledgedCommandIds, refused, acknowledgedScanIds: cp.withholdAcks ? [] : req.scans.map((s) => s.id) };
      },
    });

  const handler = connectNodeAdapter({ routes });
  const server = opts.tls ? http2.createSecureServer({ ...opts.tls }, handler) : http2.createServer({}, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(cp, {
    url: `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  }) as FakeControlPlane;
}

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { AgentService, RegisterProofSchema, type RegisterRequestSchema, RenewPayloadSchema, type RegisterResponse } from "@redflag/gen/agent_service_pb";
import { type AgentConfig, AgentConfigSchema, OsFamily, type SignedAgentConfig } from "@redflag/gen/common_pb";
import { randomBytes } from "node:crypto";
import { AGENT_CONFIG_TYPE, REGISTER_PROOF_TYPE, RENEW_PAYLOAD_TYPE, signEnvelope, verifySignature } from "@redflag/common/signing/envelope";
import { generateKeyPair, type KeyPair } from "../../src/signing/keys.ts";
import type { TestControlPlane } from "./control-plane.ts";

export interface TestAgent {
  agentId: string;
  machineId: string;
  key: KeyPair;
  registration: RegisterResponse;
  accessToken: string;
  refreshToken: string;
  // Authenticated with this agent's access token and machine ID.
  client: Client<typeof AgentService>;
}

export const randomMachineId = () => randomBytes(32).toString("hex");

export async function newRegistrationToken(cp: TestControlPlane, seats = 10): Promise<string> {
  return (await cp.admin.tokens.createRegistrationToken({ seats, note: "test" })).secret;
}

// A RegisterProof for machineId and the key being registered, signed by `signer` (the agent's
// own key unless a test says otherwise), as a real agent sends with every Register.
export function registerProof(machineId: string, key: KeyPair, opts: { signer?: KeyPair; signTime?: Date } = {}) {
  const proof = toBinary(
    RegisterProofSchema,
    create(RegisterProofSchema, { machineId, agentPublicKey: key.publicKey, signTime: timestampFromDate(opts.signTime ?? new Date()) }),
  );
  return { proof, proofSignature: signEnvelope((opts.signer ?? key).secretKey, REGISTER_PROOF_TYPE, proof) };
}

export function registerRequest(token: string, machineId: string, key: KeyPair, hostname = "host-" + machineId.slice(0, 6)) {
  return {
    registrationToken: token,
    hostname,
    machineId,
    agentPublicKey: key.publicKey,
    os: { family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12 (bookworm)", kernel: "6.1.0-18-amd64", arch: "x86_64" },
    agentVersion: "0.1.0",
    ...registerProof(machineId, key),
  };
}

// Registers a test-driven agent directly through the API (no agent process). `request`
// overrides fields of the Register request (its version, its OS).
export async function registerTestAgent(
  cp: TestControlPlane,
  token: string,
  opts: { machineId?: string; key?: KeyPair; hostname?: string; request?: Pick<MessageInitShape<typeof RegisterRequestSchema>, "agentVersion" | "os"> } = {},
): Promise<TestAgent> {
  const machineId = opts.machineId ?? randomMachineId();
  const key = opts.key ?? generateKeyPair();
  const registration = await cp.agentClient().register({ ...registerRequest(token, machineId, key, opts.hostname), ...opts.request });
  return {
    agentId: registration.agentId,
    machineId,
    key,
    registration,
    accessToken: registration.accessToken,
    refreshToken: registration.refreshToken,
    client: cp.agentClient({ authorization: `Bearer ${registration.accessToken}`, "x-machine-id": machineId }),
  };
}

export function signedRenew(
  agent: { agentId: string; machineId: string; key: KeyPair },
  refreshToken: string,
  opts: { signTime?: Date; signingKey?: KeyPair; machineId?: string } = {},
) {
  const payload = toBinary(
    RenewPayloadSchema,
    create(RenewPayloadSchema, {
      agentId: agent.agentId,
      refreshToken,
      machineId: opts.machineId ?? agent.machineId,
      signTime: timestampFromDate(opts.signTime ?? new Date()),
    }),
  );
  const signature = signEnvelope((opts.signingKey ?? agent.key).secretKey, RENEW_PAYLOAD_TYPE, payload);
  return { payload, signature };
}

export const nonce = () => new Uint8Array(randomBytes(32));

// The config a delivery carries, read as an agent reads it: the signature checked with a key the
// registration handed out, then decoded, and bound to this agent. Undefined when none was sent.
export function configIn(agent: { agentId: string; registration: RegisterResponse }, signed: SignedAgentConfig | undefined): AgentConfig | undefined {
  if (!signed) return undefined;
  const key = agent.registration.trustedKeys.find((k) => k.keyId === signed.keyId);
  if (!key || !verifySignature(key.publicKey, AGENT_CONFIG_TYPE, signed.config, signed.signature)) throw new Error("the config's signature does not verify");
  const config = fromBinary(AgentConfigSchema, signed.config);
  if (config.agentId !== agent.agentId) throw new Error(`the config is for agent ${config.agentId}, not ${agent.agentId}`);
  return config;
}

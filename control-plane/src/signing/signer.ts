import { create, toBinary } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandSchema, type SignedCommand, SignedCommandSchema } from "@redflag/gen/command_pb";
import {
  AgentConfigSchema,
  type SignedAgentConfig,
  SignedAgentConfigSchema,
  type SignedKeySet,
  SignedKeySetSchema,
  type TrustedKey,
  TrustedKeySchema,
  TrustedKeySetSchema,
} from "@redflag/gen/common_pb";
import { AGENT_CONFIG_TYPE, COMMAND_TYPE, KEY_SET_TYPE, MANIFEST_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { fingerprintOf, keySetRevision } from "@redflag/common/signing/key-ids";
import type { KeyPair } from "./keys.ts";

export interface CommandHeader {
  id: string;
  agentId: string;
  sequence: bigint;
  // The first delivery's sequence; a command delivered again keeps it.
  firstSequence?: bigint;
  issueTime: Date;
  expireTime: Date;
  nonce: Uint8Array;
}

export interface CommandSigner {
  readonly activeKeyId: string;
  trustedKeys(): TrustedKey[];
  // The trusted keys as a set signed by each of them, for agents to follow a rotation.
  keySet(): SignedKeySet;
  // The set's revision, as agents derive it from the keys they pin.
  keySetRevision(): bigint;
  // After a rotation, or when a key's grace period ended (on any replica). issueTime is when
  // this set of keys came to be (see ensureSigningKeys): agents accept only newer sets.
  replace(active: KeyPair, trusted: KeyPair[], issueTime?: Date): void;
  // `action` is a serialized Command holding only the action (and timeout); the header fields
  // are serialized separately and concatenated, which protobuf defines as merging the two.
  signCommand(header: CommandHeader, action: Uint8Array): SignedCommand;
  // Ed25519 over PAE("redflag.v1.ArtifactManifest", manifest) for update_agent.
  signManifest(manifest: Uint8Array): { manifestSignature: Uint8Array; keyId: string };
  // `content` is a serialized AgentConfig without agent_id and issue_time; those are serialized
  // separately and appended (a protobuf merge, where the last value of a field wins), so the
  // content is serialized once for every agent that shares it. Ed25519 over
  // PAE("redflag.v1.AgentConfig", bytes).
  signAgentConfig(header: AgentConfigHeader, content: Uint8Array): SignedAgentConfig;
}

// What binds a config to one agent and one moment.
export interface AgentConfigHeader {
  agentId: string;
  issueTime: Timestamp;
}

// What was signed, for the signature-operation metric.
export type SignatureKind = "command" | "manifest" | "key_set" | "agent_config";

export function createCommandSigner(
  initialActive: KeyPair,
  initialTrusted: KeyPair[],
  onSign: (kind: SignatureKind, count: number) => void = () => {},
  initialIssueTime: Date = new Date(),
): CommandSigner {
  let active = initialActive;
  let keys: TrustedKey[] = [];
  let signedSet: SignedKeySet;
  let revision = 0n;
  const build = (trusted: KeyPair[], issueTime: Date) => {
    keys = trusted.map((k) => create(TrustedKeySchema, { keyId: k.keyId, publicKey: k.publicKey }));
    revision = keySetRevision(keys.map((k) => k.keyId));
    const body = toBinary(TrustedKeySetSchema, create(TrustedKeySetSchema, { keys, revision, issueTime: timestampFromDate(issueTime) }));
    signedSet = create(SignedKeySetSchema, {
      keySet: body,
      signatures: trusted.map((k) => ({ keyId: k.keyId, signature: signEnvelope(k.secretKey, KEY_SET_TYPE, body) })),
    });
    onSign("key_set", trusted.length);
  };
  build(initialTrusted, initialIssueTime);
  return {
    get activeKeyId() {
      return active.keyId;
    },
    trustedKeys: () => keys,
    keySet: () => signedSet,
    keySetRevision: () => revision,
    replace(nextActive, trusted, issueTime = new Date()) {
      active = nextActive;
      build(trusted, issueTime);
    },
    signCommand(header, action) {
      const head = toBinary(
        CommandSchema,
        create(CommandSchema, {
          id: header.id,
          agentId: header.agentId,
          sequence: header.sequence,
          firstSequence: header.firstSequence ?? header.sequence,
          issueTime: timestampFromDate(header.issueTime),
          expireTime: timestampFromDate(header.expireTime),
          nonce: header.nonce,
        }),
      );
      const command = joined(head, action);
      onSign("command", 1);
      return create(SignedCommandSchema, {
        command,
        signature: signEnvelope(active.secretKey, COMMAND_TYPE, command),
        keyId: active.keyId,
      });
    },
    signManifest(manifest) {
      onSign("manifest", 1);
      return { manifestSignature: signEnvelope(active.secretKey, MANIFEST_TYPE, manifest), keyId: active.keyId };
    },
    signAgentConfig(header, content) {
      const head = toBinary(AgentConfigSchema, create(AgentConfigSchema, { agentId: header.agentId, issueTime: header.issueTime }));
      const config = joined(content, head);
      onSign("agent_config", 1);
      return create(SignedAgentConfigSchema, {
        config,
        signature: signEnvelope(active.secretKey, AGENT_CONFIG_TYPE, config),
        keyId: active.keyId,
      });
    },
  };
}

// Two serialized messages as one: Protobuf reads concatenated messages as their merge, so the
// per-recipient header fields join bytes serialized once for many recipients.
function joined(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// The fingerprint agents pin: SHA-256 of the active command-signing key.
export function activeKeyFingerprint(signer: Pick<CommandSigner, "activeKeyId" | "trustedKeys">): string {
  const active = signer.trustedKeys().find((k) => k.keyId === signer.activeKeyId);
  if (!active) throw new Error("the active signing key is not among the trusted keys");
  return fingerprintOf(active.publicKey);
}

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { COMMAND_TYPE, KEY_SET_TYPE, AGENT_CONFIG_TYPE, pae, verifySignature } from "@redflag/common/signing/envelope";
import { signingVectors } from "@redflag/common/signing/test-vectors";
import { CommandSchema } from "@redflag/gen/command_pb";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { generateKeyPair, keyPairFromSecret, seal, unseal } from "./keys.ts";
import { activeKeyFingerprint, createCommandSigner } from "./signer.ts";

const text = (s: string) => new TextEncoder().encode(s);

describe("keys", () => {
  it("carry a 16-hex key ID", () => {
    const key = generateKeyPair();
    expect(key.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyPairFromSecret(key.secretKey)).toEqual(key);
  });

  it("seal secrets so only the same master key and purpose open them", () => {
    const master = randomBytes(32);
    const sealed = seal(master, "redflag.secret.a", text("secret"));
    expect(Buffer.from(unseal(master, "redflag.secret.a", sealed)).toString()).toBe("secret");
    expect(() => unseal(randomBytes(32), "redflag.secret.a", sealed)).toThrow(/master key/);
    expect(() => unseal(master, "redflag.secret.b", sealed)).toThrow(/master key/);
  });
});

describe("command signer", () => {
  it("signs header + stored action as one Command the agent can verify and decode", () => {
    const key = generateKeyPair();
    const signer = createCommandSigner(key, [key]);
    const action = toBinary(
      CommandSchema,
      create(CommandSchema, { action: { case: "scanUpdates", value: { subsystems: ["apt"] } }, timeoutSeconds: 90 }),
    );
    const nonce = new Uint8Array(randomBytes(16));
    const signed = signer.signCommand(
      { id: "c1", agentId: "a1", sequence: 7n, issueTime: new Date(1000), expireTime: new Date(601_000), nonce },
      action,
    );
    expect(signed.keyId).toBe(key.keyId);
    expect(verifySignature(key.publicKey, COMMAND_TYPE, signed.command, signed.signature)).toBe(true);
    const command = fromBinary(CommandSchema, signed.command);
    expect(command).toMatchObject({ id: "c1", agentId: "a1", sequence: 7n, timeoutSeconds: 90 });
    expect(command.action).toMatchObject({ case: "scanUpdates", value: { subsystems: ["apt"] } });
    const tampered = signed.command.slice();
    tampered[3]! ^= 1;
    expect(verifySignature(key.publicKey, COMMAND_TYPE, tampered, signed.signature)).toBe(false);
    expect(signer.trustedKeys()).toEqual([expect.objectContaining({ keyId: key.keyId })]);
  });
});

// The golden vectors (common/testdata/signing-vectors.json): the signer, given the vector's key
// and inputs, produces exactly the vector's payload, PAE and signature.
describe("golden signing vectors, as the control plane signs them", () => {
  const vectors = signingVectors();
  const key = keyPairFromSecret(vectors.seed);
  const issueTime = new Date("2026-01-02T03:04:05Z");
  const agentId = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b";
  const signer = createCommandSigner(key, [key], () => {}, issueTime);
  const expectVector = (name: keyof typeof vectors.envelopes, type: string, payload: Uint8Array, signature: Uint8Array) => {
    const v = vectors.envelopes[name];
    expect(v.payloadType).toBe(type);
    expect(Buffer.from(payload).toString("hex")).toBe(Buffer.from(v.payload).toString("hex"));
    expect(Buffer.from(pae(type, payload)).toString("hex")).toBe(Buffer.from(v.pae).toString("hex"));
    expect(Buffer.from(signature).toString("hex")).toBe(Buffer.from(v.signature).toString("hex"));
  };

  it("derive the vector's key, key ID, fingerprint and key-set revision", () => {
    expect(key.publicKey).toEqual(vectors.publicKey);
    expect(key.keyId).toBe(vectors.keyId);
    expect(activeKeyFingerprint(signer)).toBe(vectors.fingerprint);
    expect(signer.keySetRevision()).toBe(vectors.keySetRevision);
  });

  it("sign the vector's command", () => {
    const action = toBinary(CommandSchema, create(CommandSchema, { action: { case: "scanUpdates", value: { subsystems: ["apt"] } }, timeoutSeconds: 90 }));
    const signed = signer.signCommand(
      {
        id: "0b3e8f6a-4c1d-4e2f-9a7b-5c6d7e8f9a0b",
        agentId,
        sequence: 7n,
        issueTime,
        expireTime: new Date(issueTime.getTime() + 600_000),
        nonce: new Uint8Array(32).map((_, i) => i),
      },
      action,
    );
    expect(signed.keyId).toBe(vectors.keyId);
    expectVector("command", COMMAND_TYPE, signed.command, signed.signature);
  });

  it("sign the vector's key set", () => {
    const set = signer.keySet();
    expect(set.signatures.map((s) => s.keyId)).toEqual([vectors.keyId]);
    expectVector("keySet", KEY_SET_TYPE, set.keySet, set.signatures[0]!.signature);
  });

  it("sign the vector's agent config", () => {
    const content = toBinary(AgentConfigSchema, create(AgentConfigSchema, { revision: 3n, pollIntervalSeconds: 60 }));
    const signed = signer.signAgentConfig({ agentId, issueTime: timestampFromDate(issueTime) }, content);
    expect(signed.keyId).toBe(vectors.keyId);
    expectVector("agentConfig", AGENT_CONFIG_TYPE, signed.config, signed.signature);
  });
});

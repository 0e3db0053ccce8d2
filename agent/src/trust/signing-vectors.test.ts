import { create } from "@bufbuild/protobuf";
import { SignedKeySetSchema, SignedAgentConfigSchema } from "@redflag/gen/common_pb";
import { type SignedCommand, SignedCommandSchema } from "@redflag/gen/command_pb";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { signingVectors } from "@redflag/common/signing/test-vectors";
import { describe, expect, it } from "vitest";
import { verifyEnvelope } from "./envelope.ts";
import { checkKeySet, NO_KEY_SET_STATE } from "./key-set.ts";
import { openSignedConfig } from "./signed-config.ts";
import { openSignedCommand } from "./verify.ts";

// The golden vectors (common/testdata/signing-vectors.json) through the agent's own
// verification: what the control plane signs, byte for byte, is accepted, and nothing else.
const vectors = signingVectors();
const pins = new Map([[vectors.keyId, vectors.publicKey]]);
const { command, keySet, agentConfig } = vectors.envelopes;
const agentId = "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b";
const flipped = (bytes: Uint8Array, index: number) => {
  const out = bytes.slice();
  out[index]! ^= 0x01;
  return out;
};
const signedCommand = (fields: Partial<Pick<SignedCommand, "command" | "signature">> = {}) =>
  create(SignedCommandSchema, { command: command.payload, signature: command.signature, keyId: vectors.keyId, ...fields });

describe("golden signing vectors, as the agent verifies them", () => {
  it("pin the vector key under its ID", () => {
    expect(keyIdOf(vectors.publicKey)).toBe(vectors.keyId);
  });

  it("accept the signed command and refuse it with any one byte of payload or signature flipped", () => {
    const opened = openSignedCommand(signedCommand(), pins);
    expect(opened).toMatchObject({ ok: true, command: { id: "0b3e8f6a-4c1d-4e2f-9a7b-5c6d7e8f9a0b", agentId, sequence: 7n, timeoutSeconds: 90 } });
    for (const index of [0, command.payload.length >> 1, command.payload.length - 1]) {
      expect(openSignedCommand(signedCommand({ command: flipped(command.payload, index) }), pins)).toMatchObject({
        ok: false,
        reason: `signature does not verify with pinned key ${vectors.keyId}`,
      });
    }
    for (const index of [0, 31, 32, 63]) {
      expect(openSignedCommand(signedCommand({ signature: flipped(command.signature, index) }), pins).ok).toBe(false);
    }
  });

  it("accept the signed key set, with the vector's revision, and refuse it with one byte flipped", () => {
    const signed = (bytes: Uint8Array, signature = keySet.signature) =>
      create(SignedKeySetSchema, { keySet: bytes, signatures: [{ keyId: vectors.keyId, signature }] });
    expect(checkKeySet(signed(keySet.payload), pins, NO_KEY_SET_STATE)).toMatchObject({ ok: true, signer: vectors.keyId, revision: vectors.keySetRevision });
    expect(checkKeySet(signed(flipped(keySet.payload, 5)), pins, NO_KEY_SET_STATE).ok).toBe(false);
    expect(checkKeySet(signed(keySet.payload, flipped(keySet.signature, 40)), pins, NO_KEY_SET_STATE).ok).toBe(false);
  });

  it("accept the signed agent config and refuse it with one byte flipped", () => {
    const signed = (bytes: Uint8Array) => create(SignedAgentConfigSchema, { config: bytes, signature: agentConfig.signature, keyId: vectors.keyId });
    const ctx = { agentId, current: undefined, now: new Date("2026-01-02T03:05:00Z") };
    expect(openSignedConfig(signed(agentConfig.payload), pins, ctx)).toMatchObject({ ok: true, config: { revision: 3n, pollIntervalSeconds: 60, agentId } });
    expect(openSignedConfig(signed(flipped(agentConfig.payload, 1)), pins, ctx).ok).toBe(false);
  });

  it("refuse what only ZIP-215 accepts, even under a pinned small-order key", () => {
    for (const v of vectors.refused) {
      const smallOrderPins = new Map([["k", v.publicKey]]);
      expect(verifyEnvelope(smallOrderPins, "k", v.payloadType, v.payload, v.signature)).toEqual({ ok: false, reason: "signature does not verify with pinned key k" });
    }
  });
});

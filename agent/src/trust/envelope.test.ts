import { describe, expect, it } from "vitest";
import { COMMAND_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { generateKeyPair, verifyEnvelope } from "./envelope.ts";
import { keyIdOf } from "@redflag/common/signing/key-ids";

describe("verifyEnvelope", () => {
  const key = generateKeyPair();
  const keyId = keyIdOf(key.publicKey);
  const pins = new Map([[keyId, key.publicKey]]);
  const body = new Uint8Array(Buffer.from("serialized command bytes"));
  const signature = signEnvelope(key.secretKey, COMMAND_TYPE, body);

  it("accepts a signature by the pinned key", () => {
    expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, body, signature)).toEqual({ ok: true });
  });

  it("rejects a body with one byte changed", () => {
    for (const index of [0, 7, body.length - 1]) {
      const tampered = body.slice();
      tampered[index]! ^= 0x01;
      expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, tampered, signature)).toEqual({
        ok: false,
        reason: `signature does not verify with pinned key ${keyId}`,
      });
    }
  });

  it("rejects a changed signature and a signature of the wrong length", () => {
    const bad = signature.slice();
    bad[10]! ^= 0x80;
    expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, body, bad).ok).toBe(false);
    expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, body, signature.subarray(0, 63)).ok).toBe(false);
    expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, body, new Uint8Array(64)).ok).toBe(false);
  });

  it("rejects a signature by another key presented under the pinned key's ID", () => {
    const other = generateKeyPair();
    const forged = signEnvelope(other.secretKey, COMMAND_TYPE, body);
    expect(verifyEnvelope(pins, keyId, COMMAND_TYPE, body, forged)).toEqual({
      ok: false,
      reason: `signature does not verify with pinned key ${keyId}`,
    });
  });

  it("rejects a key ID that is not pinned, even with a valid signature by that key", () => {
    const other = generateKeyPair();
    const otherId = keyIdOf(other.publicKey);
    const sig = signEnvelope(other.secretKey, COMMAND_TYPE, body);
    expect(verifyEnvelope(pins, otherId, COMMAND_TYPE, body, sig)).toEqual({ ok: false, reason: `unknown signing key ${otherId}` });
  });

  it("binds the signature to the message type", () => {
    expect(verifyEnvelope(pins, keyId, "redflag.v1.RenewPayload", body, signature).ok).toBe(false);
  });

  it("keeps hostile key IDs printable in the reason", () => {
    const result = verifyEnvelope(pins, "evil\nid\u0000" + "x".repeat(200), COMMAND_TYPE, body, signature);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.reason).not.toMatch(/[\n\u0000]/);
      expect(result.reason.length).toBeLessThan(100);
    }
  });
});

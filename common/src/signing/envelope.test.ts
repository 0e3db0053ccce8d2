import { createPublicKey, verify as nodeVerify } from "node:crypto";
import * as ed from "@noble/ed25519";
import { describe, expect, it } from "vitest";
import {
  AGENT_CONFIG_TYPE,
  isUsablePublicKey,
  COMMAND_TYPE,
  KEY_SET_TYPE,
  MANIFEST_TYPE,
  newSecretKey,
  pae,
  publicKeyOf,
  REGISTER_PROOF_TYPE,
  RENEW_PAYLOAD_TYPE,
  signEnvelope,
  verifySignature,
} from "./envelope.ts";
import { fingerprintOf, keyIdOf, keySetRevision } from "./key-ids.ts";
import { signingVectors } from "./test-vectors.ts";

const text = (s: string) => new TextEncoder().encode(s);
const vectors = signingVectors();

describe("pae", () => {
  it("matches the DSSE test vector", () => {
    expect(Buffer.from(pae("http://example.com/HelloWorld", text("hello world"))).toString()).toBe(
      "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
    );
  });

  it("counts bytes, not characters", () => {
    expect(Buffer.from(pae("t", text("é"))).toString()).toBe("DSSEv1 1 t 2 é");
    expect(Buffer.from(pae("t", new Uint8Array())).toString()).toBe("DSSEv1 1 t 0 ");
  });
});

describe("payload types", () => {
  it("are the messages' fully qualified names", () => {
    expect([COMMAND_TYPE, RENEW_PAYLOAD_TYPE, MANIFEST_TYPE, KEY_SET_TYPE, AGENT_CONFIG_TYPE, REGISTER_PROOF_TYPE]).toEqual([
      "redflag.v1.Command",
      "redflag.v1.RenewPayload",
      "redflag.v1.ArtifactManifest",
      "redflag.v1.TrustedKeySet",
      "redflag.v1.AgentConfig",
      "redflag.v1.RegisterProof",
    ]);
  });
});

describe("signEnvelope and verifySignature", () => {
  const secretKey = newSecretKey();
  const publicKey = publicKeyOf(secretKey);
  const body = text("same bytes");
  const signature = signEnvelope(secretKey, COMMAND_TYPE, body);

  it("bind the signature to the key, the type and every byte", () => {
    expect(verifySignature(publicKey, COMMAND_TYPE, body, signature)).toBe(true);
    expect(verifySignature(publicKey, RENEW_PAYLOAD_TYPE, body, signature)).toBe(false);
    expect(verifySignature(publicKeyOf(newSecretKey()), COMMAND_TYPE, body, signature)).toBe(false);
    const tampered = body.slice();
    tampered[0]! ^= 1;
    expect(verifySignature(publicKey, COMMAND_TYPE, tampered, signature)).toBe(false);
  });

  it("refuse malformed keys and signatures instead of throwing", () => {
    expect(verifySignature(new Uint8Array(31), COMMAND_TYPE, body, new Uint8Array(64))).toBe(false);
    expect(verifySignature(publicKey, COMMAND_TYPE, body, signature.subarray(0, 63))).toBe(false);
    expect(verifySignature(publicKey, COMMAND_TYPE, body, new Uint8Array(64))).toBe(false);
    expect(verifySignature(new Uint8Array(32).fill(255), COMMAND_TYPE, body, new Uint8Array(64))).toBe(false);
  });

  it("refuse what only ZIP-215 accepts: a small-order key with a forged signature, canonical or not", () => {
    for (const v of vectors.refused) {
      // The library's default (ZIP-215) takes them for any message: a universal forgery.
      expect(ed.verify(v.signature, pae(v.payloadType, v.payload), v.publicKey)).toBe(true);
      expect(ed.verify(v.signature, pae(v.payloadType, text("anything else")), v.publicKey)).toBe(true);
      expect(verifySignature(v.publicKey, v.payloadType, v.payload, v.signature)).toBe(false);
    }
  });
});

describe("golden vectors", () => {
  it("give the key's ID, fingerprint and one-key set revision", () => {
    expect(publicKeyOf(vectors.seed)).toEqual(vectors.publicKey);
    expect(keyIdOf(vectors.publicKey)).toBe(vectors.keyId);
    expect(fingerprintOf(vectors.publicKey)).toBe(vectors.fingerprint);
    expect(keySetRevision([vectors.keyId])).toBe(vectors.keySetRevision);
  });

  it("give each envelope's PAE and signature, which node:crypto's Ed25519 accepts too", () => {
    const spki = createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), vectors.publicKey]), format: "der", type: "spki" });
    for (const v of Object.values(vectors.envelopes)) {
      expect(pae(v.payloadType, v.payload)).toEqual(v.pae);
      expect(signEnvelope(vectors.seed, v.payloadType, v.payload)).toEqual(v.signature);
      expect(verifySignature(vectors.publicKey, v.payloadType, v.payload, v.signature)).toBe(true);
      expect(nodeVerify(null, v.pae, spki, v.signature)).toBe(true);
    }
  });
});

describe("key ids", () => {
  it("are 16 hex characters; the revision ignores the keys' order", () => {
    const id = keyIdOf(publicKeyOf(newSecretKey()));
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(fingerprintOf(new Uint8Array(32))).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    expect(keySetRevision(["b", "a"])).toBe(keySetRevision(["a", "b"]));
    expect(keySetRevision(["a", "b"])).toBeLessThan(2n ** 53n);
  });
});

describe("isUsablePublicKey", () => {
  it("accepts a real key and refuses small-order points, non-canonical encodings and wrong lengths", () => {
    expect(isUsablePublicKey(publicKeyOf(newSecretKey()))).toBe(true);
    const identity = new Uint8Array(32);
    identity[0] = 1;
    expect(isUsablePublicKey(identity)).toBe(false);
    // y = p + 1: a non-canonical encoding of the identity, which ZIP-215 decodes.
    const nonCanonical = new Uint8Array(32).fill(0xff);
    nonCanonical[0] = 0xee;
    nonCanonical[31] = 0x7f;
    expect(isUsablePublicKey(nonCanonical)).toBe(false);
    expect(isUsablePublicKey(new Uint8Array(31))).toBe(false);
  });
});

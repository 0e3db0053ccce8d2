import * as ed from "@noble/ed25519";
import { RegisterProofSchema, RenewPayloadSchema } from "@redflag/gen/agent_service_pb";
import { ArtifactManifestSchema, CommandSchema } from "@redflag/gen/command_pb";
import { AgentConfigSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { createHash } from "node:crypto";

// The signing envelope agent and control plane share: Ed25519 over the DSSE pre-authentication
// encoding of a serialized message, verified over the exact bytes received before anything
// decodes them. Golden vectors: common/testdata/signing-vectors.json.

// @noble/ed25519 v3 needs SHA-512 for its synchronous API; node:crypto provides it.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash("sha512").update(message).digest());

// Payload types: the fully qualified names of the signed messages, as the schemas give them.
export const COMMAND_TYPE: string = CommandSchema.typeName;
export const RENEW_PAYLOAD_TYPE: string = RenewPayloadSchema.typeName;
export const MANIFEST_TYPE: string = ArtifactManifestSchema.typeName;
export const KEY_SET_TYPE: string = TrustedKeySetSchema.typeName;
export const AGENT_CONFIG_TYPE: string = AgentConfigSchema.typeName;
export const REGISTER_PROOF_TYPE: string = RegisterProofSchema.typeName;

const encoder = new TextEncoder();

// DSSE pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in
// ASCII decimal bytes. Signing PAE(type, body) rather than the body alone means a signature over
// one message type can never be passed off as another.
export function pae(type: string, body: Uint8Array): Uint8Array {
  const typeBytes = encoder.encode(type);
  const head = encoder.encode(`DSSEv1 ${typeBytes.length} ${type} ${body.length} `);
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

export function newSecretKey(): Uint8Array {
  return ed.utils.randomSecretKey();
}

export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  return ed.getPublicKey(secretKey);
}

// Ed25519 (deterministic) by `secretKey` over PAE(type, body).
export function signEnvelope(secretKey: Uint8Array, type: string, body: Uint8Array): Uint8Array {
  return ed.sign(pae(type, body), secretKey);
}

// Whether `signature` is Ed25519 by `publicKey` over PAE(type, body). RFC 8032 strict mode
// (zip215: false) on every side: no non-canonical encodings and no small-order keys, which the
// library's ZIP-215 default accepts (with the identity point as key, one fixed signature
// "verifies" over any message).
export function verifySignature(publicKey: Uint8Array, type: string, body: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return ed.verify(signature, pae(type, body), publicKey, { zip215: false });
  } catch {
    return false;
  }
}

// A key an agent may enrol with: the canonical encoding of a point that is not of small order.
// No strict signature ever verifies with a small-order key, and with ZIP-215 rules one fixed
// signature "verifies" over any message: such a key is refused at Register, not stored.
export function isUsablePublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== 32) return false;
  try {
    return !ed.Point.fromBytes(publicKey, false).isSmallOrder();
  } catch {
    return false;
  }
}

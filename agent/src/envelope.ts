import * as ed from "@noble/ed25519";
import { createHash } from "node:crypto";

// @noble/ed25519 v3 needs SHA-512 for its synchronous API; node:crypto provides it.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash("sha512").update(message).digest());

export const COMMAND_TYPE = "redflag.v1.Command";
export const RENEW_PAYLOAD_TYPE = "redflag.v1.RenewPayload";
export const KEY_SET_TYPE = "redflag.v1.TrustedKeySet";
export const AGENT_CONFIG_TYPE = "redflag.v1.AgentConfig";
export const REGISTER_PROOF_TYPE = "redflag.v1.RegisterProof";

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

// The ID of a key: the first 16 hex characters of SHA-256 over the raw public key.
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

export interface KeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  const secretKey = ed.utils.randomSecretKey();
  return { secretKey, publicKey: ed.getPublicKey(secretKey) };
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  return { secretKey, publicKey: ed.getPublicKey(secretKey) };
}

export function signEnvelope(secretKey: Uint8Array, type: string, body: Uint8Array): Uint8Array {
  return ed.sign(pae(type, body), secretKey);
}

// Pinned command-signing keys by key ID.
export type PinnedKeys = ReadonlyMap<string, Uint8Array>;

export type Verification = { ok: true } | { ok: false; reason: string };

// Checks that `signature` is Ed25519 by the pinned key `keyId` over PAE(type, body): the exact
// bytes received, before anything decodes them.
export function verifyEnvelope(
  pins: PinnedKeys,
  keyId: string,
  type: string,
  body: Uint8Array,
  signature: Uint8Array,
): Verification {
  const publicKey = pins.get(keyId);
  if (!publicKey) return { ok: false, reason: `unknown signing key ${printable(keyId)}` };
  const bad = { ok: false, reason: `signature does not verify with pinned key ${keyId}` } as const;
  if (signature.length !== 64) return bad;
  try {
    // RFC 8032 strict mode: no malleable or non-canonical signatures.
    return ed.verify(signature, pae(type, body), publicKey, { zip215: false }) ? { ok: true } : bad;
  } catch {
    return bad;
  }
}

// Untrusted strings end up in logs and reports: keep them short and single-line.
export function printable(text: string, max = 64): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean || '""';
}

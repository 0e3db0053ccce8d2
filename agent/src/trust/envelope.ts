import { newSecretKey, publicKeyOf, verifySignature } from "@redflag/common/signing/envelope";

// The agent's side of the signing envelope (common/src/signing/): its own key pair, the keys it
// pins, and verification against them with a reason to log and report.

export interface KeyPair {
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  return keyPairFromSecret(newSecretKey());
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  return { secretKey, publicKey: publicKeyOf(secretKey) };
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
  if (verifySignature(publicKey, type, body, signature)) return { ok: true };
  return { ok: false, reason: `signature does not verify with pinned key ${keyId}` };
}

// Untrusted strings end up in logs and reports: keep them short and single-line.
export function printable(text: string, max = 64): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean || '""';
}

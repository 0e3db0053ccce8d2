import { fromBinary } from "@bufbuild/protobuf";
import { type SignedKeySet, type TrustedKey, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { createHash } from "node:crypto";
import { KEY_SET_TYPE, keyIdOf, type PinnedKeys, verifyEnvelope } from "./envelope.ts";

const MAX_KEYS = 8;

// The revision of a set of pinned keys, derived the way the control plane derives it: 53 bits
// of SHA-256 over the sorted key IDs joined by ",". The agent reports it on every poll.
export function keySetRevision(keyIds: Iterable<string>): bigint {
  return createHash("sha256").update([...keyIds].sort().join(",")).digest().readBigUInt64BE(0) & 0x1f_ffff_ffff_ffffn;
}

export type KeySetCheck = { ok: true; keys: TrustedKey[]; signer: string } | { ok: false; reason: string };

// A new set of command-signing keys (a rotation) is accepted only when a key this agent
// already pins signed those exact bytes, and every key in it is what its ID says. The set
// replaces the pins: a key left out of it is no longer trusted.
export function checkKeySet(signed: SignedKeySet, pins: PinnedKeys): KeySetCheck {
  const signer = signed.signatures.find((s) => pins.has(s.keyId) && verifyEnvelope(pins, s.keyId, KEY_SET_TYPE, signed.keySet, s.signature).ok);
  if (!signer) {
    const ids = signed.signatures.map((s) => s.keyId).join(", ") || "none";
    return { ok: false, reason: `key set not signed by a pinned key (signed by: ${ids.slice(0, 200)})` };
  }
  let keys: TrustedKey[];
  try {
    keys = fromBinary(TrustedKeySetSchema, signed.keySet).keys;
  } catch {
    return { ok: false, reason: "signed bytes are not a redflag.v1.TrustedKeySet" };
  }
  if (keys.length === 0 || keys.length > MAX_KEYS) return { ok: false, reason: `a key set must hold 1 to ${MAX_KEYS} keys` };
  for (const key of keys) {
    if (key.publicKey.length !== 32 || keyIdOf(key.publicKey) !== key.keyId) return { ok: false, reason: `key ${key.keyId.slice(0, 32)} does not match its public key` };
  }
  return { ok: true, keys, signer: signer.keyId };
}

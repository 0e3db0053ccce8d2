import { createHash } from "node:crypto";

// The ID of a key: the first 16 hex characters of SHA-256 over the raw public key. Every
// signature names the key that made it by this ID.
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

// The fingerprint people compare: SHA-256 of the public key, colon-separated lowercase hex, as
// the console's setup and Security pages, `redflag tokens create` and the agent's `register
// --fingerprint` show and read it.
export function fingerprintOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").match(/../g)!.join(":");
}

// The revision of a set of keys: 53 bits (exact in JSON too) of SHA-256 over the sorted key IDs
// joined by ",". The control plane puts it in the signed set; agents derive it from the keys
// they pin and report it on every poll.
export function keySetRevision(keyIds: Iterable<string>): bigint {
  return createHash("sha256").update([...keyIds].sort().join(",")).digest().readBigUInt64BE(0) & 0x1f_ffff_ffff_ffffn;
}

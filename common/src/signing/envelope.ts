import * as ed from "@noble/ed25519";
import { RegisterProofSchema, RenewPayloadSchema } from "@redflag/gen/agent_service_pb";
import { ArtifactManifestSchema, CommandSchema } from "@redflag/gen/command_pb";
import { AgentConfigSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { createHash, createPublicKey, verify as opensslVerify } from "node:crypto";

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
  return signWithExpandedKey(expandedKey(secretKey), pae(type, body));
}

// RFC 8032 5.1.6 signing from the key noble expands (5.1.5) once per secret key. `ed.sign` expands
// it again on every call, a base-point multiplication that is about half of its cost; every
// Register and every delivered command is signed (docs/benchmarks.md, benchmarks 4 and 9).
// The scalar arithmetic and the point multiplication are noble's; Ed25519 is deterministic, so
// the signature is byte for byte `ed.sign`'s, which envelope.test.ts checks against noble and
// OpenSSL on random keys and messages, and against the golden vectors. Secret keys are never
// changed in place, so the cache is keyed by the array itself.
type ExpandedKey = ReturnType<typeof ed.utils.getExtendedPublicKey>;
const expandedKeys = new WeakMap<Uint8Array, ExpandedKey>();
const ORDER = 2n ** 252n + 27742317777372353535851937790883648493n; // L, the base point's order

function expandedKey(secretKey: Uint8Array): ExpandedKey {
  let key = expandedKeys.get(secretKey);
  if (!key) {
    key = ed.utils.getExtendedPublicKey(secretKey);
    expandedKeys.set(secretKey, key);
  }
  return key;
}

function signWithExpandedKey(key: ExpandedKey, message: Uint8Array): Uint8Array {
  // r = SHA-512(prefix || M) mod L; R = [r]B; k = SHA-512(R || A || M) mod L; S = (r + k·s) mod L.
  const r = littleEndian(createHash("sha512").update(key.prefix).update(message).digest()) % ORDER;
  const R = ed.Point.BASE.multiply(r).toBytes();
  const k = littleEndian(createHash("sha512").update(R).update(key.pointBytes).update(message).digest()) % ORDER;
  let S = (r + k * key.scalar) % ORDER;
  const signature = new Uint8Array(64);
  signature.set(R, 0);
  for (let i = 32; i < 64; i++, S >>= 8n) signature[i] = Number(S & 0xffn);
  return signature;
}

function littleEndian(bytes: Uint8Array): bigint {
  return BigInt(`0x${Buffer.from(bytes).reverse().toString("hex")}`);
}

// Whether `signature` is Ed25519 by `publicKey` over PAE(type, body). RFC 8032 strict mode
// (zip215: false) on every side: no non-canonical encodings and no small-order keys, which the
// library's ZIP-215 default accepts (with the identity point as key, one fixed signature
// "verifies" over any message).
//
// The answer is always exactly @noble/ed25519's strict verify; OpenSSL (node:crypto) only makes
// the common case cheap, about 0.07 ms against 1.4 ms (docs/benchmarks.md, benchmark 9). OpenSSL
// checks the cofactorless equation [S]B = R + [k]A by re-encoding R, which implies noble's
// cofactored [8][S]B = [8]R + [8][k]A; what OpenSSL does not check (canonical A and R, S < L, a
// key of small order) is checked here first. So an OpenSSL "yes" after those checks is noble's
// "yes", and every other input gets noble's own answer: an encoding the checks refuse can never
// verify with noble, and the rare signature only the cofactored equation accepts (crafted with
// a torsion component) still verifies, so the two sides never disagree.
export function verifySignature(publicKey: Uint8Array, type: string, body: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const message = pae(type, body);
  if (!isCanonicalPoint(publicKey) || !isCanonicalPoint(signature.subarray(0, 32)) || !isBelowOrder(signature.subarray(32))) return false;
  if (SMALL_ORDER_KEYS.has(Buffer.from(publicKey).toString("hex"))) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: "der", type: "spki" });
    if (opensslVerify(null, message, key, signature)) return true;
  } catch {
    // Not a point OpenSSL can decode: noble decides below.
  }
  try {
    return ed.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const ORDER_LE = Buffer.from("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010", "hex");

// S < L, the little-endian 32 bytes compared from the most significant end.
function isBelowOrder(s: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    if (s[i]! !== ORDER_LE[i]!) return s[i]! < ORDER_LE[i]!;
  }
  return false;
}

// RFC 8032 strict decoding's conditions on the bytes alone: y < p = 2^255 - 19, and x = 0 (y = 1
// or y = p - 1) never with the sign bit set. Whether y is on the curve is left to the verifier.
function isCanonicalPoint(p: Uint8Array): boolean {
  const sign = p[31]! & 0x80;
  if ((p[31]! & 0x7f) === 0x7f && p.subarray(1, 31).every((b) => b === 0xff) && p[0]! >= 0xed) return false;
  if (!sign) return true;
  const one = p[0] === 1 && p.subarray(1, 31).every((b) => b === 0) && (p[31]! & 0x7f) === 0;
  const minusOne = p[0] === 0xec && p.subarray(1, 31).every((b) => b === 0xff) && (p[31]! & 0x7f) === 0x7f;
  return !one && !minusOne;
}

// The canonical encodings of the eight points of small order (the torsion subgroup), derived from
// one point of order 8; verification refuses them as keys, as noble's strict mode does.
const SMALL_ORDER_KEYS: ReadonlySet<string> = (() => {
  const order8 = ed.Point.fromHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", false);
  const keys = new Set<string>();
  for (let p = ed.Point.ZERO, i = 0; i < 8; i++, p = p.add(order8)) keys.add(Buffer.from(p.toBytes()).toString("hex"));
  return keys;
})();

// A key an agent may enrol with: the canonical encoding of a point that is not of small order.
// No strict signature ever verifies with a small-order key, and with ZIP-215 rules one fixed
// signature "verifies" over any message: such a key is refused at Register, not stored.
// The small-order test is the set of their canonical encodings (a lookup instead of a point
// multiplication); decoding the point still checks that it is on the curve.
export function isUsablePublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== 32 || !isCanonicalPoint(publicKey) || SMALL_ORDER_KEYS.has(Buffer.from(publicKey).toString("hex"))) return false;
  try {
    ed.Point.fromBytes(publicKey, false);
    return true;
  } catch {
    return false;
  }
}

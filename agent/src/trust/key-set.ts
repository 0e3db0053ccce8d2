import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type SignedKeySet, type TrustedKey, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { KEY_SET_TYPE } from "@redflag/common/signing/envelope";
import { fingerprintOf, keyIdOf, keySetRevision } from "@redflag/common/signing/key-ids";
import { type PinnedKeys, printable, verifyEnvelope } from "./envelope.ts";
import { ISSUE_TIME_SKEW_MS } from "./verify.ts";

const MAX_KEYS = 8;
// Key IDs this agent dropped and will never pin again; the oldest are forgotten past this.
export const MAX_RETIRED_KEY_IDS = 64;

// What an agent remembers about the key set it follows, so sets only move forward: the issue
// time and revision of the newest set it accepted, and the keys it has dropped.
export interface KeySetState {
  issueTime: Date | undefined;
  revision: bigint | undefined;
  retiredKeyIds: readonly string[];
}

export const NO_KEY_SET_STATE: KeySetState = { issueTime: undefined, revision: undefined, retiredKeyIds: [] };

export type KeySetCheck =
  | { ok: true; keys: TrustedKey[]; signer: string; issueTime: Date; revision: bigint }
  | { ok: false; reason: string };

// Reads a fingerprint as people paste it: the colon-separated form (any case), or the same 64
// hex digits without colons. Anything else is refused rather than guessed at.
export function parseFingerprint(text: string): string {
  const t = text.trim().toLowerCase();
  const hex = /^[0-9a-f]{64}$/.test(t) ? t : /^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/.test(t) ? t.replaceAll(":", "") : undefined;
  if (!hex) {
    throw new Error(
      `--fingerprint ${printable(text, 100)} is not a signing-key fingerprint: expected the SHA-256 the console shows, 32 colon-separated hex pairs (ab:cd:…)`,
    );
  }
  return hex.match(/../g)!.join(":");
}

// Decodes the signed bytes into keys whose IDs are what their public keys give.
function decodeSet(signed: SignedKeySet): { ok: true; keys: TrustedKey[]; issueTime: Date | undefined; revision: bigint } | { ok: false; reason: string } {
  let set;
  try {
    set = fromBinary(TrustedKeySetSchema, signed.keySet);
  } catch {
    return { ok: false, reason: "signed bytes are not a redflag.v1.TrustedKeySet" };
  }
  const keys = set.keys;
  if (keys.length === 0 || keys.length > MAX_KEYS) return { ok: false, reason: `a key set must hold 1 to ${MAX_KEYS} keys` };
  for (const key of keys) {
    if (key.publicKey.length !== 32 || keyIdOf(key.publicKey) !== key.keyId) return { ok: false, reason: `key ${printable(key.keyId, 32)} does not match its public key` };
  }
  let issueTime: Date | undefined;
  if (set.issueTime) {
    issueTime = timestampDate(set.issueTime);
    if (Number.isNaN(issueTime.getTime())) return { ok: false, reason: "the key set's issue time is not a time" };
  }
  return { ok: true, keys, issueTime, revision: keySetRevision(keys.map((k) => k.keyId)) };
}

const signedBy = (signed: SignedKeySet, keyId: string, publicKey: Uint8Array): boolean =>
  signed.signatures.some((s) => s.keyId === keyId && verifyEnvelope(new Map([[keyId, publicKey]]), keyId, KEY_SET_TYPE, signed.keySet, s.signature).ok);

// A new set of command-signing keys (a rotation) is accepted only when a key this agent
// already pins signed those exact bytes, every key in it is what its ID says, it was issued
// after the newest set this agent accepted (a captured older set replayed later is refused),
// and it brings back no key this agent has dropped. The set replaces the pins: a key left out
// of it is no longer trusted.
export function checkKeySet(signed: SignedKeySet, pins: PinnedKeys, state: KeySetState = NO_KEY_SET_STATE, now: Date = new Date()): KeySetCheck {
  const signer = signed.signatures.find((s) => pins.has(s.keyId) && verifyEnvelope(pins, s.keyId, KEY_SET_TYPE, signed.keySet, s.signature).ok);
  if (!signer) {
    const ids = signed.signatures.map((s) => s.keyId).join(", ") || "none";
    return { ok: false, reason: `key set not signed by a pinned key (signed by: ${printable(ids, 200)})` };
  }
  const set = decodeSet(signed);
  if (!set.ok) return set;
  if (!set.issueTime) return { ok: false, reason: "the key set carries no issue time, so it cannot be told from an older one" };
  // Like a config: a set from the future (a control plane whose clock ran ahead) would make the
  // agent refuse every real set after it until that time came.
  if (set.issueTime.getTime() > now.getTime() + ISSUE_TIME_SKEW_MS) {
    return { ok: false, reason: `key set issued in the future at ${set.issueTime.toISOString()}; check this host's clock` };
  }
  if (state.issueTime && set.issueTime.getTime() <= state.issueTime.getTime()) {
    return {
      ok: false,
      reason: `key set issued ${set.issueTime.toISOString()} is not newer than the one this agent holds (${state.issueTime.toISOString()}): an old set replayed`,
    };
  }
  const back = set.keys.find((k) => state.retiredKeyIds.includes(k.keyId));
  if (back) return { ok: false, reason: `key set brings back key ${back.keyId}, which this agent retired` };
  return { ok: true, keys: set.keys, signer: signer.keyId, issueTime: set.issueTime, revision: set.revision };
}

// The state after accepting `check` in place of `pins`: the keys left out join the retired ones.
export function advanceKeySetState(state: KeySetState, pins: PinnedKeys, check: { keys: TrustedKey[]; issueTime: Date; revision: bigint }): KeySetState {
  const kept = new Set(check.keys.map((k) => k.keyId));
  const dropped = [...pins.keys()].filter((id) => !kept.has(id));
  const retired = [...state.retiredKeyIds.filter((id) => !dropped.includes(id)), ...dropped].slice(-MAX_RETIRED_KEY_IDS);
  return { issueTime: check.issueTime, revision: check.revision, retiredKeyIds: retired };
}

export type RegisterKeySetCheck =
  | { ok: true; keys: TrustedKey[]; state: KeySetState; fingerprintChecked: boolean }
  | { ok: false; reason: string };

// The keys `register` pins from the control plane's answer. With a fingerprint, only a key set
// signed by the key with that fingerprint is accepted, and only its keys are pinned: a man in
// the middle can neither swap the keys nor add one of its own (that changes the signed bytes).
// Without one, the signed set is taken on trust (it must at least be signed by one of its own
// keys); a control plane too old to send a signed set is trusted for its plain key list.
export function checkRegisterKeySet(
  res: { keySet?: SignedKeySet | undefined; trustedKeys: TrustedKey[] },
  fingerprint: string | undefined,
): RegisterKeySetCheck {
  if (!res.keySet) {
    if (fingerprint) {
      return { ok: false, reason: "the control plane sent no signed key set, so the signing-key fingerprint cannot be checked (is it older than this agent?)" };
    }
    if (res.trustedKeys.length === 0 || res.trustedKeys.length > MAX_KEYS) return { ok: false, reason: `the control plane must send 1 to ${MAX_KEYS} signing keys` };
    return { ok: true, keys: res.trustedKeys, state: NO_KEY_SET_STATE, fingerprintChecked: false };
  }
  const set = decodeSet(res.keySet);
  if (!set.ok) return set;
  let voucher: TrustedKey | undefined;
  if (fingerprint) {
    voucher = set.keys.find((k) => fingerprintOf(k.publicKey) === fingerprint);
    if (!voucher) {
      return {
        ok: false,
        reason:
          `the control plane's signing keys do not include the one with fingerprint ${fingerprint} ` +
          `(offered: ${set.keys.map((k) => fingerprintOf(k.publicKey)).join(", ")}); check the fingerprint, or someone is intercepting the connection`,
      };
    }
    if (!signedBy(res.keySet, voucher.keyId, voucher.publicKey)) {
      return { ok: false, reason: `the key set is not signed by the key with fingerprint ${fingerprint}; someone may be intercepting the connection` };
    }
  } else if (!set.keys.some((k) => signedBy(res.keySet!, k.keyId, k.publicKey))) {
    return { ok: false, reason: "the key set is not signed by any of its keys" };
  }
  return {
    ok: true,
    keys: set.keys,
    state: { issueTime: set.issueTime, revision: set.revision, retiredKeyIds: [] },
    fingerprintChecked: voucher !== undefined,
  };
}

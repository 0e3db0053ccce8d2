import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { SignedKeySetSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { COMMAND_TYPE, KEY_SET_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "./envelope.ts";
import { fingerprintOf, keyIdOf, keySetRevision } from "@redflag/common/signing/key-ids";
import { advanceKeySetState, checkKeySet, checkRegisterKeySet, NO_KEY_SET_STATE, parseFingerprint } from "./key-set.ts";

const old = generateKeyPair();
const next = generateKeyPair();
const stranger = generateKeyPair();
const id = (k: { publicKey: Uint8Array }) => keyIdOf(k.publicKey);
const pins = new Map([[id(old), old.publicKey]]);

const T0 = new Date("2026-12-01T00:00:00Z");
function signedSet(keys: { publicKey: Uint8Array }[], signers: { secretKey: Uint8Array; publicKey: Uint8Array }[], type = KEY_SET_TYPE, issueTime = T0) {
  const body = toBinary(
    TrustedKeySetSchema,
    create(TrustedKeySetSchema, { keys: keys.map((k) => ({ keyId: id(k), publicKey: k.publicKey })), issueTime: timestampFromDate(issueTime) }),
  );
  return create(SignedKeySetSchema, { keySet: body, signatures: signers.map((s) => ({ keyId: id(s), signature: signEnvelope(s.secretKey, type, body) })) });
}

describe("checkKeySet", () => {
  it("accepts a new set signed by a pinned key", () => {
    const check = checkKeySet(signedSet([next, old], [next, old]), pins);
    expect(check).toMatchObject({ ok: true, signer: id(old) });
    if (check.ok) expect(check.keys.map((k) => k.keyId)).toEqual([id(next), id(old)]);
  });

  it("refuses sets nobody it trusts signed, signatures of another type, altered bytes and mislabelled keys", () => {
    expect(checkKeySet(signedSet([stranger], [stranger]), pins)).toMatchObject({ ok: false, reason: expect.stringMatching(/not signed by a pinned key/) });
    expect(checkKeySet(signedSet([next], [old], COMMAND_TYPE), pins).ok).toBe(false);
    const tampered = signedSet([next], [old]);
    tampered.keySet = new Uint8Array([...tampered.keySet.slice(0, -1), tampered.keySet.at(-1)! ^ 1]);
    expect(checkKeySet(tampered, pins).ok).toBe(false);
    const body = toBinary(TrustedKeySetSchema, create(TrustedKeySetSchema, { keys: [{ keyId: id(old), publicKey: stranger.publicKey }] }));
    const mislabelled = create(SignedKeySetSchema, { keySet: body, signatures: [{ keyId: id(old), signature: signEnvelope(old.secretKey, KEY_SET_TYPE, body) }] });
    expect(checkKeySet(mislabelled, pins)).toMatchObject({ ok: false, reason: expect.stringMatching(/does not match its public key/) });
    expect(checkKeySet(signedSet([], [old]), pins)).toMatchObject({ ok: false, reason: expect.stringMatching(/1 to 8 keys/) });
  });

  it("refuses a set that is not newer than the one it holds: a captured set replayed after a rotation", () => {
    const later = new Date(T0.getTime() + 86_400_000);
    // Rotation: {next, old} at T0; the grace ends at `later` and the set becomes {next}.
    const captured = signedSet([next, old], [next, old], KEY_SET_TYPE, T0);
    const rotated = checkKeySet(captured, pins);
    if (!rotated.ok) throw new Error(rotated.reason);
    const both = new Map([[id(next), next.publicKey], [id(old), old.publicKey]]);
    let state = advanceKeySetState(NO_KEY_SET_STATE, pins, rotated);
    const graceOver = checkKeySet(signedSet([next], [next], KEY_SET_TYPE, later), both, state);
    if (!graceOver.ok) throw new Error(graceOver.reason);
    state = advanceKeySetState(state, both, graceOver);
    expect(state).toEqual({ issueTime: later, revision: keySetRevision([id(next)]), retiredKeyIds: [id(old)] });

    // The captured set still carries a valid signature by `next`, which the agent pins.
    const onlyNext = new Map([[id(next), next.publicKey]]);
    expect(checkKeySet(captured, onlyNext, state)).toEqual({
      ok: false,
      reason: `key set issued ${T0.toISOString()} is not newer than the one this agent holds (${later.toISOString()}): an old set replayed`,
    });
    // Nor the same set again, nor one without an issue time.
    expect(checkKeySet(signedSet([next], [next], KEY_SET_TYPE, later), onlyNext, state).ok).toBe(false);
    const undated = toBinary(TrustedKeySetSchema, create(TrustedKeySetSchema, { keys: [{ keyId: id(next), publicKey: next.publicKey }] }));
    const undatedSet = create(SignedKeySetSchema, { keySet: undated, signatures: [{ keyId: id(next), signature: signEnvelope(next.secretKey, KEY_SET_TYPE, undated) }] });
    expect(checkKeySet(undatedSet, onlyNext, state)).toMatchObject({ ok: false, reason: expect.stringMatching(/no issue time/) });
  });

  it("refuses a set issued beyond the clock skew ahead of this host, which would block every real set until then", () => {
    const now = new Date(T0.getTime() - 3_600_000);
    expect(checkKeySet(signedSet([next, old], [next, old]), pins, NO_KEY_SET_STATE, now)).toEqual({
      ok: false,
      reason: `key set issued in the future at ${T0.toISOString()}; check this host's clock`,
    });
    // Within the skew a command may have: taken.
    expect(checkKeySet(signedSet([next, old], [next, old]), pins, NO_KEY_SET_STATE, new Date(T0.getTime() - 30_000)).ok).toBe(true);
  });

  it("never takes back a key it retired, even in a newer set signed by a key it still pins", () => {
    const state = { issueTime: T0, revision: keySetRevision([id(next)]), retiredKeyIds: [id(old)] };
    const onlyNext = new Map([[id(next), next.publicKey]]);
    const newer = signedSet([next, old], [next], KEY_SET_TYPE, new Date(T0.getTime() + 1000));
    expect(checkKeySet(newer, onlyNext, state)).toEqual({ ok: false, reason: `key set brings back key ${id(old)}, which this agent retired` });
    expect(checkKeySet(signedSet([next, stranger], [next], KEY_SET_TYPE, new Date(T0.getTime() + 1000)), onlyNext, state).ok).toBe(true);
  });

  it("derives a revision independent of key order", () => {
    expect(keySetRevision(["b", "a"])).toBe(keySetRevision(["a", "b"]));
    expect(keySetRevision(["a"])).not.toBe(keySetRevision(["a", "b"]));
  });
});

describe("fingerprints", () => {
  it("reads the colon-separated SHA-256 the product shows, in any case, or the bare hex, and nothing else", () => {
    const fp = fingerprintOf(old.publicKey);
    expect(fp).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    expect(parseFingerprint(fp)).toBe(fp);
    expect(parseFingerprint(` ${fp.toUpperCase()}\n`)).toBe(fp);
    expect(parseFingerprint(fp.replaceAll(":", ""))).toBe(fp);
    for (const bad of ["", id(old), fp.slice(0, -3), `${fp}:00`, fp.replace(/:/, "-"), fp.replaceAll(":", " "), `sha256:${fp}`]) {
      expect(() => parseFingerprint(bad), bad).toThrow(/not a signing-key fingerprint: expected the SHA-256 the console shows/);
    }
  });
});

describe("checkRegisterKeySet", () => {
  const genuine = signedSet([old], [old]);
  const fp = fingerprintOf(old.publicKey);
  const answer = (keySet = genuine, trustedKeys = [{ keyId: id(old), publicKey: old.publicKey }]) => ({ keySet, trustedKeys: trustedKeys.map((k) => ({ $typeName: "redflag.v1.TrustedKey" as const, ...k })) });

  it("pins the keys of a set signed by the key the fingerprint names, and remembers its issue time", () => {
    const rotated = signedSet([next, old], [next, old]);
    // The fingerprint of the older key still vouches for the set during a grace period.
    const check = checkRegisterKeySet(answer(rotated), fp);
    expect(check).toMatchObject({ ok: true, fingerprintChecked: true, state: { issueTime: T0, retiredKeyIds: [] } });
    if (check.ok) expect(check.keys.map((k) => k.keyId)).toEqual([id(next), id(old)]);
  });

  it("never pins a key a man in the middle added to the genuine answer", () => {
    // Appended to the plain list only: the list is not what gets pinned.
    const appended = checkRegisterKeySet(answer(genuine, [{ keyId: id(old), publicKey: old.publicKey }, { keyId: id(stranger), publicKey: stranger.publicKey }]), fp);
    if (!appended.ok) throw new Error(appended.reason);
    expect(appended.keys.map((k) => k.keyId)).toEqual([id(old)]);
    // Added to the signed set: the genuine signature no longer covers the bytes.
    const widened = signedSet([old, stranger], [stranger]);
    widened.signatures.push(...genuine.signatures);
    expect(checkRegisterKeySet(answer(widened), fp)).toEqual({
      ok: false,
      reason: `the key set is not signed by the key with fingerprint ${fp}; someone may be intercepting the connection`,
    });
    // Replaced with a set of its own: the fingerprint names none of its keys.
    expect(checkRegisterKeySet(answer(signedSet([stranger], [stranger])), fp)).toMatchObject({ ok: false, reason: expect.stringMatching(/do not include the one with fingerprint/) });
    // Stripped: nothing to check the fingerprint against.
    expect(checkRegisterKeySet({ trustedKeys: answer().trustedKeys }, fp)).toMatchObject({ ok: false, reason: expect.stringMatching(/no signed key set/) });
  });

  it("without a fingerprint takes a self-signed set, or an older control plane's plain list", () => {
    expect(checkRegisterKeySet(answer(signedSet([next], [next])), undefined)).toMatchObject({ ok: true, fingerprintChecked: false });
    expect(checkRegisterKeySet(answer(signedSet([next], [stranger])), undefined)).toEqual({ ok: false, reason: "the key set is not signed by any of its keys" });
    expect(checkRegisterKeySet({ trustedKeys: answer().trustedKeys }, undefined)).toMatchObject({ ok: true, state: NO_KEY_SET_STATE });
  });
});

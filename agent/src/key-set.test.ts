import { create, toBinary } from "@bufbuild/protobuf";
import { SignedKeySetSchema, TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { COMMAND_TYPE, generateKeyPair, KEY_SET_TYPE, keyIdOf, signEnvelope } from "./envelope.ts";
import { checkKeySet, keySetRevision } from "./key-set.ts";

const old = generateKeyPair();
const next = generateKeyPair();
const stranger = generateKeyPair();
const id = (k: { publicKey: Uint8Array }) => keyIdOf(k.publicKey);
const pins = new Map([[id(old), old.publicKey]]);

function signedSet(keys: { publicKey: Uint8Array }[], signers: { secretKey: Uint8Array; publicKey: Uint8Array }[], type = KEY_SET_TYPE) {
  const body = toBinary(TrustedKeySetSchema, create(TrustedKeySetSchema, { keys: keys.map((k) => ({ keyId: id(k), publicKey: k.publicKey })) }));
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

  it("derives a revision independent of key order", () => {
    expect(keySetRevision(["b", "a"])).toBe(keySetRevision(["a", "b"]));
    expect(keySetRevision(["a"])).not.toBe(keySetRevision(["a", "b"]));
  });
});

import { createHash, createPrivateKey, createPublicKey, randomBytes, sign as nodeSign, verify as nodeVerify } from "node:crypto";
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

  it("sign byte for byte as noble's sign and OpenSSL's do, with the key expanded once", () => {
    // Ed25519 is deterministic: the signature from the cached expanded key must be exactly the
    // one both libraries give, for any key, type and body (empty and long ones too).
    const b64url = (b: Uint8Array) => Buffer.from(b).toString("base64url");
    for (let i = 0; i < 200; i++) {
      const key = newSecretKey();
      const openssl = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d: b64url(key), x: b64url(publicKeyOf(key)) }, format: "jwk" });
      const message = randomBytes(i % 10 === 0 ? 0 : 1 + ((i * 997) % 5000));
      const type = [COMMAND_TYPE, AGENT_CONFIG_TYPE, `x${i}`][i % 3]!;
      const signed = signEnvelope(key, type, message);
      const again = signEnvelope(key, type, message); // from the cache
      expect(Buffer.from(signed)).toEqual(Buffer.from(ed.sign(pae(type, message), key)));
      expect(Buffer.from(signed)).toEqual(nodeSign(null, pae(type, message), openssl));
      expect(Buffer.from(again)).toEqual(Buffer.from(signed));
    }
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

  it("answers exactly as noble's strict decoding and small-order test do", () => {
    const reference = (key: Uint8Array) => {
      try {
        return !ed.Point.fromBytes(key, false).isSmallOrder();
      } catch {
        return false;
      }
    };
    const order8 = ed.Point.fromHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", false);
    const keys: Uint8Array[] = [];
    for (let t = ed.Point.ZERO, i = 0; i < 8; i++, t = t.add(order8)) {
      const torsion = t.toBytes();
      keys.push(torsion, torsion.map((b, j) => (j === 31 ? b ^ 0x80 : b))); // and with the sign bit flipped
      keys.push(ed.Point.fromBytes(publicKeyOf(newSecretKey())).add(t).toBytes()); // mixed order: usable
    }
    for (let i = 0; i < 300; i++) keys.push(randomBytes(32)); // about half are not on the curve
    for (const y of [0n, 1n, 2n ** 255n - 20n, 2n ** 255n - 19n, 2n ** 255n - 18n, 2n ** 255n - 1n]) {
      const bytes = new Uint8Array(32);
      for (let j = 0, n = y; j < 32; j++, n >>= 8n) bytes[j] = Number(n & 0xffn);
      keys.push(bytes, bytes.map((b, j) => (j === 31 ? b | 0x80 : b)));
    }
    let usable = 0;
    for (const key of keys) {
      expect(isUsablePublicKey(key), Buffer.from(key).toString("hex")).toBe(reference(key));
      if (reference(key)) usable++;
    }
    expect(usable).toBeGreaterThan(100);
    expect(usable).toBeLessThan(keys.length - 100);
  });

});

describe("verifySignature", () => {
  it("gives exactly noble's strict answer, on crafted inputs too (OpenSSL only makes the common case cheap)", () => {
    const { Point } = ed;
    const L = Point.CURVE().n;
    const le = (n: bigint) => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++, n >>= 8n) out[i] = Number(n & 0xffn);
      return out;
    };
    const scalar = (bytes: Uint8Array) => ed.etc.mod(BigInt(`0x${Buffer.from(bytes).reverse().toString("hex")}`), L);
    const challenge = (r: Uint8Array, a: Uint8Array, m: Uint8Array) => scalar(createHash("sha512").update(new Uint8Array([...r, ...a, ...m])).digest());
    const order8 = Point.fromHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", false);
    const torsion = Array.from({ length: 8 }, (_, i) => (i === 0 ? Point.ZERO : order8.multiply(BigInt(i))));
    const cases: { about: string; key: Uint8Array; sig: Uint8Array; body: Uint8Array }[] = [];
    for (let n = 0; n < 24; n++) {
      const a = 1n + (scalar(ed.utils.randomSecretKey()) % (L - 1n));
      const T = torsion[n % 8]!;
      // A key of mixed order (a prime-order point plus a torsion point), signed with a's scalar:
      // the cofactored equation (noble) accepts unless the challenge is a multiple of 8 times
      // nothing, the cofactorless one (OpenSSL) refuses whenever k·T is not the identity.
      const A = Point.BASE.multiply(a).add(T).toBytes();
      const r = 1n + (scalar(ed.utils.randomSecretKey()) % (L - 1n));
      const R = Point.BASE.multiply(r).toBytes();
      const body = text(`crafted ${n}`);
      const k = challenge(R, A, pae(COMMAND_TYPE, body));
      const S = ed.etc.mod(r + k * a, L);
      cases.push({ about: `mixed-order key, torsion ${n % 8}`, key: A, sig: new Uint8Array([...R, ...le(S)]), body });
      // R with a torsion component, honest key.
      const honest = Point.BASE.multiply(a).toBytes();
      const R2 = Point.BASE.multiply(r).add(T).toBytes();
      const k2 = challenge(R2, honest, pae(COMMAND_TYPE, body));
      cases.push({ about: `R with torsion ${n % 8}`, key: honest, sig: new Uint8Array([...R2, ...le(ed.etc.mod(r + k2 * a, L))]), body });
      // S pushed over L (the same signature, non-reduced), and S = 0.
      cases.push({ about: "S + L", key: honest, sig: new Uint8Array([...R2, ...le(ed.etc.mod(r + k2 * a, L) + L)]), body });
      cases.push({ about: "S = 0", key: honest, sig: new Uint8Array([...R, ...le(0n)]), body });
      // Small-order keys and R, each canonical and with the sign bit flipped.
      const small = T.toBytes();
      const flipped = small.slice();
      flipped[31]! ^= 0x80;
      cases.push({ about: "small-order key", key: small, sig: new Uint8Array([...small, ...le(0n)]), body });
      cases.push({ about: "small-order key, sign flipped", key: flipped, sig: new Uint8Array([...flipped, ...le(0n)]), body });
      // An honest signature, then with one random byte changed anywhere.
      const sk = ed.utils.randomSecretKey();
      const good = signEnvelope(sk, COMMAND_TYPE, body);
      cases.push({ about: "honest", key: publicKeyOf(sk), sig: good, body });
      const bad = good.slice();
      bad[n % 64]! ^= 1 << n % 8;
      cases.push({ about: "honest, one bit changed", key: publicKeyOf(sk), sig: bad, body });
    }
    // Non-canonical y (y >= p) for a key and for R, and an x = 0 point with the sign bit set.
    const p = 2n ** 255n - 19n;
    for (const y of [p, p + 1n, p + 18n, 2n ** 255n - 1n]) cases.push({ about: `y = ${y - p} + p`, key: le(y), sig: new Uint8Array([...le(y), ...le(0n)]), body: text("y") });
    const one = le(1n);
    one[31]! |= 0x80;
    cases.push({ about: "x = 0 with the sign bit", key: one, sig: new Uint8Array([...one, ...le(0n)]), body: text("x") });
    const minusOne = le(p - 1n);
    minusOne[31]! |= 0x80;
    cases.push({ about: "-1 with the sign bit", key: minusOne, sig: new Uint8Array([...minusOne, ...le(0n)]), body: text("x") });

    let acceptedOnlyCofactored = 0;
    for (const c of cases) {
      const strict = (() => {
        try {
          return ed.verify(c.sig, pae(COMMAND_TYPE, c.body), c.key, { zip215: false });
        } catch {
          return false;
        }
      })();
      expect({ about: c.about, verifies: verifySignature(c.key, COMMAND_TYPE, c.body, c.sig) }).toEqual({ about: c.about, verifies: strict });
      const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), c.key]);
      const openssl = (() => {
        try {
          return nodeVerify(null, pae(COMMAND_TYPE, c.body), createPublicKey({ key: spki, format: "der", type: "spki" }), c.sig);
        } catch {
          return false;
        }
      })();
      if (strict && !openssl) acceptedOnlyCofactored++;
    }
    // The crafted mixed-order cases really exercise the path where OpenSSL alone would differ.
    expect(acceptedOnlyCofactored).toBeGreaterThan(10);
  });
});


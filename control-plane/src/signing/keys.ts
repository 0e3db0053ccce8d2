import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import * as ed from "@noble/ed25519";

// @noble/ed25519 v3 needs SHA-512 for its synchronous API; node:crypto provides it.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash("sha512").update(message).digest());

export interface KeyPair {
  readonly keyId: string;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

// A key ID is the first 16 hex characters of SHA-256 over the raw public key.
export function keyIdOf(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").slice(0, 16);
}

export function generateKeyPair(): KeyPair {
  const secretKey = ed.utils.randomSecretKey();
  const publicKey = ed.getPublicKey(secretKey);
  return { keyId: keyIdOf(publicKey), publicKey, secretKey };
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  const publicKey = ed.getPublicKey(secretKey);
  return { keyId: keyIdOf(publicKey), publicKey, secretKey };
}

export function sign(secretKey: Uint8Array, message: Uint8Array): Uint8Array {
  return ed.sign(message, secretKey);
}

export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return ed.verify(signature, message, publicKey);
  } catch {
    return false;
  }
}

// Fingerprint shown to operators: SHA-256 of the public key, colon-separated hex.
export function fingerprint(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("hex").match(/../g)!.join(":");
}

// Secrets at rest (signing seeds, JWT secret) are sealed with AES-256-GCM under the master
// key; the associated data binds each ciphertext to its purpose so one cannot stand in for another.
export function seal(masterKey: Buffer, purpose: string, plaintext: Uint8Array): Uint8Array {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", masterKey, iv);
  cipher.setAAD(Buffer.from(purpose));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]);
}

export function unseal(masterKey: Buffer, purpose: string, sealed: Uint8Array): Uint8Array {
  const data = Buffer.from(sealed);
  const decipher = createDecipheriv("aes-256-gcm", masterKey, data.subarray(0, 12));
  decipher.setAAD(Buffer.from(purpose));
  decipher.setAuthTag(data.subarray(12, 28));
  try {
    return Buffer.concat([decipher.update(data.subarray(28)), decipher.final()]);
  } catch {
    throw new Error(`cannot decrypt ${purpose}: the master key does not match the one this database was created with`);
  }
}

import { newSecretKey, publicKeyOf } from "@redflag/common/signing/envelope";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

// The control plane's command-signing keys and its secrets at rest. What a signature is (PAE,
// payload types, key IDs, strict verification) is common/src/signing/, shared with the agent.

export interface KeyPair {
  readonly keyId: string;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  return keyPairFromSecret(newSecretKey());
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  const publicKey = publicKeyOf(secretKey);
  return { keyId: keyIdOf(publicKey), publicKey, secretKey };
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

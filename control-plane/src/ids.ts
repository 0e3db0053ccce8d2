import { createHash, randomBytes, randomUUID } from "node:crypto";

export const newId = (): string => randomUUID();

// Secrets are 32 random bytes, base64url, behind a prefix that says what they are.
export function newSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString("base64url")}`;
}

export function sha256(text: string | Uint8Array): Buffer {
  return createHash("sha256").update(text).digest();
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// A machine ID is SHA-256 over stable host identifiers, as 64 lowercase hex characters.
export function isMachineId(text: string): boolean {
  return /^[0-9a-f]{64}$/.test(text);
}

export function isUuid(text: string): boolean {
  return uuidPattern.test(text);
}

export const SECRET_PREFIX = { registration: "rfreg_", admin: "rfadm_", session: "rfses_", apiToken: "rfapi_" } as const;

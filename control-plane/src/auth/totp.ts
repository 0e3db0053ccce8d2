import { Secret, TOTP } from "otpauth";

// RFC 6238 codes (SHA-1, 6 digits, 30 s) as every authenticator app speaks them, through the
// otpauth library. One step either side is accepted for clock drift; a step once used is
// refused again, so a code seen over a shoulder cannot be replayed.
const PERIOD = 30;

export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

export function totpUri(secret: string, username: string, issuer = "RedFlag"): string {
  return new TOTP({ issuer, label: username, secret: Secret.fromBase32(secret), period: PERIOD }).toString();
}

// The time step the code belongs to, or undefined when it is wrong (or already used).
export function verifyTotp(secret: string, code: string, lastStep: bigint | null, now = Date.now()): bigint | undefined {
  if (!/^\d{6}$/.test(code)) return undefined;
  const totp = new TOTP({ secret: Secret.fromBase32(secret), period: PERIOD });
  const delta = totp.validate({ token: code, timestamp: now, window: 1 });
  if (delta === null) return undefined;
  const step = BigInt(Math.floor(now / 1000 / PERIOD) + delta);
  if (lastStep !== null && step <= lastStep) return undefined;
  return step;
}

export function totpCode(secret: string, now = Date.now()): string {
  return new TOTP({ secret: Secret.fromBase32(secret), period: PERIOD }).generate({ timestamp: now });
}

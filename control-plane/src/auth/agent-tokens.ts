import { Code, ConnectError } from "@connectrpc/connect";
import { errors, jwtVerify, SignJWT } from "jose";
import { hash, randomUUID } from "node:crypto";

const ISSUER = "redflag";
const AUDIENCE = "redflag-agent";

export interface AccessClaims {
  agentId: string;
  machineId: string;
  // Credential generation of the agent when the token was issued; re-registration bumps it.
  generation: number;
  expiresAtMs: number;
}

export interface AgentTokens {
  issue(agentId: string, machineId: string, generation: number, now: Date): Promise<{ token: string; expiresAt: Date }>;
  verify(token: string, now: number): Promise<AccessClaims>;
}

// HS256 access tokens (jose). Verified tokens are cached by their SHA-256 so an idle poll costs
// a hash and a map lookup, not a signature check.
export function createAgentTokens(secret: Uint8Array, ttlSeconds: number, maxCached = 200_000): AgentTokens {
  const cache = new Map<string, AccessClaims>();
  // Imported once: jose given the raw bytes imports a WebCrypto key on every call (a third of
  // what issuing a token costs).
  const hmacKey = crypto.subtle.importKey("raw", new Uint8Array(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);

  return {
    async issue(agentId, machineId, generation, now) {
      const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
      const token = await new SignJWT({ mid: machineId, gen: generation })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject(agentId)
        .setJti(randomUUID())
        .setIssuedAt(Math.floor(now.getTime() / 1000))
        .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
        .sign(await hmacKey);
      return { token, expiresAt: new Date(Math.floor(expiresAt.getTime() / 1000) * 1000) };
    },

    async verify(token, now) {
      const key = hash("sha256", token, "base64");
      const cached = cache.get(key);
      if (cached) {
        if (cached.expiresAtMs > now) return cached;
        cache.delete(key);
        throw new ConnectError("access token has expired", Code.Unauthenticated);
      }
      let claims: AccessClaims;
      try {
        const { payload } = await jwtVerify(token, await hmacKey, {
          issuer: ISSUER,
          audience: AUDIENCE,
          algorithms: ["HS256"],
          currentDate: new Date(now),
        });
        if (typeof payload.sub !== "string" || typeof payload.mid !== "string" || typeof payload.gen !== "number") {
          throw new ConnectError("access token is not valid", Code.Unauthenticated);
        }
        claims = { agentId: payload.sub, machineId: payload.mid, generation: payload.gen, expiresAtMs: payload.exp! * 1000 };
      } catch (err) {
        if (err instanceof ConnectError) throw err;
        if (err instanceof errors.JWTExpired) throw new ConnectError("access token has expired", Code.Unauthenticated);
        throw new ConnectError("access token is not valid", Code.Unauthenticated);
      }
      if (cache.size >= maxCached) evict(cache, now, maxCached);
      cache.set(key, claims);
      return claims;
    },
  };
}

function evict(cache: Map<string, AccessClaims>, now: number, maxCached: number) {
  for (const [key, claims] of cache) if (claims.expiresAtMs <= now) cache.delete(key);
  // Still too many live tokens: forget the oldest tenth (Map iterates in insertion order); they
  // are verified again on their next use.
  if (cache.size < maxCached) return;
  let excess = Math.ceil(cache.size / 10);
  for (const key of cache.keys()) {
    if (excess-- <= 0) break;
    cache.delete(key);
  }
}

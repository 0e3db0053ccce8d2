import { ConnectError, Code } from "@connectrpc/connect";
import { sha256 } from "../ids.ts";
import { apiKeyByHash, sessionByHash, touchApiKey, touchSession } from "../store/people.ts";
import type { Prisma } from "../store/types.ts";
import type { Principal } from "./context.ts";
import { isRoleName, lower, type RoleName } from "@redflag/common/roles";

export const SESSION_COOKIE = "redflag_session";
// A session lasts 7 days at most and ends after 24 h without use.
export const SESSION_TTL_MS = 7 * 86_400_000;
export const SESSION_IDLE_MS = 86_400_000;
const CACHE_MS = 5_000;
const TOUCH_EVERY_MS = 60_000;

export interface PrincipalResolver {
  // The principal a bearer secret or session cookie stands for; Unauthenticated otherwise.
  resolve(secret: string): Promise<Principal>;
  // Drops cached principals (after a logout, revocation, role change or disable).
  forget(): void;
}

const unauthenticated = (message: string) => new ConnectError(message, Code.Unauthenticated);

// Sessions and API keys are looked up by SHA-256 of the secret, so no comparison ever takes
// secret-dependent time. Lookups are cached for a few seconds; every change to a credential
// calls forget().
export function createPrincipalResolver(db: Prisma, now: () => number = Date.now): PrincipalResolver {
  const cache = new Map<string, { principal: Principal; until: number }>();
  const touched = new Map<string, number>();

  const touch = async (kind: "session" | "key", id: string, at: number) => {
    if ((touched.get(id) ?? 0) > at - TOUCH_EVERY_MS) return;
    touched.set(id, at);
    if (kind === "session") await touchSession(db, id, new Date(at));
    else await touchApiKey(db, id, new Date(at));
  };

  const lookup = async (secret: string, at: number): Promise<Principal> => {
    const hash = new Uint8Array(sha256(secret));
    if (secret.startsWith("rfses_")) {
      const s = await sessionByHash(db, hash);
      if (!s || s.revokedAt) throw unauthenticated("the session has ended; sign in again");
      if (s.expiresAt.getTime() <= at || s.lastSeenAt.getTime() + SESSION_IDLE_MS <= at) throw unauthenticated("the session expired; sign in again");
      if (s.user.disabledAt) throw unauthenticated("this account is disabled");
      if (!isRoleName(s.user.role)) throw unauthenticated("this account has no valid role");
      await touch("session", s.id, at);
      return { kind: "session", role: s.user.role, name: s.user.username, userId: s.user.id, credentialId: s.id };
    }
    const key = await apiKeyByHash(db, hash);
    if (!key || key.revokedAt) throw unauthenticated("the API token is not valid (unknown or revoked)");
    if (key.expiresAt && key.expiresAt.getTime() <= at) throw unauthenticated(`the API token "${key.name}" expired`);
    if (key.kind === "bootstrap") {
      await touch("key", key.id, at);
      return { kind: "admin_key", role: "admin", name: key.name, userId: undefined, credentialId: key.id };
    }
    const user = key.user;
    if (!user || user.disabledAt) throw unauthenticated("the API token's owner is disabled");
    if (!isRoleName(user.role) || !isRoleName(key.scope)) throw unauthenticated("the API token has no valid scope");
    await touch("key", key.id, at);
    return { kind: "api_token", role: lower(user.role as RoleName, key.scope as RoleName), name: user.username, userId: user.id, credentialId: key.id };
  };

  return {
    async resolve(secret) {
      const at = now();
      const key = sha256(secret).toString("base64");
      const hit = cache.get(key);
      if (hit && hit.until > at) return hit.principal;
      const principal = await lookup(secret, at);
      if (cache.size > 10_000) cache.clear();
      cache.set(key, { principal, until: at + CACHE_MS });
      return principal;
    },
    forget: () => cache.clear(),
  };
}

// The session secret from a Cookie header, if any.
export function sessionFromCookie(header: string | null): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === SESSION_COOKIE) return value.join("=") || undefined;
  }
  return undefined;
}

export function sessionCookie(secret: string, maxAgeSeconds: number, secure: boolean): string {
  return [`${SESSION_COOKIE}=${secret}`, "Path=/", "HttpOnly", "SameSite=Strict", `Max-Age=${maxAgeSeconds}`, ...(secure ? ["Secure"] : [])].join("; ");
}

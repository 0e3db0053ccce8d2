import type { IncomingMessage as Http1Request } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import * as client from "openid-client";
import type { Config, OidcConfig } from "../config.ts";
import { signInWithOidc } from "../domain/people.ts";
import type { Logger } from "../log.ts";
import { recordAudit } from "../store/audit.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import { SESSION_TTL_MS, sessionCookie, type PrincipalResolver } from "../auth/principals.ts";
import { roleFor } from "../auth/role-map.ts";

// Single sign-on through OpenID Connect (authorization code with PKCE, state and nonce, via
// openid-client). The browser goes to /auth/oidc/login, signs in at the provider, and comes
// back to /auth/oidc/callback, which finds or creates the person (by issuer and subject),
// maps a claim to a role, starts a session and returns to the console.

const USERNAME_CHARS = /[^a-z0-9._-]/g;
function usernameFrom(claims: Record<string, unknown>): string {
  const preferred = typeof claims.preferred_username === "string" ? claims.preferred_username : typeof claims.email === "string" ? claims.email.split("@")[0]! : String(claims.sub);
  const name = preferred.toLowerCase().replace(USERNAME_CHARS, "-").replace(/^[^a-z0-9]+/, "").slice(0, 28);
  return name.length >= 2 ? name : `user-${String(claims.sub).slice(0, 8).toLowerCase().replace(USERNAME_CHARS, "")}`;
}

type IncomingMessage = Http1Request | Http2ServerRequest;
// What the routes use of a response, on HTTP/1.1 and HTTP/2 alike.
interface ServerResponse {
  writeHead(status: number, headers?: Record<string, string>): unknown;
  end(body: string): unknown;
  readonly headersSent: boolean;
}

interface Pending {
  verifier: string;
  nonce: string;
  until: number;
}

export interface OidcRoutes {
  // Answers /auth/oidc/login and /auth/oidc/callback; false for any other path.
  handle(req: IncomingMessage, res: ServerResponse): boolean;
}

export function createOidcRoutes(deps: {
  cfg: OidcConfig;
  config: Config;
  db: Prisma;
  principals: PrincipalResolver;
  logger: Logger;
  // The caller's address (client-address.ts); unset: the connection's peer.
  clientAddress?: (req: Http1Request | Http2ServerRequest) => string;
}): OidcRoutes {
  const { cfg, db, logger } = deps;
  let discovered: Promise<client.Configuration> | undefined;
  const configuration = () => {
    discovered ??= client
      .discovery(new URL(cfg.issuer), cfg.clientId, cfg.clientSecret, undefined, cfg.allowHttp ? { execute: [client.allowInsecureRequests] } : undefined)
      .catch((err: unknown) => {
        discovered = undefined;
        throw err;
      });
    return discovered;
  };
  const pending = new Map<string, Pending>();
  const secure = deps.config.tls !== undefined;

  const redirectUrl = (req: IncomingMessage) => {
    if (cfg.redirectUrl) return cfg.redirectUrl;
    const base = deps.config.publicUrl ?? `${secure ? "https" : "http"}://${req.headers.host ?? "127.0.0.1"}`;
    return `${base}/auth/oidc/callback`;
  };
  const page = (res: ServerResponse, status: number, message: string) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
    res.end(`${message}\n`);
  };

  const login = async (req: IncomingMessage, res: ServerResponse) => {
    const config = await configuration();
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const now = Date.now();
    for (const [k, p] of pending) if (p.until < now) pending.delete(k);
    if (pending.size > 10_000) pending.clear();
    pending.set(state, { verifier, nonce, until: now + 10 * 60_000 });
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUrl(req),
      scope: `openid profile email ${cfg.roleClaim === "groups" ? "groups" : ""}`.trim(),
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    res.writeHead(302, { location: url.toString(), "cache-control": "no-store" });
    res.end("");
  };

  const callback = async (req: IncomingMessage, res: ServerResponse) => {
    const base = new URL(redirectUrl(req));
    const current = new URL(req.url ?? "/", `${base.protocol}//${base.host}`);
    const state = current.searchParams.get("state") ?? "";
    const flow = pending.get(state);
    pending.delete(state);
    if (!flow || flow.until < Date.now()) return page(res, 400, "This sign-in link expired or was already used. Start again from the console.");
    const config = await configuration();
    let claims: Record<string, unknown>;
    try {
      const tokens = await client.authorizationCodeGrant(config, current, { pkceCodeVerifier: flow.verifier, expectedState: state, expectedNonce: flow.nonce, idTokenExpected: true });
      claims = (tokens.claims() ?? {}) as Record<string, unknown>;
    } catch (err) {
      logger.warn({ err }, "single sign-on failed");
      return page(res, 401, "Single sign-on failed: the provider's answer did not check out. Start again from the console.");
    }
    const subject = `${cfg.issuer}|${String(claims.sub)}`;
    const role = roleFor(claims, cfg);
    const remoteAddr = deps.clientAddress ? deps.clientAddress(req) : (req.socket.remoteAddress ?? "");
    if (!role) {
      await recordSecurityEvent(db, { type: "login_failed", severity: "warning", message: `single sign-on refused for ${String(claims.sub)}: no role in claim ${cfg.roleClaim}`, remoteAddr, detail: { subject } });
      return page(res, 403, `Your account has no RedFlag role (claim "${cfg.roleClaim}"). Ask an admin.`);
    }
    const signedIn = await signInWithOidc(
      db,
      {
        subject,
        username: usernameFrom(claims),
        displayName: typeof claims.name === "string" ? claims.name.slice(0, 100) : undefined,
        role,
        client: { remoteAddr, userAgent: String(req.headers["user-agent"] ?? "") },
        now: new Date(),
      },
      (tx, user) => recordAudit(tx, { actorKind: "session", actorId: user.id, actorName: user.username, action: "oidc/Callback", target: `user:${user.id}`, remoteAddr, after: { role, subject } }),
    );
    if (signedIn === "disabled") return page(res, 403, "This account is disabled; ask an admin.");
    const { session } = signedIn;
    if (signedIn.known) deps.principals.forget();
    res.writeHead(302, { location: "/", "set-cookie": sessionCookie(session.secret, Math.floor(SESSION_TTL_MS / 1000), secure), "cache-control": "no-store" });
    res.end("");
  };

  return {
    handle(req, res) {
      const path = (req.url ?? "").split("?")[0];
      if (req.method !== "GET" || (path !== "/auth/oidc/login" && path !== "/auth/oidc/callback")) return false;
      (path === "/auth/oidc/login" ? login : callback)(req, res).catch((err: unknown) => {
        logger.error({ err }, "single sign-on error");
        if (!res.headersSent) page(res, 502, "The identity provider cannot be reached right now. Try again shortly.");
      });
      return true;
    },
  };
}

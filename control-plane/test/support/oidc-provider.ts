import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";

// A small OpenID Connect provider for tests: discovery, authorization (it "signs in" whoever
// the test names, without a login page), a token endpoint checking the client secret and the
// PKCE verifier, and its signing keys. It can be told to misbehave (a wrong nonce).
export interface TestOidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  // Claims of the person who signs in next.
  nextUser: Record<string, unknown>;
  misbehave: { wrongNonce?: boolean };
  close(): Promise<void>;
}

export async function startTestOidcProvider(): Promise<TestOidcProvider> {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "ES256", use: "sig" };
  const codes = new Map<string, { nonce: string; challenge: string; redirectUri: string; claims: Record<string, unknown> }>();
  const state: TestOidcProvider = {
    issuer: "",
    clientId: "redflag-console",
    clientSecret: randomBytes(16).toString("hex"),
    nextUser: { sub: "u-1" },
    misbehave: {},
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const json = (res: import("node:http").ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(body));
  };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", state.issuer);
    if (url.pathname === "/.well-known/openid-configuration") {
      return json(res, 200, {
        issuer: state.issuer,
        authorization_endpoint: `${state.issuer}/authorize`,
        token_endpoint: `${state.issuer}/token`,
        jwks_uri: `${state.issuer}/jwks`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["ES256"],
        code_challenge_methods_supported: ["S256"],
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
        scopes_supported: ["openid", "profile", "email", "groups"],
      });
    }
    if (url.pathname === "/jwks") return json(res, 200, { keys: [jwk] });
    if (url.pathname === "/authorize") {
      const p = url.searchParams;
      if (p.get("client_id") !== state.clientId || p.get("response_type") !== "code" || p.get("code_challenge_method") !== "S256") {
        return json(res, 400, { error: "invalid_request" });
      }
      const code = randomBytes(16).toString("hex");
      codes.set(code, { nonce: p.get("nonce") ?? "", challenge: p.get("code_challenge") ?? "", redirectUri: p.get("redirect_uri") ?? "", claims: state.nextUser });
      const back = new URL(p.get("redirect_uri")!);
      back.searchParams.set("code", code);
      back.searchParams.set("state", p.get("state") ?? "");
      res.writeHead(302, { location: back.toString() }).end();
      return;
    }
    if (url.pathname === "/token" && req.method === "POST") {
      let body = "";
      req.on("data", (c: Buffer) => (body += c));
      req.on("end", async () => {
        const form = new URLSearchParams(body);
        const basic = Buffer.from((req.headers.authorization ?? "").replace(/^Basic /, ""), "base64").toString();
        const [id, secret] = basic ? basic.split(":").map(decodeURIComponent) : [form.get("client_id"), form.get("client_secret")];
        if (id !== state.clientId || secret !== state.clientSecret) return json(res, 401, { error: "invalid_client" });
        const grant = codes.get(form.get("code") ?? "");
        codes.delete(form.get("code") ?? "");
        const verifier = form.get("code_verifier") ?? "";
        const challenge = createHash("sha256").update(verifier).digest("base64url");
        if (!grant || grant.challenge !== challenge || grant.redirectUri !== form.get("redirect_uri")) return json(res, 400, { error: "invalid_grant" });
        const idToken = await new SignJWT({ ...grant.claims, nonce: state.misbehave.wrongNonce ? "not-the-nonce" : grant.nonce })
          .setProtectedHeader({ alg: "ES256", kid: "test-key" })
          .setIssuer(state.issuer)
          .setAudience(state.clientId)
          .setSubject(String(grant.claims.sub))
          .setIssuedAt()
          .setExpirationTime("5m")
          .sign(privateKey);
        json(res, 200, { access_token: randomBytes(16).toString("hex"), token_type: "Bearer", expires_in: 300, id_token: idToken });
      });
      return;
    }
    json(res, 404, { error: "not_found" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

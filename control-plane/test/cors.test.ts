import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// REDFLAG_CORS_ORIGINS (issue 17): a browser app on a named origin may call the RPCs; any other
// origin gets no CORS headers (the browser refuses), and without the setting nothing changes.

const APP = "https://app.example.com";
const path = "/redflag.v1.FleetService/ListAgents";

const headersOf = (r: Response) => Object.fromEntries([...r.headers].map(([k, v]) => [k, v]));

describe("CORS", () => {
  let cp: TestControlPlane;
  let plain: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_CORS_ORIGINS: `${APP}, http://localhost:5173` });
    plain = await startTestControlPlane();
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
    await plain?.close();
  });

  const preflight = (server: TestControlPlane, origin: string) =>
    fetch(`${server.url}${path}`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, connect-protocol-version" },
    });
  const call = (server: TestControlPlane, origin: string) =>
    fetch(`${server.url}${path}`, {
      method: "POST",
      headers: { origin, authorization: `Bearer ${server.adminKey}`, "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });

  it("answers a preflight from a named origin with 204 and what it may send", async () => {
    const res = await preflight(cp, APP);
    expect(res.status).toBe(204);
    const h = headersOf(res);
    expect(h["access-control-allow-origin"]).toBe(APP);
    expect(h["access-control-allow-methods"]).toBe("POST");
    expect(h["access-control-allow-headers"]!.toLowerCase().split(", ")).toEqual(expect.arrayContaining(["authorization", "content-type", "connect-protocol-version", "x-request-id"]));
    expect(h["access-control-max-age"]).toBe("7200");
    expect(h.vary).toContain("Origin");
    expect(h["access-control-allow-credentials"]).toBeUndefined();
  });

  it("lets the call through with the headers a browser needs to read it", async () => {
    const res = await call(cp, APP);
    expect(res.status).toBe(200);
    const h = headersOf(res);
    expect(h["access-control-allow-origin"]).toBe(APP);
    expect(h["access-control-expose-headers"]!.toLowerCase()).toContain("x-request-id");
    expect(await res.json()).toEqual({});
  });

  it("gives another origin no CORS headers, so its browser refuses the answer", async () => {
    const pre = await preflight(cp, "https://evil.example");
    expect(pre.status).toBe(204);
    expect(headersOf(pre)["access-control-allow-origin"]).toBeUndefined();
    expect(headersOf(await call(cp, "https://evil.example"))["access-control-allow-origin"]).toBeUndefined();
  });

  it("changes nothing when REDFLAG_CORS_ORIGINS is unset: a preflight is a method not allowed", async () => {
    const res = await preflight(plain, APP);
    expect(res.status).toBe(405);
    expect(headersOf(res)["access-control-allow-origin"]).toBeUndefined();
    expect(headersOf(res).allow).toBe("POST");
    expect(headersOf(await call(plain, APP))["access-control-allow-origin"]).toBeUndefined();
  });
});

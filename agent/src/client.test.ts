import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GuardedHttp2SessionManager, ignoreLateSessionError } from "./client.ts";

let server: http2.Http2Server;
let url: string;
beforeAll(async () => {
  server = http2.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe("GuardedHttp2SessionManager", () => {
  it("keeps an error emitted after the manager let go of a connection from ending the process", async () => {
    const manager = new GuardedHttp2SessionManager(url, { pingIntervalMs: 30_000, pingTimeoutMs: 15_000 });
    const stream = await manager.request("GET", "/", {}, {});
    const session = stream.session!;
    stream.resume();
    await new Promise((resolve) => stream.once("close", resolve));
    expect(session.listeners("error")).toContain(ignoreLateSessionError);
    // The manager's own listeners gone, as after it moved on from this connection: a late error
    // (a keepalive PING that timed out) has only the guard to land on.
    for (const l of session.listeners("error")) if (l !== ignoreLateSessionError) session.off("error", l as () => void);
    const closed = new Promise((resolve) => session.once("close", resolve));
    session.destroy(new Error("PING timed out"));
    await closed;
    manager.abort();
  });
});

import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, PollCommandsResponseSchema } from "@redflag/gen/agent_service_pb";
import { type AgentApi, createAgentApi, createAgentTransport, GuardedHttp2SessionManager, ignoreLateSessionError, neverProcessed } from "./client.ts";

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

describe("a call the server never processed", () => {
  // A control plane's agent endpoint that refuses the first `refuse` calls before processing
  // them: with a REFUSED_STREAM reset, or with a GOAWAY sent as the connection opens that takes no
  // stream (as the server's idle timeout's GOAWAY crosses a call starting on that connection).
  async function refusingServer(refuse: number, how: "rst" | "goaway") {
    // Streams that reached the server, calls its handler ran, connections it took.
    let seen = 0;
    let handled = 0;
    let sessions = 0;
    const adapter = connectNodeAdapter({
      routes: (router) =>
        router.service(AgentService, {
          pollCommands: () => {
            handled++;
            return create(PollCommandsResponseSchema, { nextPollSeconds: 42 });
          },
        }),
    });
    const server = http2.createServer((req, res) => {
      seen++;
      if (how === "rst" && seen <= refuse) return void req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      adapter(req, res);
    });
    server.on("session", (session) => {
      sessions++;
      if (how === "goaway" && sessions <= refuse) session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const agent = await createAgentTransport(url, undefined);
    return {
      api: createAgentApi(agent.transport),
      calls: () => ({ seen, handled, sessions }),
      close() {
        agent.close();
        server.close();
      },
    };
  }
  const poll = (api: AgentApi) => api.pollCommands({ waitSeconds: 0 }, { accessToken: "t", machineId: "m" });

  it("goes again at once after a REFUSED_STREAM reset, and runs once", async () => {
    const s = await refusingServer(1, "rst");
    expect((await poll(s.api)).nextPollSeconds).toBe(42);
    expect(s.calls()).toEqual({ seen: 2, handled: 1, sessions: 1 });
    s.close();
  });

  it("goes again at once on a new connection when the stream crossed a GOAWAY", async () => {
    const s = await refusingServer(1, "goaway");
    expect((await poll(s.api)).nextPollSeconds).toBe(42);
    // The refused call never reached the server as a stream: the one it saw is the retry.
    expect(s.calls()).toEqual({ seen: 1, handled: 1, sessions: 2 });
    s.close();
  });

  it("goes again only once: a second refusal reaches the agent loop, which backs off", async () => {
    const s = await refusingServer(5, "rst");
    const err = await poll(s.api).catch((e: unknown) => e);
    expect(neverProcessed(err)).toBe(true);
    expect(s.calls()).toEqual({ seen: 2, handled: 0, sessions: 1 });
    s.close();
  });

  it("does not send again what the server may have processed", () => {
    expect(neverProcessed(new ConnectError("deadline", Code.DeadlineExceeded))).toBe(false);
    expect(neverProcessed(new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled))).toBe(false);
    expect(neverProcessed(new ConnectError("x", Code.Internal, undefined, undefined, Object.assign(new Error("Stream closed with error code NGHTTP2_INTERNAL_ERROR"), { code: "ERR_HTTP2_STREAM_ERROR" })))).toBe(false);
    expect(neverProcessed(new ConnectError("http/2 stream closed with error code REFUSED_STREAM (0x7)", Code.Unavailable))).toBe(true);
    // node refuses to open a stream on a connection that received GOAWAY: nothing was sent.
    const goaway = Object.assign(new Error("New streams cannot be created after receiving a GOAWAY"), { code: "ERR_HTTP2_GOAWAY_SESSION" });
    expect(neverProcessed(new ConnectError(goaway.message, Code.Internal, undefined, undefined, goaway))).toBe(true);
  });
});

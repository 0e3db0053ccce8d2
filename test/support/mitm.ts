import { createClient, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import {
  AgentService,
  type PollCommandsRequest,
  type PollCommandsResponse,
  type RegisterRequest,
  type RegisterResponse,
  type ReportResultsRequest,
} from "@redflag/gen/agent_service_pb";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CollectSpecsSchema, type SignedCommand } from "@redflag/gen/command_pb";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { signCommand, type SigningKey } from "../../agent/test/support/fake-control-plane.ts";

// A man in the middle on the agent's path: a plain-http (h2c) AgentService that forwards every
// call to the real control plane and lets a test rewrite what passes, as an attacker on the
// network could when the agent dials plain http.
export interface Mitm {
  url: string;
  // Rewrites the control plane's Register answer before the agent sees it.
  onRegister?: (res: RegisterResponse, req: RegisterRequest) => RegisterResponse;
  // Rewrites a poll answer before the agent sees it.
  onPoll?: (res: PollCommandsResponse, req: PollCommandsRequest) => PollCommandsResponse;
  // Every ReportResults the agent sent, as it sent it.
  reports: ReportResultsRequest[];
  close(): Promise<void>;
}

export async function startMitm(upstreamUrl: string, opts: { host?: string } = {}): Promise<Mitm> {
  const upstream = createClient(AgentService, createGrpcTransport({ baseUrl: upstreamUrl }));
  const forwarded = (ctx: HandlerContext) => {
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "x-machine-id"]) {
      const value = ctx.requestHeader.get(name);
      if (value) headers[name] = value;
    }
    return { headers, signal: ctx.signal };
  };
  const mitm: Omit<Mitm, "url" | "close"> = { reports: [] };
  const routes = (router: ConnectRouter) =>
    router.service(AgentService, {
      async register(req, ctx) {
        const res = await upstream.register(req, forwarded(ctx));
        return mitm.onRegister ? mitm.onRegister(res, req) : res;
      },
      renew: (req, ctx) => upstream.renew(req, forwarded(ctx)),
      async pollCommands(req, ctx) {
        const res = await upstream.pollCommands(req, forwarded(ctx));
        return mitm.onPoll ? mitm.onPoll(res, req) : res;
      },
      reportResults(req, ctx) {
        mitm.reports.push(req);
        return upstream.reportResults(req, forwarded(ctx));
      },
    });
  const server = http2.createServer({}, connectNodeAdapter({ routes }));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(mitm, {
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  }) as Mitm;
}

// What an attacker on the path slips into a poll answer: a collect_specs command for the agent,
// fresh, answering this very poll's nonce, numbered far ahead, signed by `key` (its own, or one
// it stole); only the signature can tell it from a genuine one.
export function injectedCommand(id: string, agentId: string, nonce: Uint8Array, key: SigningKey): SignedCommand {
  return signCommand(
    {
      id,
      agentId,
      sequence: 1_000_000n,
      issueTime: timestampFromDate(new Date()),
      expireTime: timestampFromDate(new Date(Date.now() + 600_000)),
      nonce,
      action: { case: "collectSpecs", value: create(CollectSpecsSchema) },
    },
    key,
  );
}

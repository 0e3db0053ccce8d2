import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AgentService,
  type PollCommandsRequestSchema,
  type PollCommandsResponse,
  type RegisterRequestSchema,
  type RegisterResponse,
  type RenewRequestSchema,
  type RenewResponse,
  type ReportResultsRequestSchema,
  type ReportResultsResponse,
} from "@redflag/gen/agent_service_pb";
import { readFile } from "node:fs/promises";
import type http2 from "node:http2";
import { AgentError, EXIT_USAGE } from "./errors.ts";

// connect-node's session manager detaches its listeners from a connection when it moves on,
// but the connection can still emit "error" afterwards: a keepalive PING that timed out destroys
// it with an error no one listens to, and Node turns that into an uncaught exception that ends
// the process (seen with 10,000 simulated agents on a starved CPU). The failure already reaches
// the calls through the manager; this listener, attached once to every connection and never
// removed, only keeps the late event from killing the agent.
export const ignoreLateSessionError = (): void => {};

export class GuardedHttp2SessionManager extends Http2SessionManager {
  readonly #guarded = new WeakSet<http2.Http2Session>();

  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(...args);
    const session = stream.session;
    if (session && !this.#guarded.has(session)) {
      this.#guarded.add(session);
      session.on("error", ignoreLateSessionError);
    }
    return stream;
  }
}

// Unary calls answer in well under a second; these bounds only catch a hung connection.
const CALL_TIMEOUT_MS = 30_000;
const REPORT_TIMEOUT_MS = 60_000;
// A long poll may legitimately take its whole wait; the margin covers the server's own work.
const POLL_MARGIN_MS = 15_000;
// Commands and configs are small; anything near this is hostile or broken.
const READ_MAX_BYTES = 16 * 1024 * 1024;

export interface Credentials {
  accessToken: string;
  machineId: string;
}

export interface AgentApi {
  register(req: MessageInitShape<typeof RegisterRequestSchema>, signal?: AbortSignal): Promise<RegisterResponse>;
  renew(req: MessageInitShape<typeof RenewRequestSchema>, signal?: AbortSignal): Promise<RenewResponse>;
  pollCommands(
    req: MessageInitShape<typeof PollCommandsRequestSchema> & { waitSeconds: number },
    creds: Credentials,
    signal?: AbortSignal,
  ): Promise<PollCommandsResponse>;
  reportResults(
    req: MessageInitShape<typeof ReportResultsRequestSchema>,
    creds: Credentials,
    signal?: AbortSignal,
  ): Promise<ReportResultsResponse>;
}

export interface AgentTransport {
  transport: Transport;
  // Closes the HTTP/2 connection, so a finished CLI command exits at once.
  close(): void;
}

export async function createAgentTransport(serverUrl: string, caFile: string | undefined): Promise<AgentTransport> {
  const url = parseServerUrl(serverUrl);
  const ca = url.protocol === "https:" && caFile ? await readCa(caFile) : undefined;
  const baseUrl = url.toString().replace(/\/$/, "");
  // h2c for http://, TLS with ALPN for https://; one multiplexed connection for every call.
  const sessionManager = new GuardedHttp2SessionManager(
    baseUrl,
    // Finds a dead connection under a long poll instead of waiting for the call timeout.
    { pingIntervalMs: 30_000, pingTimeoutMs: 15_000, idleConnectionTimeoutMs: 5 * 60_000 },
    ca ? { ca } : {},
  );
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "2",
    sessionManager,
    useBinaryFormat: true,
    readMaxBytes: READ_MAX_BYTES,
    interceptors: [retryNeverProcessed],
  });
  return { transport, close: () => sessionManager.abort() };
}

// A call the server refused before processing it goes again at once, once: the server closed
// an idle connection (GOAWAY) just as the call started on it, or refused the stream
// (RST_STREAM REFUSED_STREAM). RFC 9113 §8.1.4 guarantees such a request was not processed, so
// sending it again cannot run anything twice; gRPC retries these transparently too. Any other
// failure is the agent loop's to retry, with backoff.
export const retryNeverProcessed: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (req.stream || req.signal.aborted || !neverProcessed(err)) throw err;
    return await next(req);
  }
};

// Whether the error says the server never processed the request: node's own error for a stream
// reset with REFUSED_STREAM or created on a connection that had received GOAWAY, or connect's
// for a REFUSED_STREAM reset it saw itself.
export function neverProcessed(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "ERR_HTTP2_GOAWAY_SESSION") return true;
    if (code === "ERR_HTTP2_STREAM_ERROR" && e.message.endsWith("NGHTTP2_REFUSED_STREAM")) return true;
    if (e instanceof ConnectError && /\bREFUSED_STREAM \(0x7\)$/.test(e.rawMessage)) return true;
  }
  return false;
}

async function readCa(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new AgentError(`cannot read the CA file ${file}: ${(err as Error).message}`, EXIT_USAGE);
  }
}

export function parseServerUrl(serverUrl: string): URL {
  let url: URL;
  try {
    url = new URL(serverUrl);
  } catch {
    throw new Error(`server URL ${serverUrl} is not a URL (expected http://host:port or https://host)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`server URL ${serverUrl} must start with http:// or https://`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new Error(`server URL ${serverUrl} must not carry credentials, a query or a fragment`);
  }
  return url;
}

// Whether the URL names this machine (localhost, 127.0.0.0/8, ::1): plain http there never
// crosses a network a man in the middle could sit on.
export function isLoopbackUrl(url: URL): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export function createAgentApi(transport: Transport): AgentApi {
  const client = createClient(AgentService, transport);
  const headers = (creds: Credentials) => ({
    authorization: `Bearer ${creds.accessToken}`,
    "x-machine-id": creds.machineId,
  });
  return {
    register: (req, signal) => client.register(req, { timeoutMs: CALL_TIMEOUT_MS, signal }),
    renew: (req, signal) => client.renew(req, { timeoutMs: CALL_TIMEOUT_MS, signal }),
    pollCommands: (req, creds, signal) =>
      client.pollCommands(req, {
        headers: headers(creds),
        timeoutMs: req.waitSeconds * 1000 + POLL_MARGIN_MS,
        signal,
      }),
    reportResults: (req, creds, signal) =>
      client.reportResults(req, { headers: headers(creds), timeoutMs: REPORT_TIMEOUT_MS, signal }),
  };
}

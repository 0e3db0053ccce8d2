import type { DescMethod } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AgentService } from "@redflag/gen/agent_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { randomBytes, randomInt } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { policyFor } from "../../control-plane/src/auth/policy.ts";
import { RPC_SERVICES } from "../../control-plane/src/http/routes.ts";
import { generateKeyPair } from "../../control-plane/src/signing/keys.ts";
import { randomMachineId, registerRequest } from "../../control-plane/test/support/agents.ts";
import { freshDatabase, type FreshDatabase } from "../../control-plane/test/support/database.ts";
import { startServerProcess, type ServerProcess } from "../support/processes.ts";
import { createRandom, envelope, jsonFor, mutateBytes, protobufFor, type Random } from "./inputs.ts";

// Issue 13: attacking RedFlag is part of every CI run. Every RPC of every service, with the
// credentials that reach its handler (and now and then wrong ones), gets hostile Protobuf and
// JSON in Connect, gRPC and gRPC-Web framing, over HTTP/1.1 and HTTP/2, against a real control
// plane process. Every answer must come, in its protocol's own shape, with a code that is not
// Internal or Unknown, leaking no stack, path or SQL; the process must stay up and log no error.
//
// REDFLAG_FUZZ_SECONDS (20) sets how long; REDFLAG_FUZZ_SEED replays a run, and with
// REDFLAG_FUZZ_CASE one case of it (every failure prints both).
const SECONDS = Number(process.env.REDFLAG_FUZZ_SECONDS ?? 20);
const SEED = (() => {
  const text = process.env.REDFLAG_FUZZ_SEED;
  if (!text) return randomInt(2 ** 31);
  if (!/^\d+$/.test(text)) throw new Error(`REDFLAG_FUZZ_SEED=${text}: the RPC fuzzer's seeds are whole numbers (the one it printed)`);
  return Number(text);
})();
// One case, or several in a row ("240,242"): some failures need what came before on the connection.
const ONLY_CASES = process.env.REDFLAG_FUZZ_CASE ? process.env.REDFLAG_FUZZ_CASE.split(",").map(Number) : undefined;
const WORKERS = Number(process.env.REDFLAG_FUZZ_WORKERS ?? 6);
const UNARY_ANSWER_MS = 15_000;
// A server stream (or a client stream left open) that is still open after this is fine: it is
// closed by us.
const STREAM_OPEN_MS = 3_000;
const MAX_FAILURES = 5;
// REDFLAG_FUZZ_TRACE=1 prints every case and its answer, to see what came before a failure.
const TRACE = process.env.REDFLAG_FUZZ_TRACE === "1";

const METHODS = RPC_SERVICES.flatMap((s) => s.methods);

// What never belongs in an answer: stack frames, source paths, library and database internals.
// (The generator never produces these, so an echo of the input cannot trip it.)
const LEAK = /node_modules|\.ts:\d+|\n\s+at \S|prisma|invalid input syntax|violates \S+ constraint|duplicate key value|relation "\w+"|TypeError|ReferenceError|Cannot read propert|PGlite|ECONNREFUSED/i;

type Protocol = "connect" | "connect-stream" | "grpc" | "grpc-web";

interface Case {
  index: number;
  method: DescMethod;
  protocol: Protocol;
  httpVersion: 1 | 2;
  credential: string;
  headers: Record<string, string>;
  body: Uint8Array;
  // Over REDFLAG_MAX_REQUEST_BYTES: the server may close the connection instead of reading it.
  oversized: boolean;
}

interface Answer {
  status?: number;
  headers: Record<string, string>;
  trailers: Record<string, string>;
  body: Buffer;
  timedOut?: boolean;
  error?: string;
  // HTTP/2: the code the stream ended with
  rstCode?: number;
  // HTTP/1.1, traced: the local port of the connection it went on
  socket?: string;
}

interface Credentials {
  session: string;
  spareSessions: string[];
  adminKey: string;
  agentToken: string;
  machineId: string;
}

const MAX_REQUEST_BYTES = 8 * 1024 * 1024;

describe("RPC fuzzer", () => {
  let db: FreshDatabase;
  let server: ServerProcess;
  let creds: Credentials;
  let h2: http2.ClientHttp2Session | undefined;
  const h1Agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS });

  beforeAll(async () => {
    db = await freshDatabase();
    server = await startServerProcess({
      REDFLAG_DATA_DIR: db.dataDir,
      ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    });
    const adminKey = (await readFile(path.join(db.dataDir, "admin.key"), "utf8")).trim();
    const as = (bearer: string) =>
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${bearer}`), next(req))] });
    // A person, so the self-service RPCs have a session to act on; the username is one the
    // generator never produces, so its sign-in throttling cannot lock it.
    const username = `fuzz-${randomBytes(4).toString("hex")}`;
    const password = randomBytes(18).toString("base64");
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    const session = (await auth.setup({ username, password })).sessionToken;
    // Logout ends the session it is called with: each good Logout spends one of these.
    const spareSessions: string[] = [];
    for (let i = 0; i < 10; i++) spareSessions.push((await auth.login({ username, password })).sessionToken);
    const { secret } = await createClient(TokenService, as(adminKey)).createRegistrationToken({ seats: 1 });
    const machineId = randomMachineId();
    const registration = await createClient(AgentService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" })).register(
      registerRequest(secret, machineId, generateKeyPair()),
    );
    creds = { session, spareSessions, adminKey, agentToken: registration.accessToken, machineId };
  }, 120_000);

  afterAll(async () => {
    h2?.destroy();
    h1Agent.destroy();
    await server?.stop();
    await db?.cleanup();
  });

  const session = () => {
    if (!h2 || h2.closed || h2.destroyed) {
      h2 = http2.connect(server.url);
      h2.on("error", () => {});
    }
    return h2;
  };

  it(
    "answers hostile input to every RPC in every protocol with a proper refusal, and stays up",
    { timeout: (SECONDS + 120) * 1000 },
    async () => {
      const failures: string[] = [];
      const codes = new Map<string, number>();
      console.log(`RPC fuzzer: seed ${SEED}, ${SECONDS} s (REDFLAG_FUZZ_SEED=${SEED} replays this run)`);
      let next = 0;
      const end = Date.now() + SECONDS * 1000;
      const one = async (index: number) => {
        const c = buildCase(createRandom(caseSeed(SEED, index)), index, creds);
        // Node's HTTP/2 client never gives back the session memory of a big upload the server
        // stopped (RST_STREAM NO_ERROR, as it should), and after a few it refuses every new
        // stream with ENHANCE_YOUR_CALM itself: big uploads get a session of their own.
        const own = c.httpVersion === 2 && c.body.length > 1024 * 1024 ? http2.connect(server.url).on("error", () => {}) : undefined;
        const answer = await send(c, server.url, c.httpVersion === 2 ? (own ?? session()) : undefined, h1Agent);
        own?.destroy();
        let verdict: Verdict;
        try {
          verdict = judge(c, answer);
        } catch (err) {
          verdict = { code: "unreadable", failure: `the answer cannot be read: ${(err as Error).message}` };
        }
        if (TRACE) console.log(`${c.index} ${c.method.name} ${c.protocol} h${c.httpVersion} ${c.body.length}B -> ${verdict.code} rst=${answer.rstCode ?? "-"} socket=${answer.socket ?? "-"}`);
        codes.set(verdict.code, (codes.get(verdict.code) ?? 0) + 1);
        if (verdict.failure) failures.push(describeFailure(c, answer, verdict.failure));
      };
      if (ONLY_CASES) {
        for (const index of ONLY_CASES) await one(index);
        next = ONLY_CASES.length;
      } else {
        const worker = async () => {
          while (failures.length < MAX_FAILURES && Date.now() < end) await one(next++);
        };
        await Promise.all(Array.from({ length: WORKERS }, worker));
      }

      if (TRACE) console.log(server.logs.join("\n"));
      const summary = [...codes].sort((a, b) => b[1] - a[1]).map(([code, n]) => `${code} ${n}`).join(", ");
      console.log(`RPC fuzzer: seed ${SEED}, ${next} cases: ${summary}`);
      expect(failures, `REDFLAG_FUZZ_SEED=${SEED}\n${failures.join("\n\n")}`).toEqual([]);

      // Still up and serving, and nothing it logged was an error.
      expect(server.child.exitCode, server.logs.join("\n")).toBeNull();
      expect((await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
      const errors = server.logs.flatMap((l) => l.split("\n")).filter((l) => /"level":(50|60)/.test(l) || /Uncaught|unhandled/i.test(l));
      expect(errors, `REDFLAG_FUZZ_SEED=${SEED}`).toEqual([]);
    },
  );
});

function caseSeed(seed: number, index: number): number {
  // splitmix-style mixing: neighbouring cases get unrelated streams
  let z = (seed ^ Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

const FORGED_JWT = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiJ9.";

function buildCase(r: Random, index: number, creds: Credentials): Case {
  const method = r.pick(METHODS);
  const access = policyFor(method.parent.typeName, method.name);
  const streaming = method.methodKind !== "unary";
  const headers: Record<string, string> = {};

  // The credentials that reach the handler, or (one time in ten) wrong ones.
  let credential = "right";
  const wrong = r.chance(0.1) || (method.parent.typeName === SecurityService.typeName && method.name === "RevokeAdminKey");
  if (wrong) {
    credential = r.pick(["none", "garbage", "forged JWT", "agent token", "admin key", "wrong machine"]);
    if (credential === "garbage") headers.authorization = `Bearer ${randomBytes(r.int(64)).toString("base64url")}`;
    if (credential === "forged JWT") headers.authorization = `Bearer ${FORGED_JWT}`;
    if (credential === "agent token") headers.authorization = `Bearer ${creds.agentToken}`;
    // The admin key on what it may not call (agent RPCs, a person's own credentials).
    if (credential === "admin key") headers.authorization = `Bearer ${creds.adminKey}`;
    if (credential === "wrong machine") {
      headers.authorization = `Bearer ${creds.agentToken}`;
      headers["x-machine-id"] = randomMachineId();
    }
    if (credential === "admin key" && (access === "viewer" || access === "operator" || access === "admin")) credential = "right";
  } else if (access === "agent") {
    headers.authorization = `Bearer ${creds.agentToken}`;
    headers["x-machine-id"] = creds.machineId;
  } else if (access === "self" || (method.parent.typeName === AuthService.typeName && method.name === "WhoAmI")) {
    headers.authorization = `Bearer ${creds.session}`;
  } else if (method.parent.typeName === AuthService.typeName && method.name === "Logout") {
    headers.authorization = `Bearer ${creds.spareSessions.pop() ?? creds.session}`;
  } else if (access !== "public") {
    headers.authorization = `Bearer ${creds.adminKey}`;
  }

  const roll = r.next();
  const protocol: Protocol = streaming
    ? roll < 0.5 ? "connect-stream" : roll < 0.75 ? "grpc" : "grpc-web"
    : roll < 0.4 ? "connect" : roll < 0.65 ? "grpc" : roll < 0.9 ? "grpc-web" : "connect-stream";
  const httpVersion = protocol === "grpc" || r.chance(0.5) ? 2 : 1;
  const json = r.chance(0.25);

  const message = () => {
    let bytes = json ? new TextEncoder().encode(jsonFor(r, method.input)) : protobufFor(r, method.input);
    if (r.chance(json ? 0.2 : 0.3)) bytes = mutateBytes(r, bytes);
    return bytes;
  };
  let body: Uint8Array;
  let oversized = false;
  if (r.chance(0.01)) {
    // Over the request size limit, as one message or as raw bytes.
    body = new Uint8Array(MAX_REQUEST_BYTES + 1 + r.int(1 << 20));
    oversized = true;
  } else if (protocol === "connect") {
    body = message();
  } else {
    const frames: Uint8Array[] = [];
    const count = streaming ? r.int(4) : r.chance(0.1) ? r.pick([0, 2, 3]) : 1;
    // The compressed flag: with the encoding it claims, without one, or with data that is not gzip.
    const compression = r.next();
    const gzip = compression < 0.1;
    const flagWithoutEncoding = compression >= 0.1 && compression < 0.13;
    const garbageGzip = compression >= 0.13 && compression < 0.16;
    for (let i = 0; i < count; i++) {
      const data = message();
      if (flagWithoutEncoding || garbageGzip) frames.push(envelope(r, data, { flags: 1 }));
      else frames.push(envelope(r, data, { compress: gzip }));
    }
    if (protocol === "connect-stream" && r.chance(0.1)) frames.push(envelope(r, new TextEncoder().encode("{}"), { flags: 2 }));
    if (r.chance(0.05)) frames.push(r.bytes(1 + r.int(4))); // a cut envelope header
    body = Buffer.concat(frames);
    const encodingHeader = protocol === "connect-stream" ? "connect-content-encoding" : "grpc-encoding";
    if (gzip || garbageGzip) headers[encodingHeader] = "gzip";
    else if (r.chance(0.03)) headers[encodingHeader] = r.pick(["zstd", "identity", "br", "x-unknown"]);
  }

  const subtype = json ? "json" : "proto";
  if (protocol === "connect") {
    headers["content-type"] = `application/${subtype}`;
    if (r.chance(0.95)) headers["connect-protocol-version"] = "1";
    if (r.chance(0.08)) {
      headers["content-encoding"] = "gzip";
      body = new Uint8Array(gzipSync(body));
    } else if (r.chance(0.03)) headers["content-encoding"] = r.pick(["gzip", "br", "zstd"]); // claimed, not done
    if (r.chance(0.1)) headers["connect-timeout-ms"] = r.pick(["0", "1", "-1", "abc", "99999999999", "1e3"]);
  } else if (protocol === "connect-stream") {
    headers["content-type"] = `application/connect+${subtype}`;
    if (r.chance(0.95)) headers["connect-protocol-version"] = "1";
    if (r.chance(0.1)) headers["connect-timeout-ms"] = r.pick(["0", "1", "-1", "abc", "99999999999"]);
  } else {
    headers["content-type"] = protocol === "grpc" ? (json ? "application/grpc+json" : r.pick(["application/grpc", "application/grpc+proto"])) : `application/grpc-web+${subtype}`;
    if (protocol === "grpc") headers.te = "trailers";
    if (r.chance(0.1)) headers["grpc-timeout"] = r.pick(["1n", "0S", "99999999H", "abc", "-1S", "100000000S", "1m"]);
  }
  if (r.chance(0.03)) headers["content-type"] = r.pick(["text/plain", "", "application/x-protobuf", "application/proto; charset=utf-8", "application/grpc-web-text"]);

  // Generated messages can pass the limit too (a long repeated field): the server may close those.
  return { index, method, protocol, httpVersion, credential, headers, body, oversized: oversized || body.length > MAX_REQUEST_BYTES };
}

function send(c: Case, baseUrl: string, h2: http2.ClientHttp2Session | undefined, agent: http.Agent): Promise<Answer> {
  const path = `/${c.method.parent.typeName}/${c.method.name}`;
  const limit = c.method.methodKind === "unary" ? UNARY_ANSWER_MS : STREAM_OPEN_MS;
  return new Promise<Answer>((resolve) => {
    const answer: Answer = { headers: {}, trailers: {}, body: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (extra: Partial<Answer> = {}) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...answer, ...extra, body: Buffer.concat(chunks) });
    };
    const flat = (h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders) =>
      Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]));

    if (h2) {
      const stream = h2.request({ ":method": "POST", ":path": path, ...c.headers });
      timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        finish({ timedOut: true });
      }, limit);
      stream.on("response", (h) => {
        answer.status = Number(h[":status"]);
        answer.headers = flat(h);
      });
      stream.on("trailers", (t) => (answer.trailers = flat(t)));
      stream.on("data", (d: Buffer) => chunks.push(d));
      stream.on("error", (err) => {
        if (answer.status === undefined) finish({ error: err.message });
      });
      stream.on("close", () => {
        answer.rstCode = stream.rstCode;
        if (answer.status === undefined) finish({ error: `stream closed without an answer (RST_STREAM ${stream.rstCode})` });
        else finish();
      });
      stream.end(c.body);
      return;
    }

    const req = http.request(new URL(path, baseUrl), { method: "POST", headers: { ...c.headers, "content-length": c.body.length }, agent });
    timer = setTimeout(() => {
      req.destroy();
      finish({ timedOut: true });
    }, limit);
    if (TRACE) req.on("socket", (socket) => (answer.socket = `${socket.localPort ?? "new"}`));
    req.on("response", (res) => {
      answer.status = res.statusCode;
      answer.headers = flat(res.headers);
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => {
        answer.trailers = flat(res.trailers);
        finish();
      });
      res.on("error", (err) => finish({ error: err.message }));
    });
    req.on("error", (err) => {
      if (answer.status === undefined) finish({ error: err.message });
    });
    req.end(c.body);
  });
}

interface Verdict {
  code: string;
  failure?: string;
}

const FORBIDDEN_GRPC = new Set([2, 13, 15]); // Unknown, Internal, DataLoss
const FORBIDDEN_CONNECT = new Set(["unknown", "internal", "data_loss"]);

const PROTOCOL_TYPES: Record<Protocol, string> = { connect: "application/proto", "connect-stream": "application/connect+proto", grpc: "application/grpc", "grpc-web": "application/grpc-web" };

// Which protocol a content type names, as protocol-refusals.ts reads it.
function familyOf(contentType: string | undefined): string {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  if (type === "application/json" || type === "application/proto" || type.startsWith("application/connect+")) return "connect";
  return "none";
}

function judge(c: Case, a: Answer): Verdict {
  const streaming = c.method.methodKind !== "unary";
  if (a.timedOut) return streaming ? { code: "stream left open" } : { code: "timeout", failure: `no answer within ${UNARY_ANSWER_MS / 1000} s` };
  if (a.error) return c.oversized ? { code: "closed (oversized)" } : { code: "transport error", failure: `the connection failed: ${a.error}` };
  const text = `${plainBody(c, a).toString("latin1")}\n${JSON.stringify(a.headers)}\n${JSON.stringify(a.trailers)}`;
  const leak = LEAK.exec(text);
  if (leak) return { code: "leak", failure: `the answer leaks "${leak[0]}"` };
  const status = a.status!;

  // A content type of another protocol (or of none): the server can only go by what it names, so
  // the answer is judged as that: a 4xx, the 505 a bidirectional stream over HTTP/1.1 gets, or a
  // gRPC status that is not a server fault.
  if (familyOf(c.headers["content-type"]) !== familyOf(PROTOCOL_TYPES[c.protocol])) {
    if ((status >= 400 && status < 500) || status === 505) return { code: `http ${status}` };
    const grpcStatus = a.headers["grpc-status"] ?? a.trailers["grpc-status"];
    if (status === 200 && grpcStatus !== undefined && !FORBIDDEN_GRPC.has(Number(grpcStatus))) return { code: `grpc ${grpcStatus}` };
    return { code: `http ${status}`, failure: `HTTP ${status} for a request of content type "${c.headers["content-type"]}"` };
  }

  if (c.protocol === "grpc" || c.protocol === "grpc-web") {
    if (status !== 200) return status >= 400 && status < 500 ? { code: `http ${status}` } : { code: `http ${status}`, failure: `HTTP ${status} for ${c.protocol}` };
    let grpcStatus = a.headers["grpc-status"] ?? a.trailers["grpc-status"];
    if (grpcStatus === undefined && c.protocol === "grpc-web") grpcStatus = grpcWebTrailer(a)?.["grpc-status"];
    if (grpcStatus === undefined) return { code: "no status", failure: `a ${c.protocol} answer without grpc-status` };
    const code = Number(grpcStatus);
    if (FORBIDDEN_GRPC.has(code)) return { code: `grpc ${code}`, failure: `grpc-status ${code}: ${decodeURIComponent(a.headers["grpc-message"] ?? a.trailers["grpc-message"] ?? grpcWebTrailer(a)?.["grpc-message"] ?? "")}` };
    return { code: `grpc ${code}` };
  }

  const contentType = a.headers["content-type"] ?? "";
  if (c.protocol === "connect-stream" && status === 200) {
    const end = envelopes(a.body, envelopeEncoding(a)).at(-1);
    if (!end || (end.flags & 2) === 0) return { code: "no end", failure: "a Connect stream without its end-of-stream message" };
    let parsed: { error?: { code?: string; message?: string } };
    try {
      parsed = JSON.parse(end.data.toString("utf8")) as typeof parsed;
    } catch {
      return { code: "bad end", failure: "an end-of-stream message that is not JSON" };
    }
    const code = parsed.error?.code ?? "ok";
    if (FORBIDDEN_CONNECT.has(code)) return { code, failure: `${code}: ${parsed.error?.message}` };
    return { code };
  }
  if (status === 200) return { code: "ok" };
  if (contentType.startsWith("application/json")) {
    let parsed: { code?: string; message?: string };
    try {
      parsed = JSON.parse(plainBody(c, a).toString("utf8")) as typeof parsed;
    } catch {
      return { code: `http ${status}`, failure: `HTTP ${status} with a JSON content type and a body that is not JSON` };
    }
    const code = parsed.code ?? `http ${status}`;
    if (FORBIDDEN_CONNECT.has(code) || status === 500) return { code, failure: `HTTP ${status} ${code}: ${parsed.message}` };
    return { code };
  }
  // Protocol-level refusals (unsupported media type, method) come before any RPC.
  if (status >= 400 && status < 500) return { code: `http ${status}` };
  return { code: `http ${status}`, failure: `HTTP ${status} (${contentType}) without a Connect error body` };
}

function decompress(data: Buffer, encoding: string | undefined): Buffer {
  if (encoding === "gzip") return gunzipSync(data);
  if (encoding === "br") return brotliDecompressSync(data);
  if (encoding === undefined || encoding === "identity") return data;
  throw new Error(`the answer names an encoding the fuzzer never asked for: ${encoding}`);
}

const envelopeEncoding = (a: Answer) => a.headers["grpc-encoding"] ?? a.headers["connect-content-encoding"];

// The answer's bytes as sent before compression: what a leak would be visible in.
function plainBody(c: Case, a: Answer): Buffer {
  if (c.protocol === "connect" || a.status !== 200) return decompress(a.body, a.headers["content-encoding"]);
  return Buffer.concat(envelopes(a.body, envelopeEncoding(a)).map((e) => e.data));
}

// The answer's envelopes; compressed ones (flag 1) in the encoding the answer names.
function envelopes(body: Buffer, encoding: string | undefined): { flags: number; data: Buffer }[] {
  const out: { flags: number; data: Buffer }[] = [];
  for (let at = 0; at + 5 <= body.length; ) {
    const size = body.readUInt32BE(at + 1);
    if (at + 5 + size > body.length) break;
    const flags = body[at]!;
    const data = body.subarray(at + 5, at + 5 + size);
    out.push({ flags, data: flags & 1 ? decompress(data, encoding) : data });
    at += 5 + size;
  }
  return out;
}

function grpcWebTrailer(a: Answer): Record<string, string> | undefined {
  const frame = envelopes(a.body, envelopeEncoding(a)).find((e) => (e.flags & 0x80) !== 0);
  if (!frame) return undefined;
  const out: Record<string, string> = {};
  for (const line of frame.data.toString("utf8").split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) out[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return out;
}

function describeFailure(c: Case, a: Answer, failure: string): string {
  const head = Buffer.from(c.body.subarray(0, 48)).toString("hex");
  return [
    `case ${c.index} (REDFLAG_FUZZ_SEED=${SEED} REDFLAG_FUZZ_CASE=${c.index}): ${failure}`,
    `  ${c.method.parent.typeName}/${c.method.name} over ${c.protocol}, HTTP/${c.httpVersion === 2 ? "2" : "1.1"}, ${c.credential} credentials`,
    `  request headers ${JSON.stringify({ ...c.headers, authorization: c.headers.authorization ? "…" : undefined })}, body ${c.body.length} bytes: ${head}${c.body.length > 48 ? "…" : ""}`,
    `  answer HTTP ${a.status ?? "-"} ${JSON.stringify(a.headers)} trailers ${JSON.stringify(a.trailers)} body ${a.body.subarray(0, 300).toString("latin1")}`,
  ].join("\n");
}

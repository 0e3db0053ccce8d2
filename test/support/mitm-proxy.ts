import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

// A man in the middle between agents and a control plane over cleartext HTTP/2 (h2c), as the
// agent speaks it to an http:// server. Every call passes through; the test may rewrite the body
// of a request or of a successful answer, per RPC, at the wire level (an attacker needs no schema).
// Compression is stripped from what the agent accepts, so answers come back as plain protobuf.
export interface MitmProxy {
  url: string;
  // Rewrites a request body before it goes upstream, by RPC path ("/redflag.v1.AgentService/PollCommands").
  request: ((path: string, body: Uint8Array) => Uint8Array) | undefined;
  // Rewrites a successful answer before the agent gets it.
  response: ((path: string, body: Uint8Array) => Uint8Array) | undefined;
  close(): Promise<void>;
}

export async function startMitmProxy(upstream: string): Promise<MitmProxy> {
  const client = http2.connect(upstream);
  client.on("error", () => undefined);
  const server = http2.createServer();
  const proxy: MitmProxy = { url: "", request: undefined, response: undefined, close: async () => undefined };
  server.on("stream", (stream, headers) => {
    const path = String(headers[":path"]);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", () => undefined);
    stream.on("end", () => {
      let body: Uint8Array = Buffer.concat(chunks);
      body = proxy.request?.(path, body) ?? body;
      const out: http2.OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(headers)) {
        if (name.startsWith(":") && name !== ":method" && name !== ":path") continue;
        if (name === "accept-encoding" || name === "content-length") continue;
        out[name] = value;
      }
      out["content-length"] = body.length;
      const upstreamCall = client.request(out);
      upstreamCall.on("error", () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
      let status = 502;
      let answerHeaders: http2.IncomingHttpHeaders = {};
      upstreamCall.on("response", (h) => {
        status = Number(h[":status"]);
        answerHeaders = h;
      });
      const answer: Buffer[] = [];
      upstreamCall.on("data", (c: Buffer) => answer.push(c));
      upstreamCall.on("end", () => {
        let reply: Uint8Array = Buffer.concat(answer);
        if (status === 200) reply = proxy.response?.(path, reply) ?? reply;
        const back: http2.OutgoingHttpHeaders = { ":status": status };
        for (const [name, value] of Object.entries(answerHeaders)) {
          if (name.startsWith(":") || name === "content-length") continue;
          back[name] = value;
        }
        back["content-length"] = reply.length;
        if (stream.destroyed) return;
        stream.respond(back);
        stream.end(reply);
      });
      upstreamCall.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      client.close();
      server.close(() => resolve());
    });
  return proxy;
}

// What to do with one field of a message: replace a length-delimited value, drop the field
// (null), or keep it (undefined). `value` is undefined for fields that are not length-delimited.
export type FieldEdit = (value: Uint8Array | undefined) => Uint8Array | null | undefined;

// Re-encodes a protobuf message field by field, applying `edits` by field number and copying
// every other field byte for byte.
export function rewriteFields(bytes: Uint8Array, edits: Record<number, FieldEdit>): Uint8Array {
  const reader = new BinaryReader(bytes);
  const writer = new BinaryWriter();
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    const edit = edits[field];
    if (!edit) {
      reader.skip(wireType, field);
      writer.raw(bytes.subarray(start, reader.pos));
      continue;
    }
    const value = wireType === WireType.LengthDelimited ? reader.bytes() : (reader.skip(wireType, field), undefined);
    const next = edit(value);
    if (next === null) continue;
    if (next === undefined || value === undefined) writer.raw(bytes.subarray(start, reader.pos));
    else writer.tag(field, WireType.LengthDelimited).bytes(next);
  }
  return writer.finish();
}

// The field numbers an attacker reads off the public .proto files.
const AGENT_CONFIG_HOLDS = 6;
const SIGNED_AGENT_CONFIG_BYTES = 1;

// Removes every hold from the agent config of a PollCommands answer, wherever the config sits:
// the unsigned `config` (field 2) the control plane sent before configs were signed, or the bytes
// inside `signed_config` (field 5), leaving the signature as it was. The revision is untouched.
export function stripHoldsFromPollAnswer(body: Uint8Array): Uint8Array {
  const stripHolds: FieldEdit = (config) => rewriteFields(config!, { [AGENT_CONFIG_HOLDS]: () => null });
  return rewriteFields(body, {
    2: stripHolds,
    5: (signed) => rewriteFields(signed!, { [SIGNED_AGENT_CONFIG_BYTES]: stripHolds }),
  });
}

// Drops the config revision from a PollCommands request's status (field 4, config_revision 3), so
// the control plane sends the config again, for the attacker to change.
export function forgetConfigRevision(body: Uint8Array): Uint8Array {
  return rewriteFields(body, { 4: (status) => rewriteFields(status!, { 3: () => null }) });
}

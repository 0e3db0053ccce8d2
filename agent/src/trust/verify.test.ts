import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Command, CommandSchema, SignedCommandSchema } from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { COMMAND_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "./envelope.ts";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { checkCommand, openSignedCommand, readUnverifiedId } from "./verify.ts";

const key = generateKeyPair();
const keyId = keyIdOf(key.publicKey);
const pins = new Map([[keyId, key.publicKey]]);
const agentId = "5d1e8a53-7c3c-4d84-9d0e-0f6b8f2b6a10";
const nonce = new Uint8Array(32).fill(7);
const now = new Date("2026-01-01T12:00:00Z");

function command(overrides: Omit<MessageInitShape<typeof CommandSchema>, "$typeName"> = {}): Command {
  return create(CommandSchema, {
    id: "0b8c5b4e-3f0f-4a57-8f6e-2c8b1a1d9e01",
    agentId,
    sequence: 8n,
    issueTime: timestampFromDate(new Date(now.getTime() - 1000)),
    expireTime: timestampFromDate(new Date(now.getTime() + 600_000)),
    nonce,
    action: { case: "collectSpecs", value: {} },
    ...overrides,
  });
}

function sign(cmd: Command, signer = key, id = keyId) {
  const bytes = toBinary(CommandSchema, cmd);
  return create(SignedCommandSchema, { command: bytes, signature: signEnvelope(signer.secretKey, COMMAND_TYPE, bytes), keyId: id });
}

const ctx = { agentId, nonce, lastSequence: 7n, now };

describe("openSignedCommand", () => {
  it("decodes a command signed by a pinned key", () => {
    const opened = openSignedCommand(sign(command()), pins);
    expect(opened.ok && opened.command.id).toBe("0b8c5b4e-3f0f-4a57-8f6e-2c8b1a1d9e01");
  });

  it("rejects a tampered command and still names it for the report", () => {
    const signed = sign(command());
    signed.command[signed.command.length - 1]! ^= 0xff;
    expect(openSignedCommand(signed, pins)).toMatchObject({ ok: false, commandId: "0b8c5b4e-3f0f-4a57-8f6e-2c8b1a1d9e01" });
    signed.command[signed.command.length - 1]! ^= 0xff;
    // Sequence 8 → 9 (tag 0x18, varint 0x08): still a valid Command, with different content.
    const at = Buffer.from(signed.command).indexOf(Buffer.from([0x18, 0x08])) + 1;
    expect(at).toBeGreaterThan(0);
    signed.command[at] = 0x09;
    expect(openSignedCommand(signed, pins)).toEqual({
      ok: false,
      commandId: "0b8c5b4e-3f0f-4a57-8f6e-2c8b1a1d9e01",
      reason: `signature does not verify with pinned key ${keyId}`,
    });
  });

  it("rejects an unknown key and a pinned ID used with another key", () => {
    const other = generateKeyPair();
    expect(openSignedCommand(sign(command(), other, keyIdOf(other.publicKey)), pins)).toMatchObject({
      ok: false,
      reason: `unknown signing key ${keyIdOf(other.publicKey)}`,
    });
    expect(openSignedCommand(sign(command(), other, keyId), pins)).toMatchObject({
      ok: false,
      reason: `signature does not verify with pinned key ${keyId}`,
    });
  });

  it("cannot name a rejected command whose bytes are not protobuf", () => {
    const signed = create(SignedCommandSchema, { command: new Uint8Array([0xff, 0xff, 0xff]), signature: new Uint8Array(64), keyId });
    expect(openSignedCommand(signed, pins)).toMatchObject({ ok: false, commandId: undefined });
  });

  it("refuses a verified command without an ID", () => {
    expect(openSignedCommand(sign(command({ id: "" })), pins)).toMatchObject({ ok: false, commandId: undefined });
  });
});

describe("readUnverifiedId", () => {
  it("reads field 1 only and skips the rest", () => {
    expect(readUnverifiedId(toBinary(CommandSchema, command({ id: "abc" })))).toBe("abc");
  });
  it("gives up on garbage and unprintable IDs", () => {
    expect(readUnverifiedId(new Uint8Array([0x0a, 0x05, 0x61]))).toBeUndefined();
    expect(readUnverifiedId(toBinary(CommandSchema, command({ id: "a\nb" })))).toBeUndefined();
    expect(readUnverifiedId(toBinary(CommandSchema, command({ id: "x".repeat(500) })))).toBeUndefined();
  });
});

describe("checkCommand", () => {
  it("accepts a current command for this agent, this poll and a new sequence", () => {
    expect(checkCommand(command(), ctx)).toBeUndefined();
  });

  it("rejects a command for another agent", () => {
    expect(checkCommand(command({ agentId: "someone-else" }), ctx)).toBe("command is for another agent");
  });

  it("rejects an expired command, without clock-skew tolerance", () => {
    const expired = new Date(now.getTime() - 1000);
    expect(checkCommand(command({ expireTime: timestampFromDate(expired) }), ctx)).toBe(
      `command expired at ${expired.toISOString()}; this host's clock says ${now.toISOString()} (unless the command waited behind a long one, this host's clock is ahead: correct it)`,
    );
    expect(checkCommand(command({ expireTime: timestampFromDate(now) }), ctx)).toMatch(/^command expired at/);
    expect(checkCommand(command({ expireTime: undefined }), ctx)).toBe("command has no expiry time");
  });

  it("tolerates an issue time up to a minute ahead, not more", () => {
    expect(checkCommand(command({ issueTime: timestampFromDate(new Date(now.getTime() + 59_000)) }), ctx)).toBeUndefined();
    expect(checkCommand(command({ issueTime: timestampFromDate(new Date(now.getTime() + 120_000)) }), ctx)).toMatch(
      /^command issued in the future/,
    );
  });

  it("rejects a nonce from another poll", () => {
    expect(checkCommand(command({ nonce: new Uint8Array(32).fill(8) }), ctx)).toBe("nonce does not match this poll");
    expect(checkCommand(command({ nonce: new Uint8Array() }), { ...ctx, nonce: new Uint8Array() })).toBe(
      "nonce does not match this poll",
    );
  });

  it("rejects a replayed or older sequence", () => {
    expect(checkCommand(command({ sequence: 4n }), ctx)).toBe("sequence 4 is not above last executed 7");
    expect(checkCommand(command({ sequence: 7n }), ctx)).toBe("sequence 7 is not above last executed 7");
  });
});

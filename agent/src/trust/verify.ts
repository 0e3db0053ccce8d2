import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type Command, CommandSchema, type SignedCommand } from "@redflag/gen/command_pb";
import { timingSafeEqual } from "node:crypto";
import { COMMAND_TYPE } from "@redflag/common/signing/envelope";
import { printable, verifyEnvelope, type PinnedKeys } from "./envelope.ts";

// A command may claim an issue time this far ahead of our clock (skew between hosts). Expiry
// gets no such tolerance: an expired command is never run.
export const ISSUE_TIME_SKEW_MS = 60_000;

const MAX_COMMAND_ID_LENGTH = 128;

export type Opened =
  | { ok: true; command: Command }
  // commandId is undefined when not even an ID could be read: nothing can be reported then.
  | { ok: false; commandId: string | undefined; reason: string };

// Step one: pinned key, signature over the exact bytes, and only then decoding.
export function openSignedCommand(signed: SignedCommand, pins: PinnedKeys): Opened {
  const verification = verifyEnvelope(pins, signed.keyId, COMMAND_TYPE, signed.command, signed.signature);
  if (!verification.ok) {
    return { ok: false, commandId: readUnverifiedId(signed.command), reason: verification.reason };
  }
  let command: Command;
  try {
    command = fromBinary(CommandSchema, signed.command);
  } catch {
    return { ok: false, commandId: undefined, reason: "signed bytes are not a redflag.v1.Command" };
  }
  if (!validId(command.id)) return { ok: false, commandId: undefined, reason: "signed command has no usable id" };
  return { ok: true, command };
}

export interface CheckContext {
  agentId: string;
  nonce: Uint8Array;
  lastSequence: bigint;
  now: Date;
}

// Step two, on a verified command: is it for us, current, from this poll, and new? Returns the
// reason to reject it, or undefined when it may run.
export function checkCommand(command: Command, ctx: CheckContext): string | undefined {
  if (command.agentId !== ctx.agentId) return "command is for another agent";
  if (!command.expireTime) return "command has no expiry time";
  const expires = timestampDate(command.expireTime);
  if (expires.getTime() <= ctx.now.getTime()) {
    // Commands are signed with a fresh expiry when delivered: one that arrives expired usually
    // means this host's clock is ahead of the control plane's.
    return `command expired at ${expires.toISOString()}; this host's clock says ${ctx.now.toISOString()} (unless the command waited behind a long one, this host's clock is ahead: correct it)`;
  }
  if (command.issueTime) {
    const issued = timestampDate(command.issueTime);
    if (issued.getTime() > ctx.now.getTime() + ISSUE_TIME_SKEW_MS) {
      return `command issued in the future at ${issued.toISOString()}; this host's clock says ${ctx.now.toISOString()} (this host's clock is behind: correct it)`;
    }
  }
  if (!sameBytes(command.nonce, ctx.nonce)) return "nonce does not match this poll";
  if (command.sequence <= ctx.lastSequence) {
    return `sequence ${command.sequence} is not above last executed ${ctx.lastSequence}`;
  }
  return undefined;
}

// Reads only field 1 (id) of bytes whose signature failed, so the rejection can be reported
// against the right command. Nothing else in those bytes is decoded or trusted, and damage
// after the ID does not hide it.
export function readUnverifiedId(bytes: Uint8Array): string | undefined {
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [fieldNo, wireType] = reader.tag();
      if (fieldNo === 1 && wireType === WireType.LengthDelimited) {
        const id = reader.string();
        return validId(id) ? id : undefined;
      }
      reader.skip(wireType, fieldNo);
    }
  } catch {
    // not protobuf
  }
  return undefined;
}

function validId(id: string): boolean {
  return id.length > 0 && id.length <= MAX_COMMAND_ID_LENGTH && printable(id, MAX_COMMAND_ID_LENGTH) === id;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

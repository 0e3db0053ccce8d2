import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CommandSchema, type SignedCommand, SignedCommandSchema } from "@redflag/gen/command_pb";
import { type TrustedKey, TrustedKeySchema } from "@redflag/gen/common_pb";
import { sign, type KeyPair } from "./keys.ts";
import { COMMAND_TYPE, MANIFEST_TYPE, pae } from "./pae.ts";

export interface CommandHeader {
  id: string;
  agentId: string;
  sequence: bigint;
  issueTime: Date;
  expireTime: Date;
  nonce: Uint8Array;
}

export interface CommandSigner {
  readonly activeKeyId: string;
  trustedKeys(): TrustedKey[];
  // `action` is a serialized Command holding only the action (and timeout); the header fields
  // are serialized separately and concatenated, which protobuf defines as merging the two.
  signCommand(header: CommandHeader, action: Uint8Array): SignedCommand;
  // Ed25519 over PAE("redflag.v1.ArtifactManifest", manifest) for update_agent.
  signManifest(manifest: Uint8Array): { manifestSignature: Uint8Array; keyId: string };
}

export function createCommandSigner(active: KeyPair, trusted: KeyPair[]): CommandSigner {
  const keys = trusted.map((k) => create(TrustedKeySchema, { keyId: k.keyId, publicKey: k.publicKey }));
  return {
    activeKeyId: active.keyId,
    trustedKeys: () => keys,
    signCommand(header, action) {
      const head = toBinary(
        CommandSchema,
        create(CommandSchema, {
          id: header.id,
          agentId: header.agentId,
          sequence: header.sequence,
          issueTime: timestampFromDate(header.issueTime),
          expireTime: timestampFromDate(header.expireTime),
          nonce: header.nonce,
        }),
      );
      const command = new Uint8Array(head.length + action.length);
      command.set(head, 0);
      command.set(action, head.length);
      return create(SignedCommandSchema, {
        command,
        signature: sign(active.secretKey, pae(COMMAND_TYPE, command)),
        keyId: active.keyId,
      });
    },
    signManifest(manifest) {
      return { manifestSignature: sign(active.secretKey, pae(MANIFEST_TYPE, manifest)), keyId: active.keyId };
    },
  };
}

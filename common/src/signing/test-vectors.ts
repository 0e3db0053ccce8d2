import { readFileSync } from "node:fs";

// The golden vectors in common/testdata/signing-vectors.json, bytes decoded, for the tests on
// each side that must produce or accept exactly them.

export interface EnvelopeVector {
  about: string;
  payloadType: string;
  payload: Uint8Array;
  pae: Uint8Array;
  signature: Uint8Array;
}

export interface SigningVectors {
  seed: Uint8Array;
  publicKey: Uint8Array;
  keyId: string;
  fingerprint: string;
  keySetRevision: bigint;
  envelopes: { command: EnvelopeVector; keySet: EnvelopeVector; agentConfig: EnvelopeVector };
  refused: { publicKey: Uint8Array; payloadType: string; payload: Uint8Array; signature: Uint8Array }[];
}

type Json = { [key: string]: string | Json | Json[] };

const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const envelope = (v: Json): EnvelopeVector => ({
  about: v.about as string,
  payloadType: v.payloadType as string,
  payload: bytes(v.payload as string),
  pae: bytes(v.pae as string),
  signature: bytes(v.signature as string),
});

export function signingVectors(): SigningVectors {
  const v = JSON.parse(readFileSync(new URL("../../testdata/signing-vectors.json", import.meta.url), "utf8")) as Json;
  const envelopes = v.envelopes as Json;
  return {
    seed: bytes(v.seed as string),
    publicKey: bytes(v.publicKey as string),
    keyId: v.keyId as string,
    fingerprint: v.fingerprint as string,
    keySetRevision: BigInt(v.keySetRevision as string),
    envelopes: { command: envelope(envelopes.command as Json), keySet: envelope(envelopes.keySet as Json), agentConfig: envelope(envelopes.agentConfig as Json) },
    refused: (v.refused as Json[]).map((r) => ({
      publicKey: bytes(r.publicKey as string),
      payloadType: r.payloadType as string,
      payload: bytes(r.payload as string),
      signature: bytes(r.signature as string),
    })),
  };
}

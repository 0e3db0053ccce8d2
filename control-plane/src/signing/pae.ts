// DSSE pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
// Signing PAE(type, bytes) instead of the bytes alone means a signature over one message
// type can never be replayed as another.
const encoder = new TextEncoder();

export function pae(type: string, body: Uint8Array): Uint8Array {
  const typeBytes = encoder.encode(type);
  const head = encoder.encode(`DSSEv1 ${typeBytes.length} ${type} ${body.length} `);
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

export const COMMAND_TYPE = "redflag.v1.Command";
export const RENEW_PAYLOAD_TYPE = "redflag.v1.RenewPayload";
export const MANIFEST_TYPE = "redflag.v1.ArtifactManifest";
export const KEY_SET_TYPE = "redflag.v1.TrustedKeySet";
export const AGENT_CONFIG_TYPE = "redflag.v1.AgentConfig";
export const REGISTER_PROOF_TYPE = "redflag.v1.RegisterProof";

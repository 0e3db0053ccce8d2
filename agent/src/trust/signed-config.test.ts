import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type AgentConfig, AgentConfigSchema, type SignedAgentConfig, SignedAgentConfigSchema } from "@redflag/gen/common_pb";
import { describe, expect, it } from "vitest";
import { AGENT_CONFIG_TYPE, COMMAND_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "./envelope.ts";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { openSignedConfig } from "./signed-config.ts";

const key = generateKeyPair();
const keyId = keyIdOf(key.publicKey);
const pins = new Map([[keyId, key.publicKey]]);
const agentId = "2f1c7a52-8a8e-4d43-9a3b-0c2f7a1b9e10";
const now = new Date("2026-12-05T12:00:00Z");
const at = (offsetMs: number): Timestamp => timestampFromDate(new Date(now.getTime() + offsetMs));

const withHold = (issueTime: Timestamp, revision = 2n, id = agentId): AgentConfig =>
  create(AgentConfigSchema, {
    revision,
    pollIntervalSeconds: 60,
    holds: [{ source: "apt", name: "openssl", reason: "pinned for the audit" }],
    agentId: id,
    issueTime,
  });

function sign(config: AgentConfig, opts: { type?: string; secretKey?: Uint8Array; keyId?: string } = {}): SignedAgentConfig {
  const bytes = toBinary(AgentConfigSchema, config);
  return create(SignedAgentConfigSchema, {
    config: bytes,
    signature: signEnvelope(opts.secretKey ?? key.secretKey, opts.type ?? AGENT_CONFIG_TYPE, bytes),
    keyId: opts.keyId ?? keyId,
  });
}

// What the agent applies now: revision 1, issued a minute ago, with the hold on openssl.
const applied = withHold(at(-60_000), 1n);
const ctx = { agentId, current: applied, now };

describe("openSignedConfig", () => {
  it("accepts a config signed by a pinned key for this agent, issued after the one applied", () => {
    const check = openSignedConfig(sign(withHold(at(-1000))), pins, ctx);
    expect(check).toMatchObject({ ok: true, unchanged: false, config: { revision: 2n, agentId, holds: [{ name: "openssl" }] } });
  });

  it("refuses a config whose holds a man in the middle removed, keeping the signature", () => {
    const signed = sign(withHold(at(-1000)));
    const stripped = fromBinary(AgentConfigSchema, signed.config);
    stripped.holds = [];
    signed.config = toBinary(AgentConfigSchema, stripped);
    expect(openSignedConfig(signed, pins, ctx)).toEqual({ ok: false, reason: `signature does not verify with pinned key ${keyId}` });
  });

  it("refuses a config signed by a key it never pinned, under that key's ID or a pinned one's", () => {
    const stranger = generateKeyPair();
    const config = withHold(at(-1000));
    expect(openSignedConfig(sign(config, { secretKey: stranger.secretKey, keyId: keyIdOf(stranger.publicKey) }), pins, ctx)).toEqual({
      ok: false,
      reason: `unknown signing key ${keyIdOf(stranger.publicKey)}`,
    });
    expect(openSignedConfig(sign(config, { secretKey: stranger.secretKey }), pins, ctx)).toEqual({
      ok: false,
      reason: `signature does not verify with pinned key ${keyId}`,
    });
  });

  it("refuses a signature made for another message type over the same bytes", () => {
    expect(openSignedConfig(sign(withHold(at(-1000)), { type: COMMAND_TYPE }), pins, ctx).ok).toBe(false);
  });

  it("refuses a config signed for another agent", () => {
    const other = "7d0e2b4c-1f3a-4c5d-8e9f-a0b1c2d3e4f5";
    expect(openSignedConfig(sign(withHold(at(-1000), 2n, other)), pins, ctx)).toEqual({
      ok: false,
      reason: `config is for agent ${other}, not this one`,
    });
    expect(openSignedConfig(sign(withHold(at(-1000), 2n, "")), pins, ctx)).toMatchObject({ ok: false, reason: 'config is for agent "", not this one' });
  });

  it("refuses a replayed config issued before the one applied, or at the same time", () => {
    const older = sign(create(AgentConfigSchema, { revision: 9n, agentId, issueTime: at(-120_000) }));
    expect(openSignedConfig(older, pins, ctx)).toEqual({
      ok: false,
      reason:
        "config revision 9 issued at 2026-12-05T11:58:00.000Z is not newer than the one applied (revision 1, issued at 2026-12-05T11:59:00.000Z)",
    });
    expect(openSignedConfig(sign(create(AgentConfigSchema, { revision: 9n, agentId, issueTime: at(-60_000) })), pins, ctx).ok).toBe(false);
    // The config applied now, sent again: nothing to apply, nothing to refuse.
    expect(openSignedConfig(sign(applied), pins, ctx)).toEqual({ ok: true, config: applied, unchanged: true });
    // A microsecond later is later: reads on one control plane are ordered that finely.
    const later = { ...at(-60_000) };
    later.nanos += 1000;
    expect(openSignedConfig(sign(create(AgentConfigSchema, { revision: 9n, agentId, issueTime: later })), pins, ctx).ok).toBe(true);
  });

  it("refuses a config from the future beyond the clock skew a command may have, or with no issue time", () => {
    expect(openSignedConfig(sign(withHold(at(59_000))), pins, ctx).ok).toBe(true);
    expect(openSignedConfig(sign(withHold(at(61_000))), pins, ctx)).toEqual({
      ok: false,
      reason: "config issued in the future at 2026-12-05T12:01:01.000Z; check this host's clock",
    });
    const undated = create(AgentConfigSchema, { revision: 2n, agentId });
    expect(openSignedConfig(sign(undated), pins, ctx)).toEqual({ ok: false, reason: "config has no valid issue time" });
  });

  it("takes any verified config over one saved before configs were signed", () => {
    const legacy = create(AgentConfigSchema, { revision: 1n, pollIntervalSeconds: 60 });
    expect(openSignedConfig(sign(withHold(at(-3_600_000))), pins, { ...ctx, current: legacy }).ok).toBe(true);
    expect(openSignedConfig(sign(withHold(at(-3_600_000))), pins, { ...ctx, current: undefined }).ok).toBe(true);
  });

  it("refuses bytes that verify but are not an AgentConfig", () => {
    const bytes = new Uint8Array([0x0a, 0xff]);
    const signed = create(SignedAgentConfigSchema, { config: bytes, signature: signEnvelope(key.secretKey, AGENT_CONFIG_TYPE, bytes), keyId });
    expect(openSignedConfig(signed, pins, ctx)).toEqual({ ok: false, reason: "signed bytes are not a redflag.v1.AgentConfig" });
  });
});

describe("openSignedConfig under mutation", () => {
  // Seeded, so a failure can be replayed: bit flips, truncations, insertions and swapped key IDs.
  it("never accepts and never throws on any change to the bytes, the signature or the key ID", () => {
    let seed = 0x13_07;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fff_ffff;
      return seed % n;
    };
    const genuine = sign(withHold(at(-1000)));
    expect(openSignedConfig(genuine, pins, ctx).ok).toBe(true);
    const mutate = (bytes: Uint8Array): Uint8Array => {
      const out = [...bytes];
      switch (random(3)) {
        case 0:
          out[random(out.length)]! ^= 1 << random(8);
          break;
        case 1:
          out.length = random(out.length);
          break;
        default:
          out.splice(random(out.length + 1), 0, random(256));
      }
      return new Uint8Array(out);
    };
    for (let i = 0; i < 300; i++) {
      const which = random(3);
      const signed = create(SignedAgentConfigSchema, {
        config: which === 0 ? mutate(genuine.config) : genuine.config,
        signature: which === 1 ? mutate(genuine.signature) : genuine.signature,
        keyId: which === 2 ? Buffer.from(mutate(Buffer.from(genuine.keyId))).toString("latin1") : genuine.keyId,
      });
      const check = openSignedConfig(signed, pins, ctx);
      expect(check.ok, `mutation ${i}`).toBe(false);
    }
  });
});

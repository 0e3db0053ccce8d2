import { fromBinary } from "@bufbuild/protobuf";
import { CommandSchema } from "@redflag/gen/command_pb";
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { fingerprint, generateKeyPair, keyIdOf, seal, sign, unseal, verify } from "./keys.ts";
import { COMMAND_TYPE, pae, RENEW_PAYLOAD_TYPE } from "./pae.ts";
import { createCommandSigner } from "./signer.ts";
import { randomBytes } from "node:crypto";

const text = (s: string) => new TextEncoder().encode(s);

describe("PAE", () => {
  it("matches the DSSE test vector", () => {
    expect(Buffer.from(pae("http://example.com/HelloWorld", text("hello world"))).toString()).toBe(
      "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
    );
  });

  it("counts bytes, not characters, and separates types", () => {
    expect(Buffer.from(pae("t", text("é"))).toString()).toBe("DSSEv1 1 t 2 é");
    const body = text("same bytes");
    const key = generateKeyPair();
    const sig = sign(key.secretKey, pae(COMMAND_TYPE, body));
    expect(verify(key.publicKey, pae(COMMAND_TYPE, body), sig)).toBe(true);
    expect(verify(key.publicKey, pae(RENEW_PAYLOAD_TYPE, body), sig)).toBe(false);
  });
});

describe("keys", () => {
  it("derive a 16-hex key ID and a colon fingerprint from the public key", () => {
    const key = generateKeyPair();
    expect(key.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyIdOf(key.publicKey)).toBe(key.keyId);
    expect(fingerprint(key.publicKey)).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
  });

  it("reject malformed keys and signatures instead of throwing", () => {
    const key = generateKeyPair();
    expect(verify(new Uint8Array(31), text("x"), new Uint8Array(64))).toBe(false);
    expect(verify(key.publicKey, text("x"), new Uint8Array(10))).toBe(false);
    expect(verify(new Uint8Array(32).fill(255), text("x"), new Uint8Array(64))).toBe(false);
  });

  it("seal secrets so only the same master key and purpose open them", () => {
    const master = randomBytes(32);
    const sealed = seal(master, "redflag.secret.a", text("secret"));
    expect(Buffer.from(unseal(master, "redflag.secret.a", sealed)).toString()).toBe("secret");
    expect(() => unseal(randomBytes(32), "redflag.secret.a", sealed)).toThrow(/master key/);
    expect(() => unseal(master, "redflag.secret.b", sealed)).toThrow(/master key/);
  });
});

describe("command signer", () => {
  it("signs header + stored action as one Command the agent can verify and decode", () => {
    const key = generateKeyPair();
    const signer = createCommandSigner(key, [key]);
    const action = toBinary(
      CommandSchema,
      create(CommandSchema, { action: { case: "scanUpdates", value: { subsystems: ["apt"] } }, timeoutSeconds: 90 }),
    );
    const nonce = new Uint8Array(randomBytes(16));
    const signed = signer.signCommand(
      { id: "c1", agentId: "a1", sequence: 7n, issueTime: new Date(1000), expireTime: new Date(601_000), nonce },
      action,
    );
    expect(signed.keyId).toBe(key.keyId);
    expect(verify(key.publicKey, pae(COMMAND_TYPE, signed.command), signed.signature)).toBe(true);
    const command = fromBinary(CommandSchema, signed.command);
    expect(command).toMatchObject({ id: "c1", agentId: "a1", sequence: 7n, timeoutSeconds: 90 });
    expect(command.action).toMatchObject({ case: "scanUpdates", value: { subsystems: ["apt"] } });
    const tampered = signed.command.slice();
    tampered[3]! ^= 1;
    expect(verify(key.publicKey, pae(COMMAND_TYPE, tampered), signed.signature)).toBe(false);
    expect(signer.trustedKeys()).toEqual([expect.objectContaining({ keyId: key.keyId })]);
  });
});

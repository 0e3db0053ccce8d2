import { create } from "@bufbuild/protobuf";
import { TrustedKeySchema } from "@redflag/gen/common_pb";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPair, keyIdOf } from "../envelope.ts";
import { StateError } from "./files.ts";
import { computeMachineId, loadOrCreateAgentKey, machineIdOfThisHost } from "./identity.ts";
import { loadPinnedKeys, savePinnedKeys } from "./registration.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
const tempDir = async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "redflag-agent-identity-"));
  dirs.push(dir);
  return dir;
};

describe("machine ID", () => {
  const machineId = "3d1219c7c4c5404aaa1f6d2a48adfda4";

  it("is 64 lowercase hex characters, stable, and not the bare hash of /etc/machine-id", () => {
    const id = computeMachineId({ machineId });
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(computeMachineId({ machineId })).toBe(id);
    expect(id).not.toBe(createHash("sha256").update(machineId).digest("hex"));
    expect(id).not.toBe(createHash("sha256").update(`${machineId}\n`).digest("hex"));
  });

  it("changes with the hardware UUID and with the seed", () => {
    const base = computeMachineId({ machineId });
    const withUuid = computeMachineId({ machineId, productUuid: "4c4c4544-0038-3010-8052-b4c04f4a4e32" });
    const seeded = computeMachineId({ machineId, seed: "agent-2" });
    expect(new Set([base, withUuid, seeded]).size).toBe(3);
    expect(computeMachineId({ machineId, seed: "agent-3" })).not.toBe(seeded);
  });

  it("keeps the identifiers apart (no ambiguity between fields)", () => {
    expect(computeMachineId({ machineId: "ab", seed: "c" })).not.toBe(computeMachineId({ machineId: "a", seed: "bc" }));
    expect(computeMachineId({ seed: "x" })).not.toBe(computeMachineId({ machineId: "x" }));
  });

  it("fails clearly when the host has no identifier at all", () => {
    expect(() => computeMachineId({})).toThrow(/REDFLAG_AGENT_MACHINE_ID_SEED/);
  });

  it("reads this host's identifiers", async () => {
    const id = await machineIdOfThisHost(undefined);
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(await machineIdOfThisHost("seed")).not.toBe(id);
  });
});

describe("agent key", () => {
  it("is created once, 0600, and reused", async () => {
    const dir = await tempDir();
    const first = await loadOrCreateAgentKey(dir);
    expect(first.publicKey).toHaveLength(32);
    expect((await stat(path.join(dir, "agent.key"))).mode & 0o777).toBe(0o600);
    const again = await loadOrCreateAgentKey(dir);
    expect(Buffer.from(again.publicKey).equals(Buffer.from(first.publicKey))).toBe(true);
    expect(await readFile(path.join(dir, "agent.key"), "utf8")).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
  });
});

describe("pinned keys", () => {
  it("pins keys whose ID matches their public key", async () => {
    const dir = await tempDir();
    const key = generateKeyPair();
    await savePinnedKeys(dir, [create(TrustedKeySchema, { keyId: keyIdOf(key.publicKey), publicKey: key.publicKey })]);
    const pins = await loadPinnedKeys(dir);
    expect([...pins.keys()]).toEqual([keyIdOf(key.publicKey)]);
    expect((await stat(path.join(dir, "pinned-keys.json"))).mode & 0o777).toBe(0o600);
  });

  it("refuses a key presented under another key's ID, and an empty set", async () => {
    const dir = await tempDir();
    const [a, b] = [generateKeyPair(), generateKeyPair()];
    const impostor = create(TrustedKeySchema, { keyId: keyIdOf(a.publicKey), publicKey: b.publicKey });
    await expect(savePinnedKeys(dir, [impostor])).rejects.toThrow(StateError);
    await expect(savePinnedKeys(dir, [])).rejects.toThrow(/no command-signing keys/);
  });
});

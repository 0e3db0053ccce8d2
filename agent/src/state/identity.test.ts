import { create } from "@bufbuild/protobuf";
import { TrustedKeySchema } from "@redflag/gen/common_pb";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generateKeyPair } from "../trust/envelope.ts";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import { StateError } from "./files.ts";
import { fakeHost, type FakeHost } from "../../test/support/fake-host.ts";
import { CRYPTOGRAPHY_KEY, FAKE_REG, IOREG_PLATFORM, printsRecorded, REG_MACHINE_GUID, regOutput } from "../../test/support/recorded-host-tools.ts";
import { computeMachineId, loadOrCreateAgentKey, machineIdOfThisHost, parseMachineGuid, parsePlatformUuid } from "./identity.ts";
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

describe("machine ID on Linux", () => {
  it("is the same as before Windows and macOS were added, from /etc/machine-id and product_uuid", async () => {
    const files = { "/etc/machine-id": "3d1219c7c4c5404aaa1f6d2a48adfda4\n", "/sys/class/dmi/id/product_uuid": "4C4C4544-0038-3010-8052-B4C04F4A4E32\n" };
    const host = await fakeHost({ platform: "linux", files });
    hosts.push(host);
    // The hash a Linux agent registered with before this change (kept, so no agent has to re-register).
    const expected = createHash("sha256")
      .update("redflag.v1.machine-id\nmachine-id=3d1219c7c4c5404aaa1f6d2a48adfda4\nproduct-uuid=4c4c4544-0038-3010-8052-b4c04f4a4e32\n")
      .digest("hex");
    expect(await machineIdOfThisHost(undefined, host)).toBe(expected);
  });

  it("falls back to D-Bus's machine-id, and names what it tried when there is none", async () => {
    const dbus = await fakeHost({ platform: "linux", files: { "/var/lib/dbus/machine-id": "3d1219c7c4c5404aaa1f6d2a48adfda4\n" } });
    const none = await fakeHost({ platform: "linux" });
    hosts.push(dbus, none);
    expect(await machineIdOfThisHost(undefined, dbus)).toBe(computeMachineId({ machineId: "3d1219c7c4c5404aaa1f6d2a48adfda4" }));
    await expect(machineIdOfThisHost(undefined, none)).rejects.toThrow(
      "cannot identify this host: neither /etc/machine-id nor /var/lib/dbus/machine-id is readable; create one (systemd-machine-id-setup) or set REDFLAG_AGENT_MACHINE_ID_SEED",
    );
  });
});

const hosts: FakeHost[] = [];
afterEach(async () => {
  for (const host of hosts.splice(0)) await host.remove();
});

describe("machine ID on Windows", () => {
  const windows = async (outputs: Record<string, string> = { [regOutput(CRYPTOGRAPHY_KEY, "MachineGuid")]: REG_MACHINE_GUID }) => {
    const host = await fakeHost({ platform: "win32", systemRoot: "D:\\WINDOWS", tools: { "D:\\WINDOWS\\System32\\reg.exe": FAKE_REG }, outputs });
    hosts.push(host);
    return host;
  };

  it("hashes the MachineGuid, read with reg.exe from %SystemRoot%\\System32 (never from PATH), 64-bit view", async () => {
    const host = await windows();
    const id = await machineIdOfThisHost(undefined, host);
    expect(id).toBe(computeMachineId({ machineGuid: "6c9f2e8a-41b7-4d3e-9a55-0f3b2c7d18e4" }));
    expect(id).not.toBe(computeMachineId({ machineId: "6c9f2e8a-41b7-4d3e-9a55-0f3b2c7d18e4" }));
    expect(await machineIdOfThisHost("agent-2", host)).not.toBe(id);
    expect(host.runs[0]).toEqual(["D:\\WINDOWS\\System32\\reg.exe", "query", CRYPTOGRAPHY_KEY, "/v", "MachineGuid", "/reg:64"]);
  });

  it("fails with what it tried and why when the value is missing, reg.exe fails or prints something else", async () => {
    await expect(machineIdOfThisHost("seed", await windows({}))).rejects.toThrow(
      "cannot identify this host: the MachineGuid in HKLM\\SOFTWARE\\Microsoft\\Cryptography could not be read " +
        "(D:\\WINDOWS\\System32\\reg.exe failed (exit status 1): ERROR: The system was unable to find the specified registry key or value.)",
    );
    const denied = await windows();
    await denied.tools.write("reg.denied", "");
    await expect(machineIdOfThisHost(undefined, denied)).rejects.toThrow(/could not be read \(.*reg\.exe failed \(exit status 1\): ERROR: Access is denied\.\)$/);
    const garbled = await windows({ [regOutput(CRYPTOGRAPHY_KEY, "MachineGuid")]: "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography\r\n    MachineGuid    REG_SZ    not-a-guid\r\n" });
    await expect(machineIdOfThisHost(undefined, garbled)).rejects.toThrow(/could not be read \(D:\\WINDOWS\\System32\\reg\.exe printed no MachineGuid\)/);
  });

  it("fails clearly when reg.exe is not there at all", async () => {
    const host = await fakeHost({ platform: "win32" });
    hosts.push(host);
    await expect(machineIdOfThisHost(undefined, host)).rejects.toThrow(/MachineGuid .* could not be read \(C:\\Windows\\System32\\reg\.exe could not start: .*ENOENT/);
  });

  it("reads the GUID only from a MachineGuid REG_SZ line", () => {
    expect(parseMachineGuid(REG_MACHINE_GUID)).toBe("6c9f2e8a-41b7-4d3e-9a55-0f3b2c7d18e4");
    expect(parseMachineGuid("    MachineGuidX    REG_SZ    6C9F2E8A-41B7-4D3E-9A55-0F3B2C7D18E4")).toBeUndefined();
    expect(parseMachineGuid("")).toBeUndefined();
  });
});

describe("machine ID on macOS", () => {
  const mac = async (output?: string) => {
    const host = await fakeHost({ platform: "darwin", tools: { "/usr/sbin/ioreg": printsRecorded("ioreg") }, outputs: output === undefined ? {} : { "ioreg.out": output } });
    hosts.push(host);
    return host;
  };

  it("hashes the IOPlatformUUID from /usr/sbin/ioreg, and nothing else it prints", async () => {
    const host = await mac(IOREG_PLATFORM);
    expect(await machineIdOfThisHost(undefined, host)).toBe(computeMachineId({ platformUuid: "5a0e1c2b-3d4f-4a6b-8c8d-9e0f1a2b3c4d" }));
    expect(host.runs).toEqual([["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]]);
    expect(parsePlatformUuid(IOREG_PLATFORM.replace("IOPlatformUUID", "IOPlatformSerialNumberX"))).toBeUndefined();
  });

  it("fails with what it tried when ioreg is missing, fails or prints no UUID", async () => {
    await expect(machineIdOfThisHost(undefined, await fakeHost({ platform: "darwin" }).then((h) => (hosts.push(h), h)))).rejects.toThrow(
      /^cannot identify this host: the IOPlatformUUID of the IOPlatformExpertDevice could not be read \(\/usr\/sbin\/ioreg could not start: .*ENOENT/,
    );
    const failing = await mac("");
    await failing.tools.write("ioreg.fail", "ioreg: IOServiceGetMatchingServices failed");
    await expect(machineIdOfThisHost(undefined, failing)).rejects.toThrow(/\(\/usr\/sbin\/ioreg failed \(exit status 1\): ioreg: IOServiceGetMatchingServices failed\)$/);
    await expect(machineIdOfThisHost(undefined, await mac('"IOPlatformUUID" = "garbled"\n'))).rejects.toThrow(/\(\/usr\/sbin\/ioreg printed no IOPlatformUUID\)$/);
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

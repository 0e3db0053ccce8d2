import { createHash } from "node:crypto";
import path from "node:path";
import { createHostAccess, system32, toolOutput, type HostAccess } from "../platform.ts";
import { generateKeyPair, keyPairFromSecret, type KeyPair } from "../trust/envelope.ts";
import { readIfExists, StateError, writeFileAtomic } from "./files.ts";

export interface HostIdentifiers {
  // Linux: /etc/machine-id and the DMI product UUID.
  machineId?: string | undefined;
  productUuid?: string | undefined;
  // Windows: HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid.
  machineGuid?: string | undefined;
  // macOS: the IOPlatformUUID of the IOPlatformExpertDevice.
  platformUuid?: string | undefined;
  seed?: string | undefined;
}

const MACHINE_ID_FILES = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
const PRODUCT_UUID_FILE = "/sys/class/dmi/id/product_uuid";
const CRYPTOGRAPHY_KEY = "HKLM\\SOFTWARE\\Microsoft\\Cryptography";
const IOREG = "/usr/sbin/ioreg";
const LINUX_TRIED = `neither ${MACHINE_ID_FILES.join(" nor ")} is readable; create one (systemd-machine-id-setup)`;

// SHA-256 over the host identifiers, each labelled and the whole prefixed with a domain string,
// so the result is never the bare machine-id (which other software treats as confidential) and
// cannot collide with a hash made for another purpose. A Linux host's labels and order are the
// ones the agent has always used, so its ID does not change.
export function computeMachineId(ids: HostIdentifiers, tried = LINUX_TRIED): string {
  const parts: string[] = [];
  if (ids.machineId) parts.push(`machine-id=${ids.machineId}`);
  if (ids.productUuid) parts.push(`product-uuid=${ids.productUuid}`);
  if (ids.machineGuid) parts.push(`machine-guid=${ids.machineGuid}`);
  if (ids.platformUuid) parts.push(`platform-uuid=${ids.platformUuid}`);
  if (ids.seed) parts.push(`seed=${ids.seed}`);
  if (parts.length === 0) throw new StateError(`cannot identify this host: ${tried} or set REDFLAG_AGENT_MACHINE_ID_SEED`);
  return createHash("sha256").update(`redflag.v1.machine-id\n${parts.join("\n")}\n`).digest("hex");
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// `reg.exe query HKLM\SOFTWARE\Microsoft\Cryptography /v MachineGuid` prints the key, then
// "    MachineGuid    REG_SZ    <guid>".
export function parseMachineGuid(stdout: string): string | undefined {
  const match = /^\s+MachineGuid\s+REG_SZ\s+(\S+)\s*$/m.exec(stdout);
  const guid = match?.[1]!.toLowerCase();
  return guid && GUID.test(guid) ? guid : undefined;
}

// `ioreg -rd1 -c IOPlatformExpertDevice` prints the device's properties, among them
// `"IOPlatformUUID" = "<uuid>"`.
export function parsePlatformUuid(stdout: string): string | undefined {
  const match = /^\s*"IOPlatformUUID" = "([^"]*)"\s*$/m.exec(stdout);
  const uuid = match?.[1]!.toLowerCase();
  return uuid && GUID.test(uuid) ? uuid : undefined;
}

export interface HostIdentity {
  ids: HostIdentifiers;
  // What was tried on this OS, for the error when nothing identifies the host.
  tried: string;
}

// Windows and macOS always have their identifier; failing to read it is an error, never a
// reason to register (or present) another machine ID. On Linux, product_uuid is usually readable
// by root only; the agent is meant to run as root, so the ID includes it when the hardware has one.
export async function readHostIdentifiers(seed: string | undefined, host: HostAccess = createHostAccess({})): Promise<HostIdentity> {
  if (host.platform === "win32") {
    const reg = system32(host, "reg.exe");
    const out = await toolOutput(host, [reg, "query", CRYPTOGRAPHY_KEY, "/v", "MachineGuid", "/reg:64"]);
    const machineGuid = "stdout" in out ? parseMachineGuid(out.stdout) : undefined;
    if (!machineGuid) {
      const why = "error" in out ? out.error : `${reg} printed no MachineGuid`;
      throw new StateError(`cannot identify this host: the MachineGuid in ${CRYPTOGRAPHY_KEY} could not be read (${why})`);
    }
    return { ids: { machineGuid, seed }, tried: `the MachineGuid in ${CRYPTOGRAPHY_KEY}` };
  }
  if (host.platform === "darwin") {
    const out = await toolOutput(host, [IOREG, "-rd1", "-c", "IOPlatformExpertDevice"]);
    const platformUuid = "stdout" in out ? parsePlatformUuid(out.stdout) : undefined;
    if (!platformUuid) {
      const why = "error" in out ? out.error : `${IOREG} printed no IOPlatformUUID`;
      throw new StateError(`cannot identify this host: the IOPlatformUUID of the IOPlatformExpertDevice could not be read (${why})`);
    }
    return { ids: { platformUuid, seed }, tried: "the IOPlatformUUID" };
  }
  let machineId: string | undefined;
  for (const file of MACHINE_ID_FILES) {
    machineId = trimmed(await host.readText(file));
    if (machineId) break;
  }
  return { ids: { machineId, productUuid: trimmed(await host.readText(PRODUCT_UUID_FILE)), seed }, tried: LINUX_TRIED };
}

export async function machineIdOfThisHost(seed: string | undefined, host?: HostAccess): Promise<string> {
  const { ids, tried } = await readHostIdentifiers(seed, host);
  return computeMachineId(ids, tried);
}

const trimmed = (text: string | undefined) => text?.trim().toLowerCase() || undefined;

const KEY_FILE = "agent.key";

export async function loadAgentKey(stateDir: string): Promise<KeyPair | undefined> {
  const file = path.join(stateDir, KEY_FILE);
  const text = await readIfExists(file);
  if (!text) return undefined;
  const secret = Buffer.from(text.toString("utf8").trim(), "base64");
  if (secret.length !== 32) throw new StateError(`${file} does not hold a 32-byte Ed25519 key`);
  return keyPairFromSecret(new Uint8Array(secret));
}

// The agent's own key is made once, at first registration, and kept across re-registrations.
export async function loadOrCreateAgentKey(stateDir: string): Promise<KeyPair> {
  const existing = await loadAgentKey(stateDir);
  if (existing) return existing;
  const key = generateKeyPair();
  await writeFileAtomic(path.join(stateDir, KEY_FILE), Buffer.from(key.secretKey).toString("base64") + "\n");
  return key;
}

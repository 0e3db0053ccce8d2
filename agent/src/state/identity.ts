import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { generateKeyPair, keyPairFromSecret, type KeyPair } from "../envelope.ts";
import { readIfExists, StateError, writeFileAtomic } from "./files.ts";

export interface HostIdentifiers {
  machineId?: string | undefined;
  productUuid?: string | undefined;
  seed?: string | undefined;
}

const MACHINE_ID_FILES = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
const PRODUCT_UUID_FILE = "/sys/class/dmi/id/product_uuid";

// SHA-256 over the host identifiers, each labelled and the whole prefixed with a domain string,
// so the result is never the bare machine-id (which other software treats as confidential) and
// cannot collide with a hash made for another purpose.
export function computeMachineId(ids: HostIdentifiers): string {
  const parts: string[] = [];
  if (ids.machineId) parts.push(`machine-id=${ids.machineId}`);
  if (ids.productUuid) parts.push(`product-uuid=${ids.productUuid}`);
  if (ids.seed) parts.push(`seed=${ids.seed}`);
  if (parts.length === 0) {
    throw new StateError(
      `cannot identify this host: neither ${MACHINE_ID_FILES.join(" nor ")} is readable; ` +
        "create one (systemd-machine-id-setup) or set REDFLAG_AGENT_MACHINE_ID_SEED",
    );
  }
  return createHash("sha256").update(`redflag.v1.machine-id\n${parts.join("\n")}\n`).digest("hex");
}

// product_uuid is usually readable by root only; the agent is meant to run as root, so the ID
// it registers with includes it when the hardware provides one.
export async function readHostIdentifiers(seed: string | undefined): Promise<HostIdentifiers> {
  let machineId: string | undefined;
  for (const file of MACHINE_ID_FILES) {
    machineId = await readTrimmed(file);
    if (machineId) break;
  }
  return { machineId, productUuid: await readTrimmed(PRODUCT_UUID_FILE), seed };
}

export async function machineIdOfThisHost(seed: string | undefined): Promise<string> {
  return computeMachineId(await readHostIdentifiers(seed));
}

async function readTrimmed(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, "utf8")).trim().toLowerCase() || undefined;
  } catch {
    return undefined;
  }
}

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

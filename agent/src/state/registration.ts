import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { type AgentConfig, AgentConfigSchema, type TrustedKey } from "@redflag/gen/common_pb";
import path from "node:path";
import { keyIdOf } from "@redflag/common/signing/key-ids";
import type { PinnedKeys } from "../trust/envelope.ts";
import { NO_KEY_SET_STATE, type KeySetState } from "../trust/key-set.ts";
import { createSerialWriter, readIfExists, StateError, writeFileAtomic } from "./files.ts";

// What the agent knows about its enrolment: where the control plane is, who the agent is, and
// its credentials. Everything here is secret (mode 0600).
export interface Registration {
  readonly serverUrl: string;
  readonly caFile: string | undefined;
  readonly agentId: string;
  // Kept so the agent can enrol again on its own when its credentials are revoked or lost;
  // empty when it was installed by an install script, which keeps no token on disk.
  readonly registrationToken: string;
  readonly accessToken: string;
  // Local clock when the access token arrived; with the expiry it gives the token's lifetime.
  readonly accessTokenIssueTime: Date;
  readonly accessTokenExpireTime: Date;
  readonly refreshToken: string;
  readonly agentConfig: AgentConfig | undefined;
  readonly registerTime: Date;
}

const REGISTRATION_FILE = "agent.json";
const PINNED_KEYS_FILE = "pinned-keys.json";

export interface RegistrationFile {
  load(): Promise<Registration | undefined>;
  save(registration: Registration): Promise<void>;
}

export function registrationFile(stateDir: string): RegistrationFile {
  const file = path.join(stateDir, REGISTRATION_FILE);
  const write = createSerialWriter(file);
  return {
    async load() {
      const data = await readIfExists(file);
      return data ? parseRegistration(file, data) : undefined;
    },
    save: (registration) => write(JSON.stringify(serialiseRegistration(registration), null, 2) + "\n"),
  };
}

function serialiseRegistration(r: Registration) {
  return {
    version: 1,
    serverUrl: r.serverUrl,
    caFile: r.caFile ?? null,
    agentId: r.agentId,
    registrationToken: r.registrationToken,
    accessToken: r.accessToken,
    accessTokenIssueTime: r.accessTokenIssueTime.toISOString(),
    accessTokenExpireTime: r.accessTokenExpireTime.toISOString(),
    refreshToken: r.refreshToken,
    agentConfig: r.agentConfig ? Buffer.from(toBinary(AgentConfigSchema, r.agentConfig)).toString("base64") : null,
    registerTime: r.registerTime.toISOString(),
  };
}

function parseRegistration(file: string, data: Buffer): Registration {
  const damaged = (why: string) => new StateError(`${file} is damaged (${why}); run \`redflag-agent register\` again`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
  } catch {
    throw damaged("not JSON");
  }
  const text = (key: string): string => {
    const value = raw[key];
    if (typeof value !== "string" || value === "") throw damaged(`${key} is missing`);
    return value;
  };
  const date = (key: string): Date => {
    const value = new Date(text(key));
    if (Number.isNaN(value.getTime())) throw damaged(`${key} is not a time`);
    return value;
  };
  let agentConfig: AgentConfig | undefined;
  if (typeof raw.agentConfig === "string") {
    try {
      agentConfig = fromBinary(AgentConfigSchema, Buffer.from(raw.agentConfig, "base64"));
    } catch {
      throw damaged("agentConfig is not a serialized AgentConfig");
    }
  }
  return {
    serverUrl: text("serverUrl"),
    caFile: typeof raw.caFile === "string" ? raw.caFile : undefined,
    agentId: text("agentId"),
    registrationToken: typeof raw.registrationToken === "string" ? raw.registrationToken : "",
    accessToken: text("accessToken"),
    accessTokenIssueTime: date("accessTokenIssueTime"),
    accessTokenExpireTime: date("accessTokenExpireTime"),
    refreshToken: text("refreshToken"),
    agentConfig,
    registerTime: date("registerTime"),
  };
}

// Command-signing keys pinned at registration, with what the agent knows about the key set they
// came in (its issue time and revision, and the keys dropped since), in one file written at
// once. Each key ID must be the one its public key gives, so a key can never be pinned under
// another key's name.
export async function savePinnedKeys(stateDir: string, keys: readonly TrustedKey[], state: KeySetState = NO_KEY_SET_STATE): Promise<void> {
  if (keys.length === 0) throw new StateError("the control plane sent no command-signing keys to pin");
  for (const key of keys) {
    if (key.publicKey.length !== 32) throw new StateError(`trusted key ${key.keyId} is not a 32-byte Ed25519 key`);
    if (keyIdOf(key.publicKey) !== key.keyId) {
      throw new StateError(`trusted key ${key.keyId} does not match its public key (expected ID ${keyIdOf(key.publicKey)})`);
    }
  }
  const body = keys.map((k) => ({ keyId: k.keyId, publicKey: Buffer.from(k.publicKey).toString("base64") }));
  const keySet = state.issueTime ? { issueTime: state.issueTime.toISOString(), revision: (state.revision ?? 0n).toString() } : undefined;
  const file = { version: 1, keys: body, ...(keySet ? { keySet } : {}), retiredKeyIds: state.retiredKeyIds };
  await writeFileAtomic(path.join(stateDir, PINNED_KEYS_FILE), JSON.stringify(file, null, 2) + "\n");
}

// The key-set state beside the pins; a file from an agent that did not keep it yet has none,
// and then the next signed set is accepted on its signature alone.
export async function loadKeySetState(stateDir: string): Promise<KeySetState> {
  const file = path.join(stateDir, PINNED_KEYS_FILE);
  const data = await readIfExists(file);
  if (!data) return NO_KEY_SET_STATE;
  try {
    const raw = JSON.parse(data.toString("utf8")) as { keySet?: { issueTime?: unknown; revision?: unknown }; retiredKeyIds?: unknown };
    let issueTime: Date | undefined;
    let revision: bigint | undefined;
    if (raw.keySet !== undefined) {
      if (typeof raw.keySet.issueTime !== "string" || typeof raw.keySet.revision !== "string") throw new Error("keySet is incomplete");
      issueTime = new Date(raw.keySet.issueTime);
      if (Number.isNaN(issueTime.getTime())) throw new Error("keySet.issueTime is not a time");
      revision = BigInt(raw.keySet.revision);
    }
    const retired = raw.retiredKeyIds ?? [];
    if (!Array.isArray(retired) || !retired.every((id) => typeof id === "string")) throw new Error("retiredKeyIds is not a list of key IDs");
    return { issueTime, revision, retiredKeyIds: retired as string[] };
  } catch (err) {
    throw new StateError(`${file} is damaged (${(err as Error).message}); run \`redflag-agent register\` again`);
  }
}

export async function loadPinnedKeys(stateDir: string): Promise<PinnedKeys> {
  const file = path.join(stateDir, PINNED_KEYS_FILE);
  const data = await readIfExists(file);
  const pins = new Map<string, Uint8Array>();
  if (!data) return pins;
  try {
    const raw = JSON.parse(data.toString("utf8")) as { keys: { keyId: string; publicKey: string }[] };
    for (const { keyId, publicKey } of raw.keys) {
      const bytes = new Uint8Array(Buffer.from(publicKey, "base64"));
      if (bytes.length !== 32 || keyIdOf(bytes) !== keyId) throw new Error(`key ${keyId} does not match its ID`);
      pins.set(keyId, bytes);
    }
  } catch (err) {
    throw new StateError(`${file} is damaged (${(err as Error).message}); run \`redflag-agent register\` again`);
  }
  return pins;
}

// Keys as pins, as sent (savePinnedKeys checks each ID against its key before anything is kept).
export function pinsOf(keys: readonly TrustedKey[]): PinnedKeys {
  return new Map(keys.map((k) => [k.keyId, k.publicKey]));
}

export function samePins(pins: PinnedKeys, keys: readonly TrustedKey[]): boolean {
  return pins.size === keys.length && keys.every((k) => pins.has(k.keyId));
}

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import type { RegisterResponse } from "@redflag/gen/agent_service_pb";
import type { AgentConfig } from "@redflag/gen/common_pb";
import { createAgentApi, createAgentTransport, parseServerUrl, type AgentApi } from "./client.ts";
import type { KeyPair } from "./envelope.ts";
import { AgentError, describeError, EXIT_USAGE } from "./errors.ts";
import { collectOsInfo, hostname } from "./host.ts";
import { silentLogger, type Logger } from "./log.ts";
import { ensurePrivateDir, removeStaleTempFiles, StateError } from "./state/files.ts";
import { loadOrCreateAgentKey, machineIdOfThisHost } from "./state/identity.ts";
import { resetJournal } from "./state/journal.ts";
import { acquireLock } from "./state/lock.ts";
import { openSignedConfig } from "./signed-config.ts";
import { pinsOf, registrationFile, savePinnedKeys, type Registration } from "./state/registration.ts";
import { AGENT_VERSION } from "./version.ts";

export interface RegisterOptions {
  stateDir: string;
  serverUrl: string;
  token: string;
  caFile?: string | undefined;
  machineIdSeed?: string | undefined;
  logger?: Logger;
  // Replaces the network transport (tests drive an in-memory control plane).
  transport?: Transport;
  signal?: AbortSignal;
}

export interface RegisterOutcome {
  agentId: string;
  machineId: string;
  pinnedKeyIds: string[];
  // SHA-256 of each pinned public key, colon-separated hex: what the console's setup and
  // Security pages show, so an operator can compare them.
  pinnedKeyFingerprints: string[];
  // Set when this state directory belonged to another agent ID before.
  previousAgentId: string | undefined;
}

// Sends Register with this host's identity. Shared by `register` and automatic re-registration.
export async function enrol(
  api: AgentApi,
  input: { token: string; machineId: string; key: KeyPair },
  signal?: AbortSignal,
): Promise<RegisterResponse> {
  return api.register(
    {
      registrationToken: input.token,
      hostname: hostname(),
      machineId: input.machineId,
      agentPublicKey: input.key.publicKey,
      os: await collectOsInfo(),
      agentVersion: AGENT_VERSION,
    },
    signal,
  );
}

// `agentConfig` is the answer's config once verified (see openSignedConfig), never its raw bytes.
export function registrationFromResponse(
  res: RegisterResponse,
  base: { serverUrl: string; caFile: string | undefined; token: string },
  now: Date,
  agentConfig: AgentConfig | undefined,
): Registration {
  if (!res.agentId || !res.accessToken || !res.refreshToken || !res.accessTokenExpireTime) {
    throw new Error("the control plane's Register answer is missing the agent ID or credentials");
  }
  return {
    serverUrl: base.serverUrl,
    caFile: base.caFile,
    agentId: res.agentId,
    registrationToken: base.token,
    accessToken: res.accessToken,
    accessTokenIssueTime: now,
    accessTokenExpireTime: timestampDate(res.accessTokenExpireTime),
    refreshToken: res.refreshToken,
    agentConfig,
    registerTime: now,
  };
}

// `redflag-agent register`: an operator's explicit enrolment, so the signing keys the control
// plane sends are pinned (replacing any pinned before).
export async function registerAgent(opts: RegisterOptions): Promise<RegisterOutcome> {
  const logger = opts.logger ?? silentLogger;
  let serverUrl: string;
  try {
    serverUrl = parseServerUrl(opts.serverUrl).toString().replace(/\/$/, "");
  } catch (err) {
    throw new AgentError((err as Error).message, EXIT_USAGE);
  }
  if (!opts.token) throw new AgentError("a registration token is required (--token)", EXIT_USAGE);

  await ensurePrivateDir(opts.stateDir);
  // Never under a running agent: it would keep using the credentials this replaces.
  let lock;
  try {
    lock = await acquireLock(opts.stateDir);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(`${err.message}; stop it before registering again`, EXIT_USAGE, { cause: err });
    throw err;
  }
  try {
    return await enrolAndSave(opts, serverUrl, logger);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(err.message, EXIT_USAGE, { cause: err });
    throw err;
  } finally {
    await lock.release();
  }
}

async function enrolAndSave(opts: RegisterOptions, serverUrl: string, logger: Logger): Promise<RegisterOutcome> {
  await removeStaleTempFiles(opts.stateDir);
  const machineId = await machineIdOfThisHost(opts.machineIdSeed);
  // Written before the call, so a crash right after the server registered us keeps the key it knows.
  const key = await loadOrCreateAgentKey(opts.stateDir);
  const file = registrationFile(opts.stateDir);
  const previous = await file.load().catch(() => undefined);

  const own = opts.transport ? undefined : await createAgentTransport(serverUrl, opts.caFile);
  const api = createAgentApi(opts.transport ?? own!.transport);
  let res: RegisterResponse;
  try {
    res = await enrol(api, { token: opts.token, machineId, key }, opts.signal);
  } catch (err) {
    throw new AgentError(`registration with ${serverUrl} failed: ${describeError(err)}`, undefined, { cause: err });
  } finally {
    own?.close();
  }
  // Verified with the keys this answer makes us pin; nothing applied before counts, as the pins
  // themselves are replaced. A control plane that sends no config leaves the defaults until a poll.
  const config = res.signedConfig
    ? openSignedConfig(res.signedConfig, pinsOf(res.trustedKeys), { agentId: res.agentId, current: undefined, now: new Date() })
    : undefined;
  if (config && !config.ok) throw new AgentError(`registration refused: the agent config in the control plane's answer is not valid (${config.reason})`);
  const registration = registrationFromResponse(res, { serverUrl, caFile: opts.caFile, token: opts.token }, new Date(), config?.config);
  try {
    await savePinnedKeys(opts.stateDir, res.trustedKeys);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(`registration refused: ${err.message}`, undefined, { cause: err });
    throw err;
  }
  // Sequence numbers and results belong to one agent ID: a new one starts from zero.
  if (previous?.agentId !== registration.agentId) await resetJournal(opts.stateDir);
  await file.save(registration);
  logger.info(
    { agentId: registration.agentId, server: serverUrl, pinnedKeyIds: res.trustedKeys.map((k) => k.keyId) },
    previous ? "agent registered again" : "agent registered",
  );
  return {
    agentId: registration.agentId,
    machineId,
    pinnedKeyIds: res.trustedKeys.map((k) => k.keyId),
    pinnedKeyFingerprints: res.trustedKeys.map((k) => createHash("sha256").update(k.publicKey).digest("hex").match(/../g)!.join(":")),
    previousAgentId: previous && previous.agentId !== registration.agentId ? previous.agentId : undefined,
  };
}

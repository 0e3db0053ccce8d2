import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { RegisterProofSchema, type RegisterResponse } from "@redflag/gen/agent_service_pb";
import type { AgentConfig } from "@redflag/gen/common_pb";
import { createAgentApi, createAgentTransport, isLoopbackUrl, parseServerUrl, type AgentApi } from "./client.ts";
import { REGISTER_PROOF_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import type { KeyPair } from "./trust/envelope.ts";
import { AgentError, describeError, EXIT_USAGE } from "./errors.ts";
import { collectOsInfo, hostname } from "./host.ts";
import { silentLogger, type Logger } from "./log.ts";
import type { HostAccess } from "./platform.ts";
import { ensurePrivateDir, removeStaleTempFiles, StateError } from "./state/files.ts";
import { loadOrCreateAgentKey, machineIdOfThisHost } from "./state/identity.ts";
import { resetJournal } from "./state/journal.ts";
import { acquireLock } from "./state/lock.ts";
import { openSignedConfig } from "./trust/signed-config.ts";
import { pinsOf, registrationFile, savePinnedKeys, type Registration } from "./state/registration.ts";
import { AGENT_VERSION } from "./version.ts";
import { checkRegisterKeySet, parseFingerprint } from "./trust/key-set.ts";
import { fingerprintOf } from "@redflag/common/signing/key-ids";

export interface RegisterOptions {
  stateDir: string;
  serverUrl: string;
  token: string;
  caFile?: string | undefined;
  // The SHA-256 fingerprint of a signing key the operator expects (from the console or
  // `redflag tokens create`); the keys are pinned only when a set signed by that key vouches
  // for them.
  fingerprint?: string | undefined;
  // Plain http:// to a host other than this one (refused without it).
  insecureHttp?: boolean | undefined;
  machineIdSeed?: string | undefined;
  // false: the token is used once and not saved (the install scripts: no token left on disk).
  // The agent then cannot register again on its own when its credentials are lost.
  keepToken?: boolean | undefined;
  // How the agent reads this host (its platform, system tools); this host when not given.
  host?: HostAccess | undefined;
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
  // Whether the keys were pinned on the word of the key the operator's --fingerprint named.
  fingerprintChecked: boolean;
  // Set when this state directory belonged to another agent ID before.
  previousAgentId: string | undefined;
}

// A RegisterProof signed by the agent's key: a control plane that already knows this machine
// lets the registration replace the agent only with it (the signature by the key on record
// shows this is that agent, not another host that learnt the machine ID).
export function registerProof(input: { machineId: string; key: KeyPair }, now: Date): { proof: Uint8Array; proofSignature: Uint8Array } {
  const proof = toBinary(
    RegisterProofSchema,
    create(RegisterProofSchema, { machineId: input.machineId, agentPublicKey: input.key.publicKey, signTime: timestampFromDate(now) }),
  );
  return { proof, proofSignature: signEnvelope(input.key.secretKey, REGISTER_PROOF_TYPE, proof) };
}

// Sends Register with this host's identity and a fresh proof of its key. Shared by `register`
// and automatic re-registration.
export async function enrol(
  api: AgentApi,
  input: { token: string; machineId: string; key: KeyPair; host?: HostAccess | undefined },
  signal?: AbortSignal,
): Promise<RegisterResponse> {
  return api.register(
    {
      registrationToken: input.token,
      hostname: hostname(),
      machineId: input.machineId,
      agentPublicKey: input.key.publicKey,
      os: await collectOsInfo(input.host),
      agentVersion: AGENT_VERSION,
      ...registerProof(input, new Date()),
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
// plane sends are pinned (replacing any pinned before), checked against --fingerprint when given.
export async function registerAgent(opts: RegisterOptions): Promise<RegisterOutcome> {
  const logger = opts.logger ?? silentLogger;
  let url: URL;
  let fingerprint: string | undefined;
  try {
    url = parseServerUrl(opts.serverUrl);
    fingerprint = opts.fingerprint === undefined ? undefined : parseFingerprint(opts.fingerprint);
  } catch (err) {
    throw new AgentError((err as Error).message, EXIT_USAGE);
  }
  const serverUrl = url.toString().replace(/\/$/, "");
  if (url.protocol === "http:" && !isLoopbackUrl(url)) {
    if (!opts.insecureHttp) {
      throw new AgentError(
        `refusing plain http:// to ${url.host}: on the way a man in the middle could read the registration token and hand this agent signing keys of its own. ` +
          "Use https:// (with --ca for a private CA), or, on a network you trust, pass --insecure-http together with --fingerprint",
        EXIT_USAGE,
      );
    }
    if (!fingerprint) {
      throw new AgentError(
        "--insecure-http needs --fingerprint: over plain http only the signing-key fingerprint keeps a man in the middle from pinning keys of its own " +
          "(the console's Security page and `redflag tokens create` show it)",
        EXIT_USAGE,
      );
    }
  }
  if (!opts.token) throw new AgentError("a registration token is required (--token)", EXIT_USAGE);

  await ensurePrivateDir(opts.stateDir, opts.host);
  // Never under a running agent: it would keep using the credentials this replaces.
  let lock;
  try {
    lock = await acquireLock(opts.stateDir);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(`${err.message}; stop it before registering again`, EXIT_USAGE, { cause: err });
    throw err;
  }
  try {
    return await enrolAndSave(opts, serverUrl, fingerprint, logger);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(err.message, EXIT_USAGE, { cause: err });
    throw err;
  } finally {
    await lock.release();
  }
}

async function enrolAndSave(opts: RegisterOptions, serverUrl: string, fingerprint: string | undefined, logger: Logger): Promise<RegisterOutcome> {
  await removeStaleTempFiles(opts.stateDir);
  const machineId = await machineIdOfThisHost(opts.machineIdSeed, opts.host);
  // Written before the call, so a crash right after the server registered us keeps the key it knows.
  const key = await loadOrCreateAgentKey(opts.stateDir);
  const file = registrationFile(opts.stateDir);
  const previous = await file.load().catch(() => undefined);

  const own = opts.transport ? undefined : await createAgentTransport(serverUrl, opts.caFile);
  const api = createAgentApi(opts.transport ?? own!.transport);
  let res: RegisterResponse;
  try {
    res = await enrol(api, { token: opts.token, machineId, key, host: opts.host }, opts.signal);
  } catch (err) {
    throw new AgentError(`registration with ${serverUrl} failed: ${describeError(err)}`, undefined, { cause: err });
  } finally {
    own?.close();
  }
  // Nothing is saved unless the keys pass: the state directory keeps what it trusted before.
  const keys = checkRegisterKeySet(res, fingerprint);
  if (!keys.ok) throw new AgentError(`registration refused: ${keys.reason}`);
  // Verified with the keys this answer makes us pin; nothing applied before counts, as the pins
  // themselves are replaced. A control plane that sends no config leaves the defaults until a poll.
  const config = res.signedConfig
    ? openSignedConfig(res.signedConfig, pinsOf(keys.keys), { agentId: res.agentId, current: undefined, now: new Date() })
    : undefined;
  if (config && !config.ok) throw new AgentError(`registration refused: the agent config in the control plane's answer is not valid (${config.reason})`);
  const registration = registrationFromResponse(res, { serverUrl, caFile: opts.caFile, token: opts.keepToken === false ? "" : opts.token }, new Date(), config?.config);
  try {
    await savePinnedKeys(opts.stateDir, keys.keys, keys.state);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(`registration refused: ${err.message}`, undefined, { cause: err });
    throw err;
  }
  // Sequence numbers and results belong to one agent ID: a new one starts from zero.
  if (previous?.agentId !== registration.agentId) await resetJournal(opts.stateDir);
  await file.save(registration);
  logger.info(
    { agentId: registration.agentId, server: serverUrl, pinnedKeyIds: keys.keys.map((k) => k.keyId), fingerprintChecked: keys.fingerprintChecked },
    previous ? "agent registered again" : "agent registered",
  );
  return {
    agentId: registration.agentId,
    machineId,
    pinnedKeyIds: keys.keys.map((k) => k.keyId),
    pinnedKeyFingerprints: keys.keys.map((k) => fingerprintOf(k.publicKey)),
    fingerprintChecked: keys.fingerprintChecked,
    previousAgentId: previous && previous.agentId !== registration.agentId ? previous.agentId : undefined,
  };
}

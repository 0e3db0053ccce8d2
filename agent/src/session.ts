import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { RenewPayloadSchema } from "@redflag/gen/agent_service_pb";
import type { AgentConfig } from "@redflag/gen/common_pb";
import type { AgentApi, Credentials } from "./client.ts";
import { RENEW_PAYLOAD_TYPE, signEnvelope } from "@redflag/common/signing/envelope";
import type { KeyPair, PinnedKeys } from "./trust/envelope.ts";
import { connectCode, CredentialsLostError, describeError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { enrol, registrationFromResponse } from "./register.ts";
import { openSignedConfig } from "./trust/signed-config.ts";
import type { Journal } from "./state/journal.ts";
import { samePins, type Registration, type RegistrationFile } from "./state/registration.ts";

// Renew once this share of the access token's life has passed …
const RENEW_AT_FRACTION = 0.8;
// … or when less than this is left (enough for a long poll plus its margin), unless the token's
// whole life is that short: then the fraction alone decides, or every call would renew.
const MIN_REMAINING_MS = 90_000;
// A Renew whose answer never came is sent again byte for byte within this time: the control plane
// answers the identical signed request again (for up to REDFLAG_RENEW_RETRY_WINDOW, 60 s by
// default) instead of taking it for a copied refresh token. Later, a new one is signed.
const RENEW_RESEND_MS = 45_000;

export interface SessionDeps {
  api: AgentApi;
  file: RegistrationFile;
  registration: Registration;
  journal: Journal;
  pins: PinnedKeys;
  key: KeyPair;
  machineId: string;
  logger: Logger;
  now?: () => Date;
}

export interface Session {
  readonly registration: Registration;
  // Runs an authenticated call. When the control plane answers Unauthenticated, the session
  // renews (or re-registers) once and tries again.
  call<T>(fn: (creds: Credentials) => Promise<T>, signal?: AbortSignal): Promise<T>;
  saveAgentConfig(config: AgentConfig): Promise<void>;
}

export function renewDue(r: Registration, now: Date): boolean {
  const issued = r.accessTokenIssueTime.getTime();
  const expires = r.accessTokenExpireTime.getTime();
  const life = expires - issued;
  const remaining = expires - now.getTime();
  return now.getTime() >= issued + life * RENEW_AT_FRACTION || remaining < Math.min(MIN_REMAINING_MS, life / 2);
}

export function createSession(deps: SessionDeps): Session {
  const { api, file, logger } = deps;
  const now = deps.now ?? (() => new Date());
  let registration = deps.registration;
  // Set while a changed registration is not yet on disk. Credentials are never used before they
  // are saved: a rotated refresh token that only lives in memory would be lost by a crash.
  let unsaved = false;
  let recovering: Promise<void> | undefined;
  // The last Renew sent without an answer, kept to send the very same bytes again while fresh.
  let unanswered: { refreshToken: string; payload: Uint8Array; signature: Uint8Array; signedAt: number } | undefined;

  const update = async (next: Registration) => {
    registration = next;
    unsaved = true;
    await file.save(next);
    unsaved = false;
  };

  const renew = async (signal?: AbortSignal) => {
    const at = now().getTime();
    let request = unanswered;
    if (!request || request.refreshToken !== registration.refreshToken || Math.abs(at - request.signedAt) >= RENEW_RESEND_MS) {
      const payload = toBinary(
        RenewPayloadSchema,
        create(RenewPayloadSchema, {
          agentId: registration.agentId,
          refreshToken: registration.refreshToken,
          machineId: deps.machineId,
          signTime: timestampFromDate(new Date(at)),
        }),
      );
      const signature = signEnvelope(deps.key.secretKey, RENEW_PAYLOAD_TYPE, payload);
      request = unanswered = { refreshToken: registration.refreshToken, payload, signature, signedAt: at };
    }
    // Sending the same request again is harmless whatever became of the first one: if it was
    // never processed, it is processed now.
    const res = await api.renew({ payload: request.payload, signature: request.signature }, signal);
    unanswered = undefined;
    if (!res.accessToken || !res.refreshToken || !res.accessTokenExpireTime) {
      throw new Error("the control plane's Renew answer is missing credentials");
    }
    // The old refresh token is spent now: save the new one before anything else.
    await update({
      ...registration,
      accessToken: res.accessToken,
      refreshToken: res.refreshToken,
      accessTokenIssueTime: now(),
      accessTokenExpireTime: timestampDate(res.accessTokenExpireTime),
    });
    logger.info({ agentId: registration.agentId, expires: registration.accessTokenExpireTime }, "access token renewed");
  };

  const reregister = async (signal?: AbortSignal) => {
    if (!registration.registrationToken) {
      throw new CredentialsLostError(
        "the agent's credentials were refused, and it keeps no registration token to register again with (the install script leaves none on disk); " +
          `stop the agent's service and run \`redflag-agent register --server ${registration.serverUrl} --token <new token> --fingerprint <fingerprint>\` ` +
          "(it keeps this host's key and agent ID), then start the service again",
      );
    }
    let res;
    try {
      res = await enrol(api, { token: registration.registrationToken, machineId: deps.machineId, key: deps.key }, signal);
    } catch (err) {
      throw new CredentialsLostError(
        `the agent's credentials were refused and registering again failed (${describeError(err)}); ` +
          "the agent keeps retrying, or run `redflag-agent register` with a new token",
        { cause: err },
      );
    }
    // The answer's config is checked like a polled one, against the keys already pinned.
    const config = res.signedConfig
      ? openSignedConfig(res.signedConfig, deps.pins, { agentId: res.agentId, current: registration.agentConfig, now: now() })
      : undefined;
    if (config && !config.ok) logger.warn({ reason: config.reason }, "agent config refused; keeping the last verified config");
    const next = registrationFromResponse(
      res,
      { serverUrl: registration.serverUrl, caFile: registration.caFile, token: registration.registrationToken },
      now(),
      config?.ok ? config.config : undefined,
    );
    if (next.agentId !== registration.agentId) {
      logger.warn({ previousAgentId: registration.agentId, agentId: next.agentId }, "the control plane enrolled this host as a new agent");
      await deps.journal.reset();
    }
    // Automatic re-registration never changes which keys are trusted: only an operator's
    // explicit `register` does.
    if (!samePins(deps.pins, res.trustedKeys)) {
      logger.error(
        { offeredKeyIds: res.trustedKeys.map((k) => k.keyId), pinnedKeyIds: [...deps.pins.keys()] },
        "the control plane signs with keys this agent has not pinned; run `redflag-agent register` to trust them",
      );
    }
    await update({ ...next, agentConfig: next.agentConfig ?? registration.agentConfig });
    logger.info({ agentId: next.agentId }, "agent registered again with its registration token");
  };

  const recover = (signal?: AbortSignal): Promise<void> => {
    recovering ??= (async () => {
      try {
        await renew(signal);
      } catch (err) {
        if (connectCode(err) !== Code.Unauthenticated) throw err;
        logger.warn({ agentId: registration.agentId, reason: describeError(err) }, "renew refused; registering again");
        await reregister(signal);
      }
    })().finally(() => {
      recovering = undefined;
    });
    return recovering;
  };

  const credentials = async (signal?: AbortSignal): Promise<Credentials> => {
    if (unsaved) await update(registration);
    if (renewDue(registration, now())) await recover(signal);
    return { accessToken: registration.accessToken, machineId: deps.machineId };
  };

  return {
    get registration() {
      return registration;
    },
    async call(fn, signal) {
      const first = await credentials(signal);
      try {
        return await fn(first);
      } catch (err) {
        if (connectCode(err) !== Code.Unauthenticated) throw err;
        logger.info({ reason: describeError(err) }, "access token refused; renewing");
        // Another call may already have replaced the token this one used.
        if (registration.accessToken === first.accessToken) await recover(signal);
        return fn(await credentials(signal));
      }
    },
    async saveAgentConfig(config) {
      await update({ ...registration, agentConfig: config });
    },
  };
}

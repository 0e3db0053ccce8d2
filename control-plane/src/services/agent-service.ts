import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  AgentService,
  type PollCommandsRequest,
  type RegisterRequest,
  type ReportResultsRequest,
  RegisterProofSchema,
  RenewPayloadSchema,
  type ScanReport,
  type RenewRequest,
  type ScanPart,
} from "@redflag/gen/agent_service_pb";
import {
  CommandOutcome,
  type CommandResult,
  CommandResultSchema,
  type InstallResult,
  type PackageUpdate,
  PackageResultState,
  type ScanUpdatesResult,
  StorageMetricsSchema,
  SubsystemRunState,
  SystemMetricsSchema,
  UpdateSeverity,
} from "@redflag/gen/command_pb";
import { AgentStatusSchema, OsFamily } from "@redflag/gen/common_pb";
import { createHmac, randomBytes } from "node:crypto";
import type { AgentRegistry } from "../auth/agent-registry.ts";
import type { AgentTokens } from "../auth/agent-tokens.ts";
import { kAgent, kRemoteAddr } from "../auth/context.ts";
import { createRateLimiter, type RateLimiter } from "../auth/rate-limit.ts";
import type { Config } from "../config.ts";
import { isMachineId, sha256 } from "../ids.ts";
import type { LastSeenBuffer } from "../cluster/last-seen.ts";
import type { Metrics } from "../metrics.ts";
import type { Logger } from "../log.ts";
import { isUsablePublicKey, REGISTER_PROOF_TYPE, RENEW_PAYLOAD_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import type { CommandSigner } from "../signing/signer.ts";
import { getAgentAuthState, registerAgent, rotateRefreshToken, type NewRefreshToken, type RegisterProofInput } from "../store/agents.ts";
import {
  claimCommands,
  recordResults,
  recordScanReports,
  unclaimCommands,
  type IncomingResult,
  type IncomingScan,
  type MetricsInput,
  type PackageEventInput,
  type PackageUpdateInput,
  type ScanInput,
} from "../store/commands.ts";
import { MAX_SCAN_PARTS, stagePart, type IncomingPart } from "../store/scans.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import type { Statements } from "../store/statements.ts";
import { createAdmission, type Admission } from "../auth/admission.ts";
import type { Wakeups } from "../cluster/wakeups.ts";
import type { PendingIndex } from "../cluster/pending.ts";
import type { AgentConfigs } from "../domain/agent-config.ts";
import type { EventBus } from "../cluster/events.ts";
import { redeliveryWindow, type Settings } from "../settings.ts";
import { isReleaseVersion } from "../domain/releases.ts";
import { refusalAsRpcError } from "../domain/refusals.ts";
import { int64, invalid, text, time, uuid } from "./validate.ts";

export interface AgentServiceDeps {
  config: Config;
  db: Prisma;
  // The gate for Register and Renew; default ENROLMENT_ADMISSION (tests pass a smaller one).
  enrolment?: Admission;
  // The poll path's prepared statements.
  sql: Statements;
  tokens: AgentTokens;
  agents: AgentRegistry;
  signer: CommandSigner;
  wakeups: Wakeups;
  // Which agents may have queued commands: an idle poll skips the claim query.
  pending: PendingIndex;
  lastSeen: LastSeenBuffer;
  agentConfigs: AgentConfigs;
  events: EventBus;
  settings: Settings;
  logger: Logger;
  // Derives the refresh token a Renew hands out from the signed request (see renew).
  renewSecret: Uint8Array;
  // Counts deliveries, recorded results and claims; optional for tests that build the service alone.
  metrics?: Pick<Metrics, "delivered" | "resultsRecorded" | "claim">;
}

const MAX_COMMANDS_PER_POLL = 100;
// Register and Renew in flight, waiting, and how long one may wait (auth/admission.ts). 16 keeps
// the database pool (10 on PostgreSQL) busy without a queue in front of it; 1,000 waiting at
// about 500 a second drain in 2 s, well inside an agent's 30 s deadline.
export const ENROLMENT_ADMISSION = { concurrency: 16, queue: 1000, maxWaitMs: 5000, what: "agents registering and renewing" } as const;
const MAX_RESULTS_PER_REPORT = 500;
const MAX_SCAN_REPORTS = 50;
const MAX_SCAN_PARTS_PER_REPORT = 100;

export function createAgentService(deps: AgentServiceDeps): ServiceImpl<typeof AgentService> {
  const { config, db } = deps;
  const limits = config.rateLimits;
  const registerPerAddress = createRateLimiter(limits.registerPerAddress);
  const registerPerToken = createRateLimiter(limits.registerPerToken);
  const renewPerAddress = createRateLimiter(limits.renewPerAddress);
  const renewPerAgent = createRateLimiter(limits.renewPerAgent);
  // Register and Renew share one gate: after an outage the whole fleet makes them at once.
  const enrolment = deps.enrolment ?? createAdmission(ENROLMENT_ADMISSION);

  // Random at registration; for a Renew, derived from the exact signed payload, so the identical
  // request sent again (its answer was lost) is answered with the same token (store/agents.ts
  // rotateRefreshToken). Only the token's hash is stored either way.
  const newRefreshToken = (now: Date, renewPayload?: Uint8Array): { secret: string; row: NewRefreshToken } => {
    const secret = renewPayload
      ? createHmac("sha256", deps.renewSecret).update("redflag.v1.RenewPayload successor\0").update(renewPayload).digest("base64url")
      : randomBytes(32).toString("base64url");
    return {
      secret,
      row: {
        tokenHash: sha256(secret),
        expiresAt: new Date(now.getTime() + config.refreshTokenSlidingSeconds * 1000),
        absoluteExpiresAt: new Date(now.getTime() + config.refreshTokenAbsoluteSeconds * 1000),
      },
    };
  };

  return {
    async register(req: RegisterRequest, ctx: HandlerContext) {
      const input = validateRegister(req);
      const proof = registerProof(req);
      const tokenHash = sha256(req.registrationToken);

      // An agent below minimum_agent_version registers too (a host reinstalled from an old
      // build must be able to come back to be upgraded): it is marked "upgrade required", and
      // nothing but update_agent may be queued for it (domain/command-privilege.ts).
      // The gate first: a call it turns away spends none of the rate limits' budget, so a herd's
      // retries do not use up its machines' and tokens' allowance before they are served.
      return enrolment.run(async () => {
        rateLimit(registerPerAddress, ctx.values.get(kRemoteAddr), "Register calls from this address");
        rateLimit(registerPerToken, tokenHash.toString("base64"), "registrations with this registration token");
        const now = new Date();
        const refresh = newRefreshToken(now);
        const agent = await registerAgent(db, deps.sql, {
          ...input,
          registrationTokenHash: tokenHash,
          refresh: refresh.row,
          now,
          remoteAddr: ctx.values.get(kRemoteAddr),
          proof,
          maxProofSkewMs: config.renewMaxSkewSeconds * 1000,
        }).catch(refusalAsRpcError);
        deps.agents.invalidate(agent.id);
        const access = await deps.tokens.issue(agent.id, agent.machineId, agent.credentialGeneration, now);
        deps.logger.info(
          { agentId: agent.id, hostname: input.hostname, replaced: agent.replaced, ...(agent.replaced ? { via: agent.via } : {}) },
          agent.replaced ? "agent re-registered" : "agent registered",
        );
        return {
          agentId: agent.id,
          accessToken: access.token,
          refreshToken: refresh.secret,
          accessTokenExpireTime: timestampFromDate(access.expiresAt),
          trustedKeys: deps.signer.trustedKeys(),
          signedConfig: await deps.agentConfigs.signedForAgent(agent.id, deps.signer),
          keySet: deps.signer.keySet(),
        };
      });
    },

    async renew(req: RenewRequest, ctx: HandlerContext) {
      if (req.payload.length === 0 || req.payload.length > 1024) throw invalid("payload must be 1 to 1024 bytes");
      if (req.signature.length !== 64) throw invalid("signature must be 64 bytes (Ed25519)");
      let payload;
      try {
        payload = fromBinary(RenewPayloadSchema, req.payload);
      } catch {
        throw invalid("payload is not a serialized redflag.v1.RenewPayload");
      }
      uuid("payload.agent_id", payload.agentId);
      const signTime = payload.signTime;
      if (!signTime) throw invalid("payload.sign_time is required");
      const remoteAddr = ctx.values.get(kRemoteAddr);
      return enrolment.run(async () => {
        rateLimit(renewPerAddress, remoteAddr, "Renew calls from this address");
        const now = new Date();

        const state = await getAgentAuthState(deps.sql, payload.agentId);
        if (!state) throw new ConnectError("this agent is no longer registered", Code.Unauthenticated);
        if (!verifySignature(state.publicKey, RENEW_PAYLOAD_TYPE, req.payload, req.signature)) {
          await recordSecurityEvent(db, {
            type: "renew_bad_signature",
            severity: "critical",
            message: "a renew request was not signed by the agent's registered key",
            agentId: payload.agentId,
            remoteAddr,
          });
          throw new ConnectError("renew signature does not verify with the agent's key", Code.Unauthenticated);
        }
        if (payload.machineId !== state.machineId) {
          await recordSecurityEvent(db, {
            type: "machine_id_mismatch",
            severity: "critical",
            message: "a renew request named a machine ID other than the registered one",
            agentId: payload.agentId,
            machineId: payload.machineId.slice(0, 64),
            remoteAddr,
          });
          throw new ConnectError("machine ID does not match the registered machine", Code.PermissionDenied);
        }
        if (state.decommissioned) throw new ConnectError("this agent has been decommissioned", Code.PermissionDenied);
        // Counted only once the agent's own key signed the call, so nobody else can use up its budget.
        rateLimit(renewPerAgent, payload.agentId, "Renew calls for this agent");
        // Checked once the signature holds: a tampered payload is refused as such, whatever it says.
        const skewMs = Math.abs(time("payload.sign_time", signTime).getTime() - now.getTime());
        if (skewMs > config.renewMaxSkewSeconds * 1000) {
          throw new ConnectError(
            `renew request was signed ${Math.round(skewMs / 1000)}s away from the server's clock; check the agent's time`,
            Code.Unauthenticated,
          );
        }

        const refresh = newRefreshToken(now, req.payload);
        const rotated = await rotateRefreshToken(db, deps.sql, {
          agentId: payload.agentId,
          machineId: payload.machineId,
          presentedHash: sha256(payload.refreshToken),
          next: refresh.row,
          now,
          remoteAddr,
          retryWindowMs: config.renewRetryWindowSeconds * 1000,
          restoreWindowMs: config.refreshTokenSlidingSeconds * 1000,
        });
        if (!rotated.ok) {
          if (rotated.reuse) {
            // The access tokens already issued stop at once, here and on every other replica.
            deps.agents.invalidate(payload.agentId);
            deps.logger.warn({ agentId: payload.agentId }, "refresh token re-use: credentials revoked");
          }
          throw new ConnectError(rotated.reason, Code.Unauthenticated);
        }
        if (rotated.retried) deps.logger.info({ agentId: payload.agentId }, "renew retried with the identical signed request; answered again");
        const access = await deps.tokens.issue(payload.agentId, state.machineId, rotated.credentialGeneration, now);
        return {
          accessToken: access.token,
          refreshToken: refresh.secret,
          accessTokenExpireTime: timestampFromDate(access.expiresAt),
        };
      });
    },

    async pollCommands(req: PollCommandsRequest, ctx: HandlerContext) {
      const { agentId } = ctx.values.get(kAgent)!;
      if (req.nonce.length < 16 || req.nonce.length > 64) throw invalid("nonce must be 16 to 64 bytes");
      if (req.waitSeconds > 60) throw invalid("wait_seconds must be at most 60");
      if (req.maxCommands > MAX_COMMANDS_PER_POLL) throw invalid(`max_commands must be at most ${MAX_COMMANDS_PER_POLL}`);
      const limit = req.maxCommands || 10;

      // The version is kept only when it is one (it confirms upgrades; it is shown everywhere).
      // A release on trial after an upgrade is not yet the agent's version: the release before
      // it switches back unless the trial completes (the upgrade succeeds on a poll without it).
      const agentVersion = req.status && !req.status.upgradeTrial && isReleaseVersion(req.status.agentVersion) ? req.status.agentVersion : undefined;
      deps.lastSeen.record(agentId, new Date(), req.status ? { bytes: toBinary(AgentStatusSchema, req.status), rebootRequired: req.status.rebootRequired, agentVersion } : null);

      const deadline = Date.now() + req.waitSeconds * 1000;
      // A copy: the decoded bytes are a view into the connection's 64 KiB read buffer, which a
      // held long-poll would otherwise keep alive until it ends.
      const nonce = req.nonce.slice();
      // Marked before each claim: a command queued while the claim runs wakes the wait at once.
      let mark = deps.wakeups.mark();
      let commands = await deliver(deps, agentId, limit, nonce, req.status?.lastSequence ?? 0n);
      while (commands.length === 0 && Date.now() < deadline && !ctx.signal.aborted) {
        const woken = await deps.wakeups.wait(agentId, deadline - Date.now(), ctx.signal, mark);
        if (!woken) break;
        mark = deps.wakeups.mark();
        commands = await deliver(deps, agentId, limit, nonce, req.status?.lastSequence ?? 0n);
      }
      const agentConfig = await deps.agentConfigs.forAgent(agentId);
      // The agent reports the revision of the keys it pins (same derivation as ours): after a
      // rotation it gets the new set, signed by the keys it already trusts.
      const sendKeys = req.status !== undefined && req.status.trustedKeysRevision !== deps.signer.keySetRevision();
      // Signed (once, then cached) only when the agent does not have this config yet.
      const sendConfig = req.status?.configRevision !== agentConfig.revision;
      return {
        keySet: sendKeys ? deps.signer.keySet() : undefined,
        commands,
        signedConfig: sendConfig ? await deps.agentConfigs.signedForAgent(agentId, deps.signer) : undefined,
        nextPollSeconds: agentConfig.pollIntervalSeconds,
      };
    },

    async reportResults(req: ReportResultsRequest, ctx: HandlerContext) {
      const { agentId } = ctx.values.get(kAgent)!;
      // Counted before anything else is looked at: an oversized report costs nothing more.
      checkReportSize(req, config);
      const now = new Date();
      const unique = new Map<string, IncomingResult>();
      req.results.forEach((result, i) => unique.set(result.commandId, toIncoming(result, `results[${i}]`, config)));
      const scans = toScanReports(req.scans, now, config);
      const parts = toScanParts(req.scanParts);
      // Parts first: a result or report in the same call may complete its scan.
      for (const part of parts) await stagePart(db, agentId, part, config.maxScanUpdates).catch(refusalAsRpcError);
      // A call goes through at most as many staged updates as it may carry: applying a bigger
      // scan takes more calls (it is named in incomplete_scans, with no part missing, until done).
      const budget = { rows: config.maxReportUpdates };
      const outcome =
        unique.size > 0
          ? await recordResults(db, deps.sql, agentId, [...unique.values()], now, ctx.values.get(kRemoteAddr), budget).catch(refusalAsRpcError)
          : { acknowledged: [], refused: [], incomplete: [] };
      const reports = scans.length > 0 ? await recordScanReports(db, deps.sql, agentId, scans, budget).catch(refusalAsRpcError) : { acknowledged: [], incomplete: [] };
      deps.events.publish(outcome.acknowledged.map((commandId) => ({ commandId, agentId })));
      deps.metrics?.resultsRecorded(outcome.acknowledged.length);
      return {
        acknowledgedCommandIds: outcome.acknowledged,
        refused: outcome.refused,
        acknowledgedScanIds: reports.acknowledged,
        incompleteScans: [...outcome.incomplete, ...reports.incomplete].map((s) => ({ scanId: s.scanId, missingParts: s.missing })),
      };
    },
  };
}

// Refuses a call over its budget with ResourceExhausted and a retry-after hint (seconds), in the
// message for people and in the `retry-after` metadata for agents.
function rateLimit(limiter: RateLimiter, key: string, what: string) {
  const wait = limiter.take(key);
  if (wait > 0) {
    throw new ConnectError(`too many ${what}; retry after ${wait}s`, Code.ResourceExhausted, { "retry-after": String(wait) });
  }
}

async function deliver(deps: AgentServiceDeps, agentId: string, limit: number, nonce: Uint8Array, agentSequence: bigint) {
  if (!deps.pending.mayHave(agentId)) {
    deps.metrics?.claim("skipped");
    return [];
  }
  const issueTime = new Date();
  const expireTime = new Date(issueTime.getTime() + deps.settings.commandExpirySeconds * 1000);
  const again = redeliveryWindow(deps.settings, issueTime);
  const claimed = await deps.pending.claim(agentId, limit, () => claimCommands(deps.sql, agentId, limit, issueTime, expireTime, again, agentSequence));
  deps.metrics?.claim(claimed.length > 0 ? "delivered" : "empty");
  if (claimed.length === 0) return [];
  try {
    const signed = claimed.map((c) =>
      deps.signer.signCommand({ id: c.id, agentId, sequence: c.sequence, firstSequence: c.firstSequence, issueTime, expireTime, nonce }, c.action),
    );
    const repeated = claimed.filter((c) => c.deliveryCount > 1);
    if (repeated.length > 0) {
      deps.logger.info(
        { agentId, commands: repeated.map((c) => ({ commandId: c.id, delivery: c.deliveryCount, sequence: c.sequence.toString() })) },
        "delivering commands again: no result arrived within the delivery lease",
      );
    }
    deps.events.publish(claimed.map((c) => ({ commandId: c.id, agentId })));
    deps.metrics?.delivered(signed.length);
    return signed;
  } catch (err) {
    await unclaimCommands(deps.db, claimed.map((c) => c.id));
    deps.pending.note(agentId);
    throw err;
  }
}

function validateRegister(req: RegisterRequest) {
  text("registration_token", req.registrationToken, { max: 256, required: true });
  const hostname = text("hostname", req.hostname, { max: 253, required: true });
  if (!isMachineId(req.machineId)) throw invalid("machine_id must be 64 lowercase hex characters (SHA-256)");
  if (req.agentPublicKey.length !== 32) throw invalid("agent_public_key must be a 32-byte Ed25519 public key");
  if (!isUsablePublicKey(req.agentPublicKey)) {
    throw invalid("agent_public_key is not a usable Ed25519 public key (a small-order or non-canonical point): generate a new key pair");
  }
  if (!req.os) throw invalid("os is required");
  if (req.os.family === OsFamily.UNSPECIFIED || !OsFamily[req.os.family]) {
    throw invalid("os.family must be LINUX, WINDOWS or DARWIN");
  }
  const agentVersion = text("agent_version", req.agentVersion, { max: 64, required: true });
  return {
    hostname,
    machineId: req.machineId,
    publicKey: req.agentPublicKey,
    agentVersion,
    os: {
      family: OsFamily[req.os.family]!.toLowerCase(),
      name: text("os.name", req.os.name, { max: 256 }),
      version: text("os.version", req.os.version, { max: 256 }),
      kernel: text("os.kernel", req.os.kernel, { max: 256 }),
      arch: text("os.arch", req.os.arch, { max: 64 }),
    },
  };
}

// The request's RegisterProof, checked against the request it came with; who signed it is
// decided against the key on record (store/agents.ts).
function registerProof(req: RegisterRequest): RegisterProofInput | undefined {
  if (req.proof.length === 0 && req.proofSignature.length === 0) return undefined;
  if (req.proof.length === 0 || req.proof.length > 512) throw invalid("proof must be 1 to 512 bytes (a serialized redflag.v1.RegisterProof)");
  if (req.proofSignature.length !== 64) throw invalid("proof_signature must be 64 bytes (Ed25519)");
  let proof;
  try {
    proof = fromBinary(RegisterProofSchema, req.proof);
  } catch {
    throw invalid("proof is not a serialized redflag.v1.RegisterProof");
  }
  if (proof.machineId !== req.machineId) throw invalid("proof.machine_id must be the request's machine_id");
  if (!Buffer.from(proof.agentPublicKey).equals(Buffer.from(req.agentPublicKey))) throw invalid("proof.agent_public_key must be the request's agent_public_key");
  if (!proof.signTime) throw invalid("proof.sign_time is required");
  const signTime = time("proof.sign_time", proof.signTime);
  return { signTime, signedBy: (publicKey) => verifySignature(publicKey, REGISTER_PROOF_TYPE, req.proof, req.proofSignature) };
}

const OUTCOMES = {
  [CommandOutcome.SUCCEEDED]: "succeeded",
  [CommandOutcome.FAILED]: "failed",
  [CommandOutcome.REJECTED]: "rejected",
} as const;

// The counts of a report, checked before any of it is converted or stored: results, scan
// reports and parts, and the updates and install package results they carry together
// (REDFLAG_MAX_REPORT_UPDATES). A scan too big for one call comes in parts (ScanPart).
function checkReportSize(req: ReportResultsRequest, config: Config) {
  if (req.results.length > MAX_RESULTS_PER_REPORT) throw invalid(`at most ${MAX_RESULTS_PER_REPORT} results per call`);
  if (req.scans.length > MAX_SCAN_REPORTS) throw invalid(`at most ${MAX_SCAN_REPORTS} scan reports per call`);
  if (req.scanParts.length > MAX_SCAN_PARTS_PER_REPORT) throw invalid(`at most ${MAX_SCAN_PARTS_PER_REPORT} scan parts per call`);
  let entries = 0;
  for (const result of req.results) {
    const detail = result.detail;
    if (detail.case === "scanUpdates") entries += detail.value.updates.length;
    else if (detail.case === "installUpdates" || detail.case === "confirmDependencies" || detail.case === "rollbackUpdate") {
      entries += detail.value.packages.length;
    } else if (detail.case === "listPackageVersions") {
      for (const p of detail.value.packages) entries += 1 + p.versions.length;
    }
  }
  for (const scan of req.scans) entries += scan.result?.updates.length ?? 0;
  for (const part of req.scanParts) entries += part.updates.length;
  if (entries > config.maxReportUpdates) {
    throw invalid(
      `this report carries ${entries} updates and package results; at most ${config.maxReportUpdates} per call (send a bigger scan in parts)`,
    );
  }
}

function toIncoming(result: CommandResult, field: string, config: Config): IncomingResult {
  uuid(`${field}.command_id`, result.commandId);
  const outcome = OUTCOMES[result.outcome as keyof typeof OUTCOMES];
  if (!outcome) throw invalid(`${field}.outcome must be SUCCEEDED, FAILED or REJECTED`);
  if (result.message.length > 65_536) throw invalid(`${field}.message is longer than 65536 characters`);
  const scan = result.detail.case === "scanUpdates" ? toScan(result.detail.value, `${field}.scan_updates`, config) : undefined;
  const install =
    result.detail.case === "installUpdates" || result.detail.case === "confirmDependencies" || result.detail.case === "rollbackUpdate"
      ? result.detail.value
      : undefined;
  return {
    commandId: result.commandId,
    outcome,
    message: result.message,
    startedAt: result.startTime ? time(`${field}.start_time`, result.startTime) : null,
    finishedAt: result.finishTime ? time(`${field}.finish_time`, result.finishTime) : null,
    bytes: toBinary(CommandResultSchema, result),
    scan,
    metrics: result.detail.case === "scanUpdates" ? toMetrics(result.detail.value) : undefined,
    packages: install ? packageEvents(install) : [],
  };
}

// The host readings of a scan, serialized for storage; undefined when it made none.
function toMetrics(scan: ScanUpdatesResult): MetricsInput | undefined {
  if (!scan.systemMetrics && !scan.storageMetrics) return undefined;
  return {
    system: scan.systemMetrics ? toBinary(SystemMetricsSchema, scan.systemMetrics) : null,
    storage: scan.storageMetrics ? toBinary(StorageMetricsSchema, scan.storageMetrics) : null,
    rebootRequired: scan.systemMetrics?.rebootRequired,
  };
}

const PACKAGE_EVENTS = { [PackageResultState.INSTALLED]: "installed", [PackageResultState.FAILED]: "failed" } as const;

// Packages installed or failed, for the update history. Install results were accepted before
// this history existed, so over-long fields are cut rather than the whole report refused.
function packageEvents(install: InstallResult): PackageEventInput[] {
  return install.packages.flatMap((p) => {
    const kind = PACKAGE_EVENTS[p.state as keyof typeof PACKAGE_EVENTS];
    if (!kind) return [];
    return [{ kind, source: p.source.slice(0, 64), name: p.name.slice(0, 512), architecture: p.architecture.slice(0, 64), version: (p.toVersion || p.fromVersion).slice(0, 256) }];
  });
}

// The updates of a scan, validated, and the sources whose view they replace. A scan in parts
// carries none itself: they come as ScanParts (toScanParts).
function toScan(scan: ScanUpdatesResult, field: string, config: Config): ScanInput {
  if (scan.updateParts > MAX_SCAN_PARTS) throw invalid(`${field}.update_parts must be at most ${MAX_SCAN_PARTS}`);
  if (scan.updateParts > 0 && scan.updates.length > 0) throw invalid(`${field}.updates must be empty when update_parts is set`);
  if (scan.updates.length > config.maxScanUpdates) {
    throw invalid(`${field} holds ${scan.updates.length} updates; at most ${config.maxScanUpdates} per scan`);
  }
  const updates = toUpdates(scan.updates, `${field}.updates`);
  // Every source that ran, and every source the agent listed updates of: for a scan in parts that
  // is what its subsystems say.
  const ran = scan.subsystems.filter((s) => s.state === SubsystemRunState.RAN).map((s) => s.subsystem.slice(0, 64));
  return { updates, parts: scan.updateParts, sources: [...new Set([...ran, ...updates.map((u) => u.source)])] };
}

function toUpdates(updates: PackageUpdate[], field: string): PackageUpdateInput[] {
  return updates.map((u, i) => {
    const f = `${field}[${i}]`;
    return {
      source: text(`${f}.source`, u.source, { max: 64, required: true }),
      name: text(`${f}.name`, u.name, { max: 512, required: true }),
      architecture: text(`${f}.architecture`, u.architecture, { max: 64 }),
      currentVersion: text(`${f}.current_version`, u.currentVersion, { max: 256 }),
      availableVersion: text(`${f}.available_version`, u.availableVersion, { max: 256, required: true }),
      repository: text(`${f}.repository`, u.repository, { max: 512 }),
      severity: severityName(u.severity),
      security: u.security,
      sizeBytes: int64(`${f}.size_bytes`, u.sizeBytes),
      rebootRequired: u.rebootRequired,
    };
  });
}

// A part repeated in one call counts once.
function toScanParts(parts: ScanPart[]): IncomingPart[] {
  const unique = new Map<string, IncomingPart>();
  parts.forEach((part, i) => {
    const field = `scan_parts[${i}]`;
    uuid(`${field}.scan_id`, part.scanId);
    if (part.partCount < 1 || part.partCount > MAX_SCAN_PARTS) throw invalid(`${field}.part_count must be from 1 to ${MAX_SCAN_PARTS}`);
    if (part.index >= part.partCount) throw invalid(`${field}.index must be below part_count (${part.partCount})`);
    if (part.updates.length === 0) throw invalid(`${field}.updates must not be empty`);
    const key = `${part.scanId}/${part.index}`;
    if (!unique.has(key)) unique.set(key, { scanId: part.scanId, index: part.index, partCount: part.partCount, updates: toUpdates(part.updates, `${field}.updates`) });
  });
  return [...unique.values()];
}

// A scan time this far ahead of the server clock is refused (a wrong clock, not a scan).
const SCAN_TIME_SKEW_MS = 5 * 60_000;

function toScanReports(reports: ScanReport[], now: Date, config: Config): IncomingScan[] {
  const unique = new Map<string, IncomingScan>();
  reports.forEach((report, i) => {
    const field = `scans[${i}]`;
    uuid(`${field}.id`, report.id);
    if (!report.scanTime) throw invalid(`${field}.scan_time is required`);
    const scanTime = time(`${field}.scan_time`, report.scanTime);
    if (scanTime.getTime() > now.getTime() + SCAN_TIME_SKEW_MS) throw invalid(`${field}.scan_time is in the future`);
    if (!report.result) throw invalid(`${field}.result is required`);
    unique.set(report.id, { id: report.id, scanTime, scan: toScan(report.result, `${field}.result`, config), metrics: toMetrics(report.result) });
  });
  return [...unique.values()];
}

function severityName(severity: UpdateSeverity): string {
  return (UpdateSeverity[severity] ?? "UNKNOWN").toLowerCase().replace("unspecified", "unknown");
}

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { ScanReportSchema } from "@redflag/gen/agent_service_pb";
import {
  CommandOutcome,
  type CommandResult,
  CommandSchema,
  PackageResultState,
  ScanUpdatesSchema,
} from "@redflag/gen/command_pb";
import { AgentStatusSchema, AgentUpgradeFailureSchema, PostRebootHookSchema, type SignedAgentConfig, type SignedKeySet } from "@redflag/gen/common_pb";
import { randomBytes, randomUUID } from "node:crypto";
import { createBackoff, jittered, sleep } from "./backoff.ts";
import { createAgentApi, createAgentTransport, type AgentApi } from "./client.ts";
import { processCommands, type ProcessSummary } from "./commands.ts";
import { defaultConfig, type Config } from "./config.ts";
import type { PinnedKeys } from "./trust/envelope.ts";
import { AgentError, classify, describeError, EXIT_USAGE, retryAfterMs } from "./errors.ts";
import { createBreakers } from "./breaker.ts";
import { createSourceLocks } from "./source-lock.ts";
import { createHeartbeat } from "./heartbeat.ts";
import { executeCommand, type ExecutorTable } from "./executors/index.ts";
import { readPostHook, runPendingPostHook } from "./executors/reboot-hooks.ts";
import { createLogger, type Logger } from "./log.ts";
import { createHostAccess, type HostAccess } from "./platform.ts";
import { createSession, type Session } from "./session.ts";
import { ensurePrivateDir, removeStaleTempFiles, StateError } from "./state/files.ts";
import { loadAgentKey, machineIdOfThisHost } from "./state/identity.ts";
import { openJournal, type Journal } from "./state/journal.ts";
import { acquireLock } from "./state/lock.ts";
import { loadKeySetState, loadPinnedKeys, registrationFile, savePinnedKeys } from "./state/registration.ts";
import { advanceKeySetState, checkKeySet } from "./trust/key-set.ts";
import { keySetRevision } from "@redflag/common/signing/key-ids";
import { configIssueTime, openSignedConfig } from "./trust/signed-config.ts";
import { readFailure, writeConfirmation } from "./state/upgrade.ts";
import { openAutoScans, type AutoScans } from "./state/auto-scans.ts";
import { openScanPartStore, type ScanPartStore } from "./state/scan-parts.ts";
import { createReporter } from "./report.ts";
import { mergeScan, scanSummaryFile, type ScanSummary } from "./state/scan-summary.ts";
import { rebootRequired, type RebootState } from "./system.ts";
import { AGENT_VERSION } from "./version.ts";

const REBOOT_CHECK_MS = 60_000;

export interface Timing {
  // Exponential backoff with full jitter after transient failures.
  backoffBaseMs: number;
  backoffCapMs: number;
  // Pause after PermissionDenied or lost credentials: an operator has to act first.
  refusedDelayMs: number;
  // Poll interval until the control plane sends one.
  defaultPollSeconds: number;
  // Limit on the last report when the agent stops.
  finalFlushMs: number;
}

export const defaultTiming: Timing = {
  backoffBaseMs: 1000,
  backoffCapMs: 5 * 60_000,
  refusedDelayMs: 15 * 60_000,
  defaultPollSeconds: 60,
  finalFlushMs: 10_000,
};

export interface RunOptions extends Partial<Omit<Config, "stateDir">> {
  stateDir: string;
  // One cycle (poll without waiting, run, report), then return; failures throw AgentError.
  once?: boolean;
  // Stops the agent gracefully: no new poll, the running command gets stopGraceSeconds.
  signal?: AbortSignal;
  logger?: Logger;
  // Replaces the network transport (tests drive an in-memory or in-process control plane).
  transport?: Transport;
  // Environment of child processes (scanners); the agent's own environment by default.
  env?: NodeJS.ProcessEnv;
  // How the agent reads this host (identity, metrics); made from `env` by default.
  host?: HostAccess;
  executors?: ExecutorTable;
  timing?: Partial<Timing>;
  // This process is a new release on trial (REDFLAG_AGENT_UPGRADE_TRIAL, see upgrade-trial.ts):
  // it confirms after its first complete poll cycle and refuses update_agent.
  upgradeTrial?: boolean;
}

export interface RunSummary extends ProcessSummary {
  cycles: number;
  delivered: number;
  reported: number;
  // Set when a command (update_agent) asked the agent to exit so a new release starts.
  restart?: string | undefined;
}

// Runs the agent from its state directory until `signal` aborts (or for one cycle with `once`).
// Server and network errors never end the long-running mode: it backs off and tries again.
export async function runAgent(options: RunOptions): Promise<RunSummary> {
  try {
    return await run(options);
  } catch (err) {
    if (err instanceof StateError) throw new AgentError(err.message, EXIT_USAGE, { cause: err });
    throw err;
  }
}

async function run(options: RunOptions): Promise<RunSummary> {
  const config = resolveConfig(options);
  const timing: Timing = { ...defaultTiming, ...definedOnly(options.timing ?? {}) };
  const logger = options.logger ?? createLogger(config.logLevel);
  const stop = options.signal ?? new AbortController().signal;

  const file = registrationFile(config.stateDir);
  const notRegistered = () =>
    new AgentError(
      `not registered: ${config.stateDir} holds no registration; run \`redflag-agent register --server URL --token TOKEN\` first`,
      EXIT_USAGE,
    );
  if (!(await file.load())) throw notRegistered();
  const env = options.env ?? process.env;
  const host = options.host ?? createHostAccess(env);
  await ensurePrivateDir(config.stateDir, host);
  const lock = await acquireLock(config.stateDir);
  let closeTransport: (() => void) | undefined;
  try {
    // Read again under the lock: an agent that just stopped may have rotated the credentials.
    const registration = await file.load();
    if (!registration) throw notRegistered();
    await removeStaleTempFiles(config.stateDir);
    const key = await loadAgentKey(config.stateDir);
    if (!key) throw new StateError(`${config.stateDir}/agent.key is missing; run \`redflag-agent register\` again`);
    const pins = await loadPinnedKeys(config.stateDir);
    if (pins.size === 0) throw new StateError("no command-signing keys are pinned; run `redflag-agent register` again");
    const journal = await openJournal(config.stateDir);
    if (journal.recovery && journal.recovery.barrier === undefined) {
      const { damagedFile, reason } = journal.recovery;
      logger.error({ damagedFile, reason }, "the journal was damaged and set aside; commands delivered before now are not run (they are reported as rejected), new ones run as usual");
    }
    const machineId = await machineIdOfThisHost(config.machineIdSeed, host);
    let transport = options.transport;
    if (!transport) {
      const own = await createAgentTransport(registration.serverUrl, config.caFile ?? registration.caFile);
      ({ transport, close: closeTransport } = own);
    }
    const api = createAgentApi(transport);
    const session = createSession({ api, file, registration, journal, pins, key, machineId, logger });
    const scanSummary = scanSummaryFile(config.stateDir);
    const autoScans = await openAutoScans(config.stateDir);
    // Parts of split scans whose result or report is still to be acknowledged; nothing else.
    const scanParts = await openScanPartStore(config.stateDir);
    const splitIds = [
      ...journal.pending().flatMap((r) => (r.detail.case === "scanUpdates" && r.detail.value.updateParts > 0 ? [r.commandId] : [])),
      ...autoScans.pending().flatMap((r) => ((r.result?.updateParts ?? 0) > 0 ? [r.id] : [])),
    ];
    await scanParts.prune(splitIds);
    const agent = createAgent({
      api,
      session,
      journal,
      pins,
      config,
      timing,
      logger,
      stop,
      env,
      host,
      executors: options.executors,
      scanSummary,
      lastScan: await scanSummary.load(),
      autoScans,
      scanParts,
      upgradeTrial: Boolean(options.upgradeTrial),
    });
    logger.info(
      { agentId: registration.agentId, server: registration.serverUrl, version: AGENT_VERSION, once: Boolean(options.once) },
      "agent starting",
    );
    return options.once ? await agent.once() : await agent.forever();
  } finally {
    closeTransport?.();
    await lock.release();
  }
}

interface AgentDeps {
  api: AgentApi;
  session: Session;
  journal: Journal;
  pins: PinnedKeys;
  config: Config;
  timing: Timing;
  logger: Logger;
  stop: AbortSignal;
  env: NodeJS.ProcessEnv;
  host: HostAccess;
  executors: ExecutorTable | undefined;
  scanSummary: ReturnType<typeof scanSummaryFile>;
  lastScan: ScanSummary | undefined;
  autoScans: AutoScans;
  scanParts: ScanPartStore;
  upgradeTrial: boolean;
}

function createAgent(deps: AgentDeps) {
  const { api, session, journal, config, timing, logger, stop } = deps;
  const startedAt = Date.now();
  let lastScan = deps.lastScan;
  const totals: RunSummary = { cycles: 0, delivered: 0, reported: 0, executed: 0, rejected: 0, redelivered: 0, dropped: 0 };

  // A command that is running when the agent is told to stop gets a grace period, then its
  // signal fires and it ends as FAILED "agent stopped".
  const commandStop = new AbortController();
  const onStop = () => {
    logger.info({ graceSeconds: config.stopGraceSeconds }, "stopping");
    setTimeout(() => commandStop.abort(), config.stopGraceSeconds * 1000).unref();
  };
  if (stop.aborted) onStop();
  else stop.addEventListener("abort", onStop, { once: true });

  // Heartbeat mode, while it lasts, wins over what the server suggests.
  const intervalSeconds = (next?: number) =>
    heartbeat.interval(Date.now()) ?? (next || session.registration.agentConfig?.pollIntervalSeconds || timing.defaultPollSeconds);

  // Read at most once a minute: on Windows it runs reg.exe, and polls can be seconds apart.
  let reboot: { at: number; state: Promise<RebootState> } | undefined;
  const rebootPending = () => {
    if (!reboot || Date.now() - reboot.at >= REBOOT_CHECK_MS) {
      const state = rebootRequired(deps.host).catch((err: unknown): RebootState => ({ required: false, by: [], sources: [], unknown: String(err) }));
      reboot = { at: Date.now(), state };
    }
    return reboot.state;
  };
  // The post-hook of the last reboot, once the host has restarted since it was scheduled: run in
  // the background (polls go on meanwhile), its outcome kept and reported in every status until
  // the next reboot command.
  void runPendingPostHook(config.stateDir, { dir: config.hooksDir, env: deps.env, signal: commandStop.signal })
    .then((r) => {
      if (r?.ran && r.ran.at >= startedAt) logger[r.ran.ok ? "info" : "warn"]({ hook: r.name, commandId: r.commandId, outcome: r.ran.message }, "post-reboot hook ran");
    })
    .catch((err: unknown) => logger.warn({ err: describeError(err) }, "cannot run the post-reboot hook"));
  // Only a release on trial confirms, once, after its first complete poll cycle; until then
  // every poll says it is on trial.
  let upgradeConfirmed = !deps.upgradeTrial;
  const status = async () => {
    // An upgrade this agent tried and abandoned, until the next update_agent replaces it.
    const failure = await readFailure(config.installDir).catch(() => undefined);
    const reboot = await rebootPending();
    const postHook = await readPostHook(config.stateDir);
    return create(AgentStatusSchema, {
      agentVersion: AGENT_VERSION,
      uptimeSeconds: BigInt(Math.floor((Date.now() - startedAt) / 1000)),
      configRevision: session.registration.agentConfig?.revision ?? 0n,
      lastSequence: journal.lastSequence,
      lastScanTime: lastScan ? timestampFromDate(lastScan.scanTime) : undefined,
      pendingUpdateCount: lastScan?.pendingUpdateCount ?? 0,
      securityUpdateCount: lastScan?.securityUpdateCount ?? 0,
      rebootRequired: reboot.required,
      rebootRequiredBy: reboot.sources,
      rebootRequiredUnknown: reboot.unknown ?? "",
      trustedKeysRevision: keySetRevision(deps.pins.keys()),
      upgradeTrial: !upgradeConfirmed,
      upgradeFailure: failure
        ? create(AgentUpgradeFailureSchema, { version: failure.version, reason: failure.reason, time: timestampFromDate(new Date(failure.at)) })
        : undefined,
      postRebootHook: postHook?.ran
        ? create(PostRebootHookSchema, { commandId: postHook.commandId, name: postHook.name, ok: postHook.ran.ok, message: postHook.ran.message, time: timestampFromDate(new Date(postHook.ran.at)) })
        : undefined,
    });
  };

  const breakers = createBreakers();
  const locks = createSourceLocks();
  const heartbeat = createHeartbeat();
  const execute = async (command: Parameters<typeof executeCommand>[0], automatic = false): Promise<CommandResult> => {
    const result = await executeCommand(command, {
      automatic,
      executors: deps.executors,
      agentConfig: session.registration.agentConfig,
      aptRefresh: config.aptRefresh,
      breakers,
      locks,
      heartbeat,
      env: deps.env,
      host: deps.host,
      logger,
      stopSignal: commandStop.signal,
      pins: deps.pins,
      installDir: config.installDir,
      stateDir: config.stateDir,
      hooksDir: config.hooksDir,
      onTrial: deps.upgradeTrial,
      server: { url: session.registration.serverUrl, caFile: config.caFile ?? session.registration.caFile },
      requestRestart: (reason) => {
        totals.restart = reason;
      },
    });
    if (result.detail.case === "scanUpdates" && result.outcome === CommandOutcome.SUCCEEDED) {
      lastScan = mergeScan(lastScan, result.detail.value, new Date());
      await deps.scanSummary.save(lastScan).catch((err: unknown) => logger.warn({ err: describeError(err) }, "cannot save scan summary"));
    }
    // A scan too big for one report is kept in parts on disk; the journal keeps the rest.
    if (result.detail.case === "scanUpdates" && !automatic) {
      result.detail = { case: "scanUpdates", value: await deps.scanParts.keep(command.id, result.detail.value) };
    }
    // What an install changed is stale in the control plane's view until those sources are
    // scanned again; that happens right after this batch of commands.
    const detail = result.detail;
    if (detail.case === "installUpdates" || detail.case === "confirmDependencies" || detail.case === "rollbackUpdate") {
      for (const p of detail.value.packages) if (p.state === PackageResultState.INSTALLED) rescan.add(p.source);
    }
    return result;
  };
  const rescan = new Set<string>();

  // Scans the given subsystems now and keeps the result as a scan report until acknowledged.
  const scanAndKeep = async (subsystems: string[], why: string): Promise<void> => {
    const scanTime = new Date();
    const command = create(CommandSchema, {
      id: `scheduled-${randomUUID()}`,
      action: { case: "scanUpdates", value: create(ScanUpdatesSchema, { subsystems }) },
    });
    logger.info({ subsystems, why }, "running scan");
    const result = await execute(command, true);
    if (result.detail.case === "scanUpdates") {
      const id = randomUUID();
      const scan = await deps.scanParts.keep(id, result.detail.value);
      await deps.autoScans.add(create(ScanReportSchema, { id, scanTime: timestampFromDate(scanTime), result: scan }));
    }
    logger.info({ subsystems, why, outcome: CommandOutcome[result.outcome], message: result.message }, "scan finished");
  };

  const rescanAfterInstalls = async (): Promise<void> => {
    if (rescan.size === 0 || stop.aborted) return;
    const sources = [...rescan];
    rescan.clear();
    await scanAndKeep(sources, "after install");
  };

  // A key rotation: the control plane sends the new set signed by keys we pin, newer than the
  // one we hold. Accepted, it replaces the pins on disk and in memory (commands of this very
  // poll are checked with it); the keys it leaves out are never pinned again.
  const followKeyRotation = async (signed: SignedKeySet): Promise<void> => {
    const state = await loadKeySetState(config.stateDir);
    const check = checkKeySet(signed, deps.pins, state);
    if (!check.ok) {
      logger.warn({ reason: check.reason }, "signing-key update refused; commands signed by a new key will be rejected until the agent is registered again");
      return;
    }
    await savePinnedKeys(config.stateDir, check.keys, advanceKeySetState(state, deps.pins, check));
    const pins = deps.pins as Map<string, Uint8Array>;
    pins.clear();
    for (const key of check.keys) pins.set(key.keyId, new Uint8Array(key.publicKey));
    logger.info({ keyIds: check.keys.map((k) => k.keyId), signedBy: check.signer }, "command-signing keys updated");
  };

  // A config (holds, schedules) is applied only once it is verified: signed by a pinned key, for
  // this agent, and issued after the one applied now. Anything else is refused and the last
  // verified config stays in force, holds included.
  const applyConfig = async (signed: SignedAgentConfig): Promise<void> => {
    const current = session.registration.agentConfig;
    const check = openSignedConfig(signed, deps.pins, { agentId: session.registration.agentId, current, now: new Date() });
    if (!check.ok) {
      logger.warn(
        { reason: check.reason, keptRevision: current?.revision.toString() ?? null, keptHolds: current?.holds.length ?? 0 },
        "agent config refused; keeping the last verified config",
      );
      return;
    }
    if (check.unchanged) return;
    await session.saveAgentConfig(check.config);
    logger.info({ revision: check.config.revision.toString(), issued: configIssueTime(check.config)?.toISOString() }, "agent config applied");
  };

  // Runs the subsystems whose schedule (auto_run, interval) says they are due; the scan is
  // kept on disk as a report until the control plane acknowledges it.
  const runDueScans = async (): Promise<void> => {
    const due = deps.autoScans.due(session.registration.agentConfig, new Date());
    if (due.length === 0 || stop.aborted) return;
    const scanTime = new Date();
    await scanAndKeep(due, "scheduled");
    // Marked as run even when it failed: the circuit breaker, not a tight retry, handles failures.
    await deps.autoScans.markRun(due, scanTime);
  };

  // Sends unacknowledged results and scan reports until the control plane has them or refuses
  // them for good (see report.ts: bounded calls, big scans in parts).
  const reporter = createReporter({ api, session, journal, autoScans: deps.autoScans, scanParts: deps.scanParts, logger });
  const flush = async (signal: AbortSignal): Promise<void> => {
    totals.reported += await reporter.flush(signal);
  };

  // One poll: report what is pending, poll (long-polling up to waitSeconds), run what came, report.
  const cycle = async (waitSeconds: number): Promise<{ executed: number; intervalSeconds: number }> => {
    totals.cycles++;
    await flush(stop);
    const nonce = new Uint8Array(randomBytes(32));
    const statusNow = await status();
    const res = await session.call(
      (creds) => api.pollCommands({ nonce, waitSeconds, status: statusNow }, creds, stop),
      stop,
    );
    // Keys first: a config signed by a key this very answer rotates in is then verified with it.
    if (res.keySet) await followKeyRotation(res.keySet);
    if (res.signedConfig) await applyConfig(res.signedConfig);
    let executed = 0;
    if (res.commands.length > 0) {
      totals.delivered += res.commands.length;
      const summary = await processCommands(res.commands, nonce, {
        journal,
        pins: deps.pins,
        agentId: session.registration.agentId,
        execute,
        stopping: () => stop.aborted,
        logger,
      });
      executed = summary.executed;
      totals.executed += summary.executed;
      totals.rejected += summary.rejected;
      totals.redelivered += summary.redelivered;
      totals.dropped += summary.dropped;
      // Results go out now, even when the agent is stopping; then the view of what an install
      // changed is refreshed and sent too.
      await flush(stop.aborted ? AbortSignal.timeout(timing.finalFlushMs) : stop);
      if (rescan.size > 0 && !stop.aborted) {
        await rescanAfterInstalls();
        await flush(stop);
      }
    }
    if (!upgradeConfirmed && config.installDir) {
      await writeConfirmation(config.installDir, AGENT_VERSION);
      upgradeConfirmed = true;
      logger.info({ version: AGENT_VERSION }, "new release on trial completed a poll cycle; confirmed it to the release that started it");
    }
    return { executed, intervalSeconds: intervalSeconds(res.nextPollSeconds) };
  };

  const finalFlush = async () => {
    if (journal.pending().length === 0) return;
    try {
      await flush(AbortSignal.timeout(timing.finalFlushMs));
    } catch (err) {
      logger.warn({ err: describeError(err), pending: journal.pending().length }, "results not reported before stopping; they are sent on the next start");
    }
  };

  return {
    async once(): Promise<RunSummary> {
      try {
        await cycle(0);
      } catch (err) {
        if (stop.aborted) {
          await finalFlush();
          return totals;
        }
        throw new AgentError(`poll cycle against ${session.registration.serverUrl} failed: ${describeError(err)}`, undefined, { cause: err });
      }
      logger.info({ ...totals }, "cycle finished");
      return totals;
    },

    async forever(): Promise<RunSummary> {
      const backoff = createBackoff({ baseMs: timing.backoffBaseMs, capMs: timing.backoffCapMs });
      let interval = intervalSeconds();
      while (!stop.aborted && !totals.restart) {
        const started = Date.now();
        let delayMs: number;
        try {
          // Long-polling within the interval keeps one request per interval when idle, yet hands
          // over a queued command at once.
          const wait = Math.min(config.longPollSeconds, 60, Math.floor(interval));
          const outcome = await cycle(wait);
          backoff.reset();
          // A new release is in place and the result is reported: exit so it starts.
          if (totals.restart) break;
          await runDueScans();
          interval = outcome.intervalSeconds;
          const jitter = session.registration.agentConfig?.pollJitterPercent ?? 0;
          // After running something, look for more at once; a poll of only rejected commands
          // waits like an idle one, so a misbehaving server cannot make the agent spin.
          delayMs = outcome.executed > 0 ? 0 : started + jittered(interval * 1000, jitter) - Date.now();
        } catch (err) {
          if (stop.aborted) break;
          const failure = classify(err);
          // A rate-limited call waits at least as long as the control plane asked.
          delayMs = failure === "transient" ? Math.max(backoff.next(), retryAfterMs(err)) : Math.round(timing.refusedDelayMs * (0.5 + Math.random() / 2));
          const log = { err: describeError(err), retryInSeconds: Math.round(delayMs / 1000) };
          if (failure === "transient") logger.warn(log, "poll cycle failed; backing off");
          else if (failure === "refused") logger.error(log, "the control plane refuses this agent; retrying rarely");
          else logger.error(log, "credentials lost; retrying registration rarely");
        }
        await sleep(delayMs, stop);
      }
      await finalFlush();
      logger.info({ ...totals }, "agent stopped");
      return totals;
    },
  };
}


function resolveConfig(options: RunOptions): Config {
  const config: Record<string, unknown> = { ...defaultConfig };
  for (const key of Object.keys(defaultConfig) as (keyof Config)[]) {
    if (options[key as keyof RunOptions] !== undefined) config[key] = options[key as keyof RunOptions];
  }
  return Object.freeze(config as unknown as Config);
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { pruneFinishedCommands, pruneIdempotencyKeys, sweepTimedOut } from "./store/commands.ts";
import { pruneAudit, pruneSecurityEvents } from "./store/retention.ts";
import { pruneReportData } from "./store/reports.ts";
import type { EventBus } from "./cluster/events.ts";
import type { Settings } from "./settings.ts";
import type { Prisma } from "./store/types.ts";
import { autoUpgrade, reconcileUpgrades, type UpgradeDeps } from "./domain/upgrades.ts";
import { pruneUpgrades } from "./store/upgrades.ts";
import { noticeAgentHealth, noticeReboots, runNotifications, type NotifierDeps } from "./domain/notifications.ts";
import { pruneDeliveries } from "./store/notifications.ts";
import { pruneEndedRollouts } from "./store/rollouts.ts";
import { autoApprove } from "./domain/policies.ts";
import { advanceRollouts, type RolloutDeps } from "./domain/rollouts.ts";

export interface Scheduler {
  // One round of every job; `now` stands in for the clock (tests).
  tick(now?: Date): Promise<void>;
  stop(): void;
}

// Periodic housekeeping. Each job is an idempotent statement, so running it on every replica
// would be safe; with several replicas only the leader (`isLeader`) runs them, so each timed-out
// command is published once and pruning is not done N times over.
export function createScheduler(
  db: Prisma,
  config: Config,
  logger: Logger,
  settings: Settings,
  events?: EventBus,
  isLeader: () => boolean = () => true,
  // Queues the automatic agent upgrades; without it upgrades are only followed, never started.
  upgrades?: UpgradeDeps,
  // Routes the notification outbox and sends what is due; without it nothing is sent.
  notifications?: NotifierDeps,
  // Queues the installs of staged rollouts and moves them on; without it rollouts stand still.
  rollouts?: Omit<RolloutDeps, "settings">,
): Scheduler {
  let lastPrune = 0;
  // Agent offline/back and reboot notices: once a minute (offline only about what happened
  // while watched).
  let lastHealthNotice = 0;
  const watchingSince = new Date();
  let halted = false;
  // The round in progress: a tick asked for meanwhile waits for it (and runs nothing itself), so
  // `await tick()` never returns while a round is still writing.
  let inProgress: Promise<void> | undefined;
  const tick = async (at?: Date) => {
    if (inProgress) return inProgress;
    if (!isLeader()) return;
    let done!: () => void;
    inProgress = new Promise((resolve) => (done = resolve));
    try {
      const now = at ?? new Date();
      const timedOut = await sweepTimedOut(db, new Date(now.getTime() - settings.resultTimeoutSeconds * 1000), now);
      if (timedOut.length > 0) {
        logger.info({ commands: timedOut.length }, "commands timed out waiting for a result");
        events?.publish(timedOut.map((c) => ({ commandId: c.id, agentId: c.agentId })));
      }
      await upgradeJobs(now);
      if (notifications && now.getTime() - lastHealthNotice >= 60_000) {
        lastHealthNotice = now.getTime();
        const seen = await noticeAgentHealth(db, now, settings.pollIntervalSeconds, watchingSince).catch((err: unknown) => {
          logger.warn({ err }, "noticing agents that went offline or came back failed; will retry");
          return { offline: 0, back: 0 };
        });
        if (seen.offline + seen.back > 0) logger.info(seen, "agents went offline or came back (notified)");
        const reboots = await noticeReboots(db, now).catch((err: unknown) => {
          logger.warn({ err }, "noticing agents that need a reboot failed; will retry");
          return { required: 0, done: 0 };
        });
        if (reboots.required + reboots.done > 0) logger.info(reboots, "agents need a reboot or no longer do (notified)");
      }
      if (notifications) {
        const n = await runNotifications(notifications, now).catch((err: unknown) => {
          logger.warn({ err }, "sending notifications failed; will retry");
          return undefined;
        });
        if (n && n.failed > 0) logger.warn(n, "some notifications could not be sent (see `redflag notifications deliveries`)");
      }
      await approveByPolicy(now);
      await rolloutJobs(now);
      // Retention, at most hourly: old finished commands, audit entries, security events,
      // metric readings and update history.
      if (now.getTime() - lastPrune > 3_600_000) {
        lastPrune = now.getTime();
        const pruned = { ...(await prune(db, now, settings)), idempotencyKeys: await pruneIdempotencyKeys(db, new Date(now.getTime() - config.idempotencyKeyTtlSeconds * 1000)) };
        if (Object.values(pruned).some((n) => n > 0)) logger.info(pruned, "old records removed (retention)");
      }
    } catch (err) {
      logger.warn({ err }, "housekeeping failed; will retry");
    } finally {
      inProgress = undefined;
      done();
    }
  };
  // Agent upgrades: each open one moved on from its command and what its agent reports; then
  // the automatic upgrade's next batch, unless too many of its upgrades failed.
  const upgradeJobs = async (now: Date) => {
    const timeout = settings.agentUpgradeTimeoutSeconds;
    const ended = await reconcileUpgrades(db, now, timeout);
    for (const u of ended) {
      if (u.state === "succeeded") logger.info({ upgradeId: u.id, hostname: u.hostname }, "agent upgrade succeeded");
      else logger.warn({ upgradeId: u.id, hostname: u.hostname, state: u.state }, "agent upgrade did not succeed");
    }
    if (!upgrades) return;
    const limits = {
      batch: settings.autoUpgradeBatch,
      maxFailures: settings.autoUpgradeMaxFailures,
      seenWithinSeconds: timeout,
    };
    const outcome = await autoUpgrade(upgrades, limits, now);
    if (outcome.kind === "halted" && !halted) {
      logger.warn({ failed: outcome.failed, maxFailures: limits.maxFailures }, "automatic agent upgrade stopped: too many upgrades failed (see `redflag agents upgrade-status`)");
    }
    halted = outcome.kind === "halted";
    if (outcome.kind === "ran" && outcome.queued.length > 0) {
      logger.info({ agents: outcome.queued.map((u) => u.agentId), versions: [...new Set(outcome.queued.map((u) => u.toVersion))] }, "automatic agent upgrade queued");
    }
  };
  // Auto-approval rules: a fleet's backlog is approved AUTO_APPROVE.batch at a time, at most
  // AUTO_APPROVE.maxBatches per tick; the rest waits for the next. One batch evaluates every rule
  // over the whole pending set: about 0.7 s for 100,000 pending updates, 5 rules of 50 patterns
  // and 200 holds on PostgreSQL on a 2-core machine.
  const approveByPolicy = async (now: Date) => {
    const approved = await autoApprove(db, now, AUTO_APPROVE);
    if (approved.length > 0) {
      logger.info({ updates: approved.length, policies: [...new Set(approved.map((a) => a.policyName))] }, "updates approved by policy");
    }
  };
  // Staged rollouts: after auto-approval, so a ring starting now installs what was just approved.
  const rolloutJobs = async (now: Date) => {
    if (!rollouts) return;
    const done = await advanceRollouts({ ...rollouts, settings }, now).catch((err: unknown) => {
      logger.warn({ err }, "moving rollouts on failed; will retry");
      return undefined;
    });
    if (!done) return;
    if (done.queued > 0) logger.info({ installs: done.queued }, "rollout installs queued");
    for (const name of done.halted) logger.warn({ rollout: name }, "rollout halted (see `redflag rollouts list`)");
    for (const name of done.promoted) logger.info({ rollout: name }, "rollout promoted to its next ring");
    for (const name of done.finished) logger.info({ rollout: name }, "rollout finished");
  };
  const timer = setInterval(() => void tick(), config.sweepIntervalMs);
  timer.unref();
  void tick();
  return { stop: () => clearInterval(timer), tick };
}

const AUTO_APPROVE = { batch: 1000, maxBatches: 5 };

type Retention = Pick<Settings, "retentionCommandsSeconds" | "retentionMetricsSeconds" | "retentionAuditSeconds" | "retentionSecurityEventsSeconds">;

export async function prune(db: Prisma, now: Date, settings: Retention) {
  const before = (seconds: number) => new Date(now.getTime() - seconds * 1000);
  const commands = await pruneFinishedCommands(db, before(settings.retentionCommandsSeconds));
  const audit = await pruneAudit(db, before(settings.retentionAuditSeconds));
  const events = await pruneSecurityEvents(db, before(settings.retentionSecurityEventsSeconds));
  // Update history goes with the commands that made it.
  const reports = await pruneReportData(db, { metrics: before(settings.retentionMetricsSeconds), updateEvents: before(settings.retentionCommandsSeconds) });
  const upgrades = await pruneUpgrades(db, before(settings.retentionCommandsSeconds));
  const notifications = await pruneDeliveries(db, before(settings.retentionCommandsSeconds));
  // A rollout's history goes with the commands it queued.
  const rollouts = await pruneEndedRollouts(db, before(settings.retentionCommandsSeconds));
  return { commands, audit, events, upgrades, notifications, rollouts, ...reports };
}

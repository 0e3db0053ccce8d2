import { spawn, type ChildProcess } from "node:child_process";
import { access, rm } from "node:fs/promises";
import path from "node:path";
import { releaseEntries } from "./executors/update-agent.ts";
import type { Logger } from "./log.ts";
import {
  clearPendingUpgrade,
  CONFIRMED_FILE,
  currentRelease,
  type FailedUpgrade,
  MAX_TRIAL_STARTS,
  pruneReleases,
  readConfirmation,
  readPendingUpgrade,
  recordFailure,
  releaseDir,
  savePendingUpgrade,
  switchCurrent,
  TRIAL_ENV,
} from "./state/upgrade.ts";
import { AGENT_VERSION } from "./version.ts";

// The trial of a new release, run by the release that is known to work (this process). update_agent
// left the new release verified and unpacked in releases/<version> with upgrade.json; this
// process starts it as its child, with the same arguments and environment plus
// REDFLAG_AGENT_UPGRADE_TRIAL=<version>, and waits:
// - the child writes upgrade-confirmed.json after its first complete poll cycle: `current` is
//   switched to it, the child is stopped gracefully and this process exits 3 so the service
//   manager starts the new release for real;
// - the child exits before confirming: it is started again, MAX_TRIAL_STARTS starts in all;
// - it has not confirmed within the trial time: it is killed.
// Either failure abandons the upgrade: `current` never moved, upgrade-failed.json says why (the
// agent reports it to the control plane) and this process carries on as the release it is.
// A release that cannot even start, or starts but never polls, is therefore rolled back by the
// one that works, not by its own watchdog.

export interface TrialOptions {
  installDir: string;
  // The arguments of this `run`, given to the child as they are.
  args: string[];
  env: NodeJS.ProcessEnv;
  trialSeconds: number;
  stopGraceSeconds: number;
  // Stops the trial (SIGTERM or SIGINT to this process): the child is stopped first.
  signal: AbortSignal;
  logger: Logger;
  // Pause between starts of a child that exited, as a service manager's restart delay.
  restartDelayMs?: number;
}

export type TrialOutcome =
  | { outcome: "none" }
  | { outcome: "switched"; version: string; pruned: string[] }
  | { outcome: "failed"; failure: FailedUpgrade }
  | { outcome: "stopped" };

type Watch =
  | { kind: "confirmed" }
  | { kind: "mismatch"; version: string }
  | { kind: "exited"; how: string }
  | { kind: "timeout" }
  | { kind: "stopped" };

const CONFIRMATION_CHECK_MS = 250;

export async function runPendingUpgrade(opts: TrialOptions): Promise<TrialOutcome> {
  const { installDir, logger } = opts;
  const pending = await readPendingUpgrade(installDir);
  if (!pending) return { outcome: "none" };
  // The switch happened and this is the new release started for real: the record outlived it.
  if (pending.version === AGENT_VERSION) {
    await clearPendingUpgrade(installDir);
    return { outcome: "none" };
  }
  const version = pending.version;
  const fail = async (reason: string): Promise<TrialOutcome> => {
    const failure = await recordFailure(installDir, { version, from: AGENT_VERSION, reason });
    // The release that failed goes (unless something pointed `current` at it meanwhile).
    if ((await currentRelease(installDir)) !== version) await rm(releaseDir(installDir, version), { recursive: true, force: true });
    logger.error({ version, reason, runningAs: AGENT_VERSION }, "agent upgrade abandoned; carrying on as the release that works");
    return { outcome: "failed", failure };
  };

  const entry = await findEntry(releaseDir(installDir, version));
  if (!entry) return fail(`releases/${version} holds no ${releaseEntries().join(" or ")}`);

  const deadline = Date.now() + opts.trialSeconds * 1000;
  let lastExit = "";
  for (;;) {
    if (pending.starts >= MAX_TRIAL_STARTS) {
      return fail(
        lastExit
          ? `it exited ${MAX_TRIAL_STARTS} times before completing a poll cycle (the last time with ${lastExit})`
          : `its trial was interrupted ${MAX_TRIAL_STARTS} times`,
      );
    }
    // Counted before the start: a parent that dies during the trial does not retry for ever.
    pending.starts++;
    await savePendingUpgrade(installDir, pending);
    await rm(path.join(installDir, CONFIRMED_FILE), { force: true });
    logger.info({ version, start: pending.starts, of: MAX_TRIAL_STARTS, trialSeconds: opts.trialSeconds }, "trying the new release");
    const child = spawn(entry, opts.args, {
      env: { ...opts.env, [TRIAL_ENV]: version },
      stdio: "inherit",
      // Its own process group, so that what it started goes with it when it is killed.
      detached: process.platform !== "win32",
      windowsHide: true,
    });
    const seen = await watch(child, opts, version, deadline);
    if (seen.kind === "confirmed") {
      const before = await currentRelease(installDir);
      await switchCurrent(installDir, version);
      logger.info({ version, previous: before ?? null }, "the new release completed a poll cycle; switched to it");
      await stop(child, opts.stopGraceSeconds, logger);
      await clearPendingUpgrade(installDir);
      const pruned = await pruneReleases(installDir, [version, ...(before ? [before] : [])]);
      return { outcome: "switched", version, pruned };
    }
    if (seen.kind === "stopped") {
      await stop(child, opts.stopGraceSeconds, logger);
      logger.info({ version }, "stopped during the trial of a new release; it is tried again at the next start");
      return { outcome: "stopped" };
    }
    if (seen.kind === "timeout") {
      await stop(child, opts.stopGraceSeconds, logger);
      return fail(`it did not complete a poll cycle within ${opts.trialSeconds} s`);
    }
    if (seen.kind === "mismatch") {
      await stop(child, opts.stopGraceSeconds, logger);
      return fail(`the release in releases/${version} says it is version ${seen.version}`);
    }
    lastExit = seen.how;
    logger.warn({ version, start: pending.starts, of: MAX_TRIAL_STARTS, exit: seen.how }, "the new release exited before completing a poll cycle");
    if (pending.starts < MAX_TRIAL_STARTS && !(await pause(opts.restartDelayMs ?? 1000, opts.signal))) return { outcome: "stopped" };
  }
}

async function findEntry(release: string): Promise<string | undefined> {
  for (const entry of releaseEntries()) {
    const file = path.join(release, entry);
    if (await access(file).then(() => true, () => false)) return file;
  }
  return undefined;
}

function watch(child: ChildProcess, opts: TrialOptions, version: string, deadline: number): Promise<Watch> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (result: Watch) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(timer);
      opts.signal.removeEventListener("abort", onStop);
      resolve(result);
    };
    const check = async (): Promise<Watch | undefined> => {
      const confirmed = await readConfirmation(opts.installDir).catch(() => undefined);
      if (!confirmed) return undefined;
      return confirmed.version === version ? { kind: "confirmed" } : { kind: "mismatch", version: confirmed.version };
    };
    const poll = setInterval(() => {
      void check().then((seen) => seen && finish(seen));
    }, CONFIRMATION_CHECK_MS);
    const timer = setTimeout(() => finish({ kind: "timeout" }), Math.max(0, deadline - Date.now()));
    const onStop = () => finish({ kind: "stopped" });
    if (opts.signal.aborted) onStop();
    else opts.signal.addEventListener("abort", onStop, { once: true });
    // A child that confirmed and then exited still counts as confirmed.
    const exited = (how: string) => void check().then((seen) => finish(seen ?? { kind: "exited", how }));
    child.once("error", (err: NodeJS.ErrnoException) => exited(`${err.code ?? err.message} when starting it`));
    child.once("exit", (code, signal) => exited(signal ? `signal ${signal}` : `exit code ${code}`));
  });
}

// SIGTERM to the release on trial (not to its process group: a package manager it runs must not
// be interrupted, the agent lets its command finish within the stop grace), then SIGKILL to the
// whole group once the grace is over; systemd's KillMode=mixed does the same.
async function stop(child: ChildProcess, graceSeconds: number, logger: Logger): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  // The child's own stop grace for a running command, and a little more to report and exit.
  const graceMs = graceSeconds * 1000 + 5000;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs)));
  if (await Promise.race([exited.then(() => false), late])) {
    logger.warn({ pid: child.pid, graceSeconds }, "the release on trial did not stop in time; killing it");
    try {
      if (process.platform !== "win32") process.kill(-child.pid, "SIGKILL");
      else child.kill("SIGKILL");
    } catch {
      child.kill("SIGKILL");
    }
    await exited;
  }
  clearTimeout(timer);
}

function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

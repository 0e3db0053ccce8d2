import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { sweepTimedOut } from "./store/commands.ts";
import type { Prisma } from "./store/types.ts";

export interface Scheduler {
  tick(): Promise<void>;
  stop(): void;
}

// Periodic housekeeping. Each job is an idempotent statement, so running it on every replica is safe.
export function createScheduler(db: Prisma, config: Config, logger: Logger): Scheduler {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      const now = new Date();
      const timedOut = await sweepTimedOut(db, new Date(now.getTime() - config.resultTimeoutSeconds * 1000), now);
      if (timedOut > 0) logger.info({ commands: timedOut }, "commands timed out waiting for a result");
    } catch (err) {
      logger.warn({ err }, "housekeeping failed; will retry");
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), config.sweepIntervalMs);
  timer.unref();
  void tick();
  return { stop: () => clearInterval(timer), tick };
}

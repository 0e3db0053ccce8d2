import { pino, type Logger } from "pino";

export type { Logger };

// JSON lines on stdout. Secrets never reach the logger: callers log IDs, not tokens or keys.
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "redflag-server" },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ["*.authorization", "*.token", "*.secret", "*.password"], censor: "[redacted]" },
  });
}

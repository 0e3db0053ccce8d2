import { pino, type Logger } from "pino";
import { requestLogFields } from "./request-context.ts";

export type { Logger };

// JSON lines on stdout. Secrets never reach the logger: callers log IDs, not tokens or keys.
// Lines written while serving a request carry its requestId (and agentId once known).
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: "redflag-server" },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: requestLogFields,
    redact: { paths: ["*.authorization", "*.token", "*.secret", "*.password"], censor: "[redacted]" },
  };
  return destination ? pino(options, destination) : pino(options);
}

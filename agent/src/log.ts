import { pino, type Logger } from "pino";

export type { Logger };

// JSON lines on stderr, so stdout stays free for command output (`status --json`). Secrets
// never reach the logger: callers log IDs, never tokens or keys; the redaction is a safety net.
export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      base: { service: "redflag-agent" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ["*.authorization", "*.token", "*.accessToken", "*.refreshToken", "*.registrationToken", "*.secretKey"],
        censor: "[redacted]",
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

export const silentLogger: Logger = pino({ level: "silent" });

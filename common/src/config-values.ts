// The value syntax of settings, shared by the agent's and the control plane's config.ts (and the
// control plane's runtime settings and CLI): durations, whole numbers, on/off switches.

// Durations as operators type them: "90s", "10m", "1h", "7d", "2w", or a bare number of seconds.
const units: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

export function parseDuration(text: string): number {
  const match = /^\s*(\d+)\s*([smhdw]?)\s*$/.exec(text);
  if (!match) {
    throw new Error(`"${text}" is not a duration; use a number with s, m, h, d or w (for example 10m or 7d)`);
  }
  const seconds = Number(match[1]) * units[match[2] || "s"]!;
  if (!Number.isSafeInteger(seconds)) throw new Error(`"${text}" is too long a duration`);
  return seconds;
}

// The shortest exact spelling: 600 → "10m", 90 → "90s", 604800 → "1w".
export function formatDuration(seconds: number): string {
  for (const [unit, size] of [["w", 604_800], ["d", 86_400], ["h", 3600], ["m", 60]] as const) {
    if (seconds > 0 && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

export interface EnvValues {
  // A whole number from min to max; unset or empty: the fallback.
  integer(name: string, fallback: number, min: number, max: number): number;
  // 1/true/yes/on or 0/false/no/off, any case; unset or empty: the fallback.
  boolean(name: string, fallback: boolean): boolean;
  // A duration (parseDuration) of at least `min` seconds, in seconds; unset: the fallback.
  duration(name: string, fallback: string, min?: number): number;
}

// Readers of environment variables that add a problem for each bad value to `problems` (and
// return the fallback for it), so a config reports every mistake together.
export function envValues(env: Readonly<Record<string, string | undefined>>, problems: string[]): EnvValues {
  return {
    integer(name, fallback, min, max) {
      const text = env[name];
      if (text === undefined || text === "") return fallback;
      const value = Number(text);
      if (!Number.isInteger(value) || value < min || value > max) {
        problems.push(`${name}=${text} must be a whole number from ${min} to ${max}`);
        return fallback;
      }
      return value;
    },
    boolean(name, fallback) {
      const text = env[name]?.toLowerCase();
      if (text === undefined || text === "") return fallback;
      if (["1", "true", "yes", "on"].includes(text)) return true;
      if (["0", "false", "no", "off"].includes(text)) return false;
      problems.push(`${name}=${env[name]} must be 1 or 0`);
      return fallback;
    },
    duration(name, fallback, min = 1) {
      const text = env[name] ?? fallback;
      try {
        const seconds = parseDuration(text);
        if (seconds < min) problems.push(`${name}=${text} must be at least ${min}s`);
        return seconds;
      } catch (err) {
        problems.push(`${name}: ${(err as Error).message}`);
        return parseDuration(fallback);
      }
    },
  };
}

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

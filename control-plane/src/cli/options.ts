import { InvalidArgumentError } from "commander";
import { parseDuration } from "@redflag/common/config-values";

// Option and argument parsers shared by the command modules: commander reports what they throw
// as "option '…' argument '…' is invalid. <message>", with exit code 2.

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a whole number of at least 1");
  return n;
}

export function percent(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new InvalidArgumentError("must be a whole number from 1 to 100");
  return n;
}

// A duration ("10m", "7d") in seconds.
export function seconds(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

// A repeatable option: each use adds one value.
export const collect = (value: string, previous: string[] = []) => [...previous, value];

// Update severities as the CLI names them, and a repeatable option that takes one.
export const SEVERITY_NAMES = ["unknown", "low", "moderate", "important", "critical", "security"] as const;

export function severityArg(value: string, previous: string[] = []): string[] {
  if (!(SEVERITY_NAMES as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${SEVERITY_NAMES.join(", ")}`);
  return [...previous, value];
}

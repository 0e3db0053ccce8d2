import { InvalidArgumentError } from "commander";

// Parsers for the benchmarks' numeric options (commander calls them with the option's text).
export const number = (min: number, max = Number.MAX_SAFE_INTEGER) => (text: string) => {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `must be a number ≥ ${min}` : `must be a number from ${min} to ${max}`);
  return n;
};

export const integer = (min: number) => (text: string) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer ≥ ${min}`);
  return n;
};

import { Code, ConnectError } from "@connectrpc/connect";

// What every rule says of bad input: InvalidArgument, with a message a person can act on. The
// adapters' wire checks (services/validate.ts) and the domain's own rules share these.

export function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

// Printable text of bounded length; control characters would corrupt logs and tables.
export function text(field: string, value: string, opts: { max: number; required?: boolean }): string {
  if (opts.required && value.length === 0) throw invalid(`${field} is required`);
  if (value.length > opts.max) throw invalid(`${field} is longer than ${opts.max} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`${field} contains control characters`);
  return value;
}

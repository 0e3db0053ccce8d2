import { Code, ConnectError } from "@connectrpc/connect";

// Exit codes of the CLI.
export const EXIT_OK = 0;
// The work failed: server unreachable, registration refused, credentials gone …
export const EXIT_FAILURE = 1;
// The agent cannot even start: bad flags or environment, not registered, damaged state.
export const EXIT_USAGE = 2;
// A new release was installed by update_agent; the service manager starts it (Restart=always).
export const EXIT_RESTART = 3;

// An error with a message meant for the operator, and the exit code it ends the CLI with.
export class AgentError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = EXIT_FAILURE, options?: ErrorOptions) {
    super(message, options);
    this.name = "AgentError";
    this.exitCode = exitCode;
  }
}

export function connectCode(err: unknown): Code | undefined {
  return err instanceof ConnectError ? err.code : undefined;
}

// Server messages are written for clients (the control plane never sends internals); network
// errors carry the cause in their message.
export function describeError(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code] ?? err.code}: ${err.rawMessage}`;
  return err instanceof Error ? err.message : String(err);
}

// Where a failed call leaves the agent, and so how long it waits before trying again.
export type Failure =
  // Unavailable, DeadlineExceeded, ResourceExhausted, network errors, server bugs: retry soon, backing off.
  | "transient"
  // The control plane knows the agent and refuses it (decommissioned, wrong machine): retry rarely.
  | "refused"
  // Credentials are gone and re-registration failed: retry rarely.
  | "credentials";

export function classify(err: unknown): Failure {
  if (err instanceof CredentialsLostError) return "credentials";
  if (connectCode(err) === Code.PermissionDenied) return "refused";
  return "transient";
}

// The control plane's `retry-after` hint (seconds, sent with ResourceExhausted) in milliseconds,
// spread up to twice the hint so agents refused together do not return together; 0 without one.
export function retryAfterMs(err: unknown, random: () => number = Math.random): number {
  if (!(err instanceof ConnectError)) return 0;
  const seconds = Number(err.metadata.get("retry-after"));
  if (!Number.isFinite(seconds) || seconds <= 0) return 0;
  const ms = Math.min(seconds, 3600) * 1000;
  return Math.round(ms + random() * ms);
}

export class CredentialsLostError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CredentialsLostError";
  }
}

// The state directory is damaged, missing or not ours: the message says what to do.
export class StateError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateError";
  }
}

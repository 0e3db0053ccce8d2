import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ToolOutputSchema } from "@redflag/gen/command_pb";
import { type Engine, EngineError, engineMessage } from "./scan.ts";
import type { DockerConfig } from "./registry.ts";
import { OUTPUT_TAIL_CHARS } from "../install-common.ts";
import type { ToolOutput } from "../types.ts";

// One Engine API session of an installer operation: every call gets what is left of the
// budget, and each call that changes something is recorded like a tool run.
export interface Session {
  engine: Engine;
  config: DockerConfig;
  output: ToolOutput[];
  // For the docker CLI (Compose): PATH and the rest of the agent's environment.
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
  deadline: number;
}

export const tail = (text: string) => (text.length > OUTPUT_TAIL_CHARS ? `…${text.slice(-OUTPUT_TAIL_CHARS)}` : text);

export function record(s: Session, argv: string[], started: number, fields: { exitCode: number; stdout?: string; error?: string | undefined; timedOut?: boolean }): void {
  s.output.push(
    create(ToolOutputSchema, {
      argv,
      exitCode: fields.exitCode,
      stdoutTail: tail(fields.stdout ?? ""),
      stderrTail: tail(fields.error ?? ""),
      duration: durationFromMs(Date.now() - started),
      timedOut: fields.timedOut ?? false,
    }),
  );
}

// One Engine API call that changes something, recorded. `what` names it for the error
// ("stopping web"); a status outside 2xx (and `also`) is an error with the daemon's reason.
export async function step(
  s: Session,
  method: string,
  apiPath: string,
  what: string,
  opts: { json?: unknown; also?: readonly number[] } = {},
): Promise<{ error?: string; body?: Buffer }> {
  const started = Date.now();
  let error: string | undefined;
  let exitCode = 0;
  let timedOut = false;
  let body: Buffer | undefined;
  try {
    const res = await s.engine.call(method, apiPath, { json: opts.json });
    body = res.body;
    if ((res.status < 200 || res.status > 299) && !opts.also?.includes(res.status)) {
      error = `${what} failed (HTTP ${res.status}): ${engineMessage(res.body)}`;
      exitCode = 1;
    }
  } catch (err) {
    error = `${what} failed: ${(err as Error).message}`;
    exitCode = -1;
    timedOut = (err as EngineError).code === "TIMEOUT";
  }
  record(s, [method, `${s.engine.prefix}${apiPath}`], started, { exitCode, error, timedOut });
  return error ? { error } : { body: body! };
}

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AgentConfig } from "@redflag/gen/common_pb";
import { type Command, CommandOutcome, type CommandResult, CommandResultSchema } from "@redflag/gen/command_pb";
import { createBreakers, type Breakers } from "../breaker.ts";
import { createHeartbeat, type Heartbeat } from "../heartbeat.ts";
import { createSourceLocks, type SourceLocks } from "../source-lock.ts";
import { disableHeartbeat, enableHeartbeat } from "./heartbeat.ts";
import { reboot } from "./reboot.ts";
import type { Logger } from "../log.ts";
import { collectSpecs } from "./collect-specs.ts";
import { confirmDependencies, dryRunUpdate, installUpdates, rollbackUpdate } from "./install.ts";
import { listPackageVersions } from "./package-versions.ts";
import { scanUpdates } from "./scan-updates.ts";
import { updateAgent } from "./update-agent.ts";
import type { PinnedKeys } from "../trust/envelope.ts";
import type { HostAccess } from "../platform.ts";
import type { ActionKind, Executor, ExecutorOutcome } from "./types.ts";

export type { ActionKind, Executor, ExecutorContext, ExecutorOutcome } from "./types.ts";

export type ExecutorTable = Partial<Record<ActionKind, Executor>>;

export const defaultExecutors: ExecutorTable = {
  scanUpdates,
  collectSpecs,
  installUpdates,
  dryRunUpdate,
  confirmDependencies,
  rollbackUpdate,
  listPackageVersions,
  enableHeartbeat,
  disableHeartbeat,
  reboot,
  updateAgent,
};

// Used when neither the command nor the agent config gives a timeout.
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 600;
const MAX_MESSAGE_CHARS = 4096;

export interface ExecuteOptions {
  executors?: ExecutorTable;
  agentConfig: AgentConfig | undefined;
  aptRefresh: boolean;
  // Default: fresh breakers for this command only.
  breakers?: Breakers | undefined;
  locks?: SourceLocks | undefined;
  heartbeat?: Heartbeat | undefined;
  // A scheduled scan rather than an operator's command.
  automatic?: boolean | undefined;
  env: NodeJS.ProcessEnv;
  // How metrics and inventory read the host (tests give a fake one); this host by default.
  host?: HostAccess | undefined;
  logger: Logger;
  // Aborted when the agent stops and the command's grace period is over.
  stopSignal?: AbortSignal | undefined;
  pins?: PinnedKeys | undefined;
  installDir?: string | undefined;
  stateDir?: string | undefined;
  hooksDir?: string | undefined;
  onTrial?: boolean | undefined;
  server?: { url: string; caFile: string | undefined } | undefined;
  requestRestart?: ((reason: string) => void) | undefined;
}

// "scanUpdates" → "scan_updates", the name operators know the kind by.
export const kindName = (kind: string) => kind.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

// Runs one verified command to a result. Never throws: a failing, hanging or missing executor
// becomes a FAILED result, so one bad command cannot stop the agent.
export async function executeCommand(command: Command, opts: ExecuteOptions): Promise<CommandResult> {
  const startTime = new Date();
  const timeoutSeconds = command.timeoutSeconds || opts.agentConfig?.commandTimeoutSeconds || DEFAULT_COMMAND_TIMEOUT_SECONDS;
  const kind = command.action.case;
  const executor = kind ? (opts.executors ?? defaultExecutors)[kind] : undefined;

  let outcome: ExecutorOutcome;
  if (!kind) {
    outcome = { outcome: CommandOutcome.FAILED, message: "the command carries no action this agent knows" };
  } else if (!executor) {
    outcome = { outcome: CommandOutcome.FAILED, message: `${kindName(kind)} is not supported by this agent yet` };
  } else {
    outcome = await runWithLimits(executor, command, kind, timeoutSeconds, opts);
  }

  const message = outcome.message.length > MAX_MESSAGE_CHARS ? `${outcome.message.slice(0, MAX_MESSAGE_CHARS)}…` : outcome.message;
  return create(CommandResultSchema, {
    commandId: command.id,
    outcome: outcome.outcome,
    message,
    startTime: timestampFromDate(startTime),
    finishTime: timestampFromDate(new Date()),
    sequence: command.sequence,
    detail: outcome.detail ?? { case: undefined },
  });
}

async function runWithLimits(
  executor: Executor,
  command: Command,
  kind: ActionKind,
  timeoutSeconds: number,
  opts: ExecuteOptions,
): Promise<ExecutorOutcome> {
  const controller = new AbortController();
  let reason: ExecutorOutcome | undefined;
  let wake!: () => void;
  const limited = new Promise<void>((resolve) => (wake = resolve));
  const abort = (why: ExecutorOutcome) => {
    reason ??= why;
    controller.abort();
    wake();
  };
  const timer = setTimeout(
    () => abort({ outcome: CommandOutcome.FAILED, message: `${kindName(kind)} timed out after ${timeoutSeconds}s` }),
    timeoutSeconds * 1000,
  );
  const onStop = () => abort({ outcome: CommandOutcome.FAILED, message: "agent stopped before the command finished" });
  if (opts.stopSignal?.aborted) onStop();
  else opts.stopSignal?.addEventListener("abort", onStop, { once: true });

  try {
    const run = Promise.resolve()
      .then(() =>
        executor({
          command,
          signal: controller.signal,
          deadline: Date.now() + timeoutSeconds * 1000,
          agentConfig: opts.agentConfig,
          aptRefresh: opts.aptRefresh,
          breakers: opts.breakers ?? createBreakers(),
          locks: opts.locks ?? createSourceLocks(),
          heartbeat: opts.heartbeat ?? createHeartbeat(),
          automatic: opts.automatic ?? false,
          env: opts.env,
          host: opts.host,
          logger: opts.logger,
          pins: opts.pins ?? new Map(),
          installDir: opts.installDir,
          stateDir: opts.stateDir,
          hooksDir: opts.hooksDir,
          onTrial: opts.onTrial,
          server: opts.server,
          requestRestart: opts.requestRestart ?? (() => {}),
        }),
      )
      .catch((err: unknown): ExecutorOutcome => {
        opts.logger.error({ err, commandId: command.id, kind }, "executor failed");
        return { outcome: CommandOutcome.FAILED, message: `${kindName(kind)} failed: ${(err as Error)?.message ?? String(err)}` };
      });
    // An executor that ignores its signal cannot hold the agent past the limit; the children it
    // started were given the signal and are killed with it.
    return await Promise.race([run, limited.then(() => reason!)]);
  } finally {
    clearTimeout(timer);
    opts.stopSignal?.removeEventListener("abort", onStop);
  }
}

import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, RebootResultSchema } from "@redflag/gen/command_pb";
import { runProcess, tail, which } from "../run-process.ts";
import { createHostAccess } from "../platform.ts";
import { rebootRequired, type RebootState } from "../system.ts";
import { defaultHooksDir, rememberPostHook, runHook } from "./reboot-hooks.ts";
import type { Executor, ExecutorOutcome } from "./types.ts";

// The restart is always at least a minute away, so the agent can journal and report the
// result before the host goes down.
const MIN_DELAY_SECONDS = 60;
const MAX_DELAY_SECONDS = 7 * 86_400;
const MAX_MESSAGE_CHARS = 200;

export interface RebootPlan {
  argv: string[];
  delaySeconds: number;
}

// How to schedule a restart on this platform; null when the agent does not know how.
export function rebootPlan(platform: NodeJS.Platform, tool: string, delaySeconds: number, message: string): RebootPlan | null {
  const delay = Math.max(MIN_DELAY_SECONDS, delaySeconds);
  if (platform === "win32") {
    const argv = [tool, "/r", "/t", String(delay), "/d", "p:0:0"];
    return { argv: message ? [...argv, "/c", message] : argv, delaySeconds: delay };
  }
  if (platform === "linux" || platform === "darwin" || platform === "freebsd") {
    // shutdown(8) counts in whole minutes.
    const minutes = Math.ceil(delay / 60);
    return { argv: message ? [tool, "-r", `+${minutes}`, message] : [tool, "-r", `+${minutes}`], delaySeconds: minutes * 60 };
  }
  return null;
}

type RebootCheck = () => Promise<RebootState>;

export interface RebootOptions {
  // Whom a hook may belong to (tests run as a user, not root); root and the agent's user by default.
  trustedOwner?: (uid: number) => boolean;
}

// `check` says whether the host needs a reboot (tests give their own); by default the host's own
// flags (system.ts). A pre-hook runs right before the restart is scheduled and a failure cancels
// it; a post-hook is kept in the state directory and run at the first start after the restart
// (reboot-hooks.ts), its outcome reported in the agent's status.
export const createReboot = (check?: RebootCheck, options: RebootOptions = {}): Executor => async (ctx): Promise<ExecutorOutcome> => {
  if (ctx.command.action.case !== "reboot") throw new Error("not a reboot command");
  const { delaySeconds, message, force, preHook, postHook, hookTimeoutSeconds } = ctx.command.action.value;
  if (delaySeconds > MAX_DELAY_SECONDS) {
    return { outcome: CommandOutcome.FAILED, message: `reboot delay ${delaySeconds}s is above the 7-day limit` };
  }
  // eslint-disable-next-line no-control-regex
  if (message.length > MAX_MESSAGE_CHARS || /[\u0000-\u001f\u007f]/.test(message) || message.startsWith("-")) {
    return { outcome: CommandOutcome.FAILED, message: `reboot message must be at most ${MAX_MESSAGE_CHARS} printable characters and not start with "-"` };
  }
  const required = await (check ?? (() => rebootRequired(ctx.host ?? createHostAccess(ctx.env), ctx.signal)))();
  const notNeeded = (why: string) => ({
    outcome: CommandOutcome.SUCCEEDED,
    message: why,
    detail: { case: "reboot" as const, value: create(RebootResultSchema, { scheduled: false, wasRequired: false }) },
  });
  if (!required.required && !force) {
    return notNeeded(
      required.unknown
        ? `cannot tell whether a reboot is needed (${required.unknown}); nothing scheduled (use force to reboot anyway)`
        : "no reboot needed; nothing scheduled (use force to reboot anyway)",
    );
  }

  const windows = process.platform === "win32";
  // On Windows the one in System32 (the agent runs as SYSTEM: a shutdown.exe earlier on PATH
  // must not run in its stead).
  const tool = windows
    ? path.win32.join(ctx.env.SystemRoot ?? "C:\\Windows", "System32", "shutdown.exe")
    : await which("shutdown", ctx.env.PATH ?? "");
  if (!tool) return { outcome: CommandOutcome.FAILED, message: "cannot reboot: shutdown is not available on this host" };
  const plan = rebootPlan(process.platform, tool, delaySeconds, message);
  if (!plan) return { outcome: CommandOutcome.FAILED, message: `reboot is not supported on ${process.platform}` };
  if (postHook && !ctx.stateDir) return { outcome: CommandOutcome.FAILED, message: "cannot keep a post-reboot hook: this agent has no state directory" };

  const hooksDir = ctx.hooksDir ?? defaultHooksDir(ctx.env);
  let preHookOutcome = "";
  if (preHook) {
    const hook = await runHook(preHook, { dir: hooksDir, timeoutSeconds: hookTimeoutSeconds, phase: "pre", commandId: ctx.command.id, signal: ctx.signal, env: ctx.env, ...options });
    preHookOutcome = hook.message;
    if (!hook.ok) {
      return {
        outcome: CommandOutcome.FAILED,
        message: `reboot cancelled, the pre-hook did not succeed: ${hook.message}`,
        detail: { case: "reboot", value: create(RebootResultSchema, { scheduled: false, wasRequired: required.required, preHookOutcome }) },
      };
    }
  }

  const res = await runProcess(plan.argv, { env: ctx.env, signal: ctx.signal, timeoutMs: 30_000 });
  if (res.exitCode !== 0) {
    const why = res.spawnError?.message ?? (tail(res.stderr.trim() || res.stdout.trim(), 300) || `exit status ${res.exitCode}`);
    return { outcome: CommandOutcome.FAILED, message: `could not schedule the reboot: ${why}` };
  }
  const at = Date.now() + plan.delaySeconds * 1000;
  // This reboot replaces what the last one left to do after its restart.
  let kept = "";
  if (ctx.stateDir) {
    kept = await rememberPostHook(ctx.stateDir, postHook ? { commandId: ctx.command.id, name: postHook, timeoutSeconds: hookTimeoutSeconds, scheduledAt: Date.now() } : undefined).then(
      () => (postHook ? `; post-hook ${postHook} runs after the restart` : ""),
      (err: unknown) => (postHook ? `; the post-hook ${postHook} could not be kept and will not run: ${(err as Error).message}` : ""),
    );
  }
  const because = required.required
    ? `required${required.by.length ? ` by ${required.by.slice(0, 5).join(", ")}` : ""}`
    : "forced";
  return {
    outcome: CommandOutcome.SUCCEEDED,
    message: `reboot scheduled for ${new Date(at).toISOString()} (${because})${preHook ? `; pre-hook ${preHook} ${preHookOutcome}` : ""}${kept}`,
    detail: {
      case: "reboot",
      value: create(RebootResultSchema, { scheduled: true, rebootTime: timestampFromMs(at), wasRequired: required.required, preHookOutcome }),
    },
  };
};

export const reboot = createReboot();

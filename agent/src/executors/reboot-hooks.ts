import { lstat, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { HOOK_NAME, HOOK_NAME_RULE, hookTimeoutSeconds } from "@redflag/common/reboot-hooks";
import { windowsDir } from "../platform.ts";
import { runProcess, tail } from "../run-process.ts";

// Reboot hooks. A Reboot command names a hook; the agent runs only an executable of that name in
// its hooks directory, which the host's owner fills (root on POSIX): an operator picks among
// what root put there and cannot run anything else. Like sudo with its files, a hook is refused
// unless it is a regular file (not a symlink), executable, owned by root or the agent's own user,
// and not writable by group or others; the directory must not be writable by group or others
// either. A hook runs without a shell, with a minimal environment, within its time limit.

export const DEFAULT_HOOKS_DIR = "/etc/redflag-agent/hooks";
export const DEFAULT_HOOKS_DIR_MACOS = "/Library/Application Support/RedFlag/hooks";

// The default hooks directory on this OS.
export function defaultHooksDir(env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): string {
  if (platform === "win32") return `${windowsDir(env.ProgramData ?? env.PROGRAMDATA, "C:\\ProgramData")}\\RedFlag\\hooks`;
  if (platform === "darwin") return DEFAULT_HOOKS_DIR_MACOS;
  return DEFAULT_HOOKS_DIR;
}

export interface HookOptions {
  dir: string;
  // Hook_timeout_seconds as the command gave it (0: the default).
  timeoutSeconds: number;
  // "pre" or "post", and the reboot command: handed to the hook in its environment.
  phase: "pre" | "post";
  commandId: string;
  signal?: AbortSignal | undefined;
  // Whom a hook (and its directory) may belong to; by default root and the agent's own user.
  trustedOwner?: (uid: number) => boolean;
  platform?: NodeJS.Platform;
  // The agent's environment: on Windows SystemRoot is passed on.
  env?: NodeJS.ProcessEnv;
}

export interface HookOutcome {
  ok: boolean;
  // "ok" or why not, with a bounded excerpt of what the hook printed.
  message: string;
}

const defaultTrusted = (uid: number) => uid === 0 || uid === process.getuid?.();

// Why this file or directory may not be trusted, or undefined.
async function unsafe(file: string, what: string, trusted: (uid: number) => boolean, wantFile: boolean): Promise<string | undefined> {
  let st;
  try {
    st = await lstat(file);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? `${what} does not exist` : `${what} cannot be read: ${(err as Error).message}`;
  }
  if (wantFile && !st.isFile()) return `${what} is not a regular file${st.isSymbolicLink() ? " (a symbolic link)" : ""}`;
  if (!wantFile && !st.isDirectory()) return `${what} is not a directory`;
  if ((st.mode & 0o022) !== 0) return `${what} is writable by ${st.mode & 0o002 ? "everyone" : "its group"} (mode ${(st.mode & 0o777).toString(8)}); refused`;
  if (!trusted(st.uid)) return `${what} belongs to user ${st.uid}, not root or the agent's user; refused`;
  if (wantFile && (st.mode & 0o100) === 0) return `${what} is not executable by its owner`;
  return undefined;
}

// Runs the named hook; never throws.
export async function runHook(name: string, opts: HookOptions): Promise<HookOutcome> {
  if (!HOOK_NAME.test(name)) return { ok: false, message: `"${name.slice(0, 64)}" is not a hook name: ${HOOK_NAME_RULE}` };
  const platform = opts.platform ?? process.platform;
  const file = path.join(opts.dir, name);
  if (platform === "win32") {
    // Windows: the directory's ACL is the owner's to set (like the state directory's).
    try {
      if (!(await lstat(file)).isFile()) return { ok: false, message: `hook ${file} is not a regular file` };
    } catch {
      return { ok: false, message: `hook ${file} does not exist` };
    }
  } else {
    const trusted = opts.trustedOwner ?? defaultTrusted;
    const why = (await unsafe(opts.dir, `hooks directory ${opts.dir}`, trusted, false)) ?? (await unsafe(file, `hook ${file}`, trusted, true));
    if (why) return { ok: false, message: why };
  }
  const seconds = hookTimeoutSeconds(opts.timeoutSeconds);
  const env: NodeJS.ProcessEnv = {
    PATH: platform === "win32" ? `${opts.env?.SystemRoot ?? "C:\\Windows"}\\System32` : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    REDFLAG_HOOK_PHASE: opts.phase,
    REDFLAG_REBOOT_COMMAND_ID: opts.commandId,
    ...(platform === "win32" && opts.env?.SystemRoot ? { SystemRoot: opts.env.SystemRoot } : {}),
  };
  const res = await runProcess([file], { env, signal: opts.signal, timeoutMs: seconds * 1000, maxOutputBytes: 64 * 1024 });
  const said = tail(res.stderr.trim() || res.stdout.trim(), 300);
  if (res.spawnError) return { ok: false, message: `hook ${name} could not be started: ${res.spawnError.message}` };
  if (res.timedOut) return { ok: false, message: `hook ${name} did not finish within ${seconds}s and was stopped` };
  if (res.aborted) return { ok: false, message: `hook ${name} was stopped (the command ended)` };
  if (res.exitCode !== 0) return { ok: false, message: `hook ${name} failed (${res.exitCode === null ? `signal ${res.signal}` : `exit status ${res.exitCode}`})${said ? `: ${said}` : ""}` };
  return { ok: true, message: said ? `ok: ${said}` : "ok" };
}

// ---- the post-hook, across the restart

const POST_HOOK_FILE = "post-reboot-hook.json";

export interface PostHookRecord {
  commandId: string;
  name: string;
  timeoutSeconds: number;
  // When the reboot was scheduled (ms): the hook runs at the first start after a boot later than this.
  scheduledAt: number;
  // Set once it ran.
  ran?: { ok: boolean; message: string; at: number } | undefined;
}

async function save(stateDir: string, record: PostHookRecord | undefined): Promise<void> {
  const file = path.join(stateDir, POST_HOOK_FILE);
  if (!record) return rm(file, { force: true });
  await mkdir(stateDir, { recursive: true });
  await writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

export async function readPostHook(stateDir: string): Promise<PostHookRecord | undefined> {
  try {
    const r = JSON.parse(await readFile(path.join(stateDir, POST_HOOK_FILE), "utf8")) as PostHookRecord;
    return typeof r.commandId === "string" && typeof r.name === "string" && typeof r.scheduledAt === "number" ? r : undefined;
  } catch {
    return undefined;
  }
}

// A reboot command replaces what the last one left: its post-hook to run after the restart, or
// nothing (the last one's outcome is no longer reported).
export async function rememberPostHook(stateDir: string, record: Omit<PostHookRecord, "ran"> | undefined): Promise<void> {
  await save(stateDir, record);
}

// At start: the post-hook of the last reboot, when the host has booted since it was scheduled and
// it has not run yet. Returns the record (with its outcome) to report, or undefined.
export async function runPendingPostHook(
  stateDir: string,
  opts: Omit<HookOptions, "timeoutSeconds" | "phase" | "commandId"> & { bootTime?: number },
): Promise<PostHookRecord | undefined> {
  const record = await readPostHook(stateDir);
  if (!record) return undefined;
  if (record.ran) return record;
  const bootTime = opts.bootTime ?? Date.now() - os.uptime() * 1000;
  if (bootTime <= record.scheduledAt) return undefined;
  const outcome = await runHook(record.name, { ...opts, timeoutSeconds: record.timeoutSeconds, phase: "post", commandId: record.commandId });
  const done = { ...record, ran: { ok: outcome.ok, message: outcome.message.slice(0, 500), at: Date.now() } };
  await save(stateDir, done);
  return done;
}

import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { access } from "node:fs/promises";

export interface ProcessOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  env?: NodeJS.ProcessEnv;
  // Per stream; output beyond this is dropped (and `truncated` set), the child keeps running.
  maxOutputBytes?: number;
  // Time between SIGTERM and SIGKILL when the child has to be stopped.
  killGraceMs?: number;
  // Run as this user and group (the agent must be root); Homebrew refuses to run as root.
  uid?: number | undefined;
  gid?: number | undefined;
}

export interface ProcessResult {
  // null when the child was killed by a signal or never started.
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
  truncated: boolean;
  // Set when the child could not be started at all (for example ENOENT).
  spawnError: NodeJS.ErrnoException | undefined;
  durationMs: number;
}

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;
// After the child exits, grandchildren that escaped its process group may hold the pipes open.
const PIPE_DRAIN_MS = 1000;

// Runs argv directly (never through a shell) in its own process group, so a timeout or abort
// stops the whole tree it started, not just the first process.
export function runProcess(argv: readonly string[], opts: ProcessOptions): Promise<ProcessResult> {
  const started = Date.now();
  const maxOutput = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ?? process.env,
      shell: false,
      // No console window per tool run on Windows (detached children get their own otherwise).
      windowsHide: true,
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], sizes: { stdout: 0, stderr: 0 } };
    let truncated = false;
    let timedOut = false;
    let aborted = false;
    let spawnError: NodeJS.ErrnoException | undefined;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let settled = false;
    const timers: NodeJS.Timeout[] = [];

    const collect = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      const room = maxOutput - out.sizes[stream];
      if (room <= 0) {
        truncated = true;
        return;
      }
      const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
      if (kept.length < chunk.length) truncated = true;
      out[stream].push(kept);
      out.sizes[stream] += kept.length;
    };
    child.stdout.on("data", collect("stdout"));
    child.stderr.on("data", collect("stderr"));

    const killGroup = (signal: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        // Windows has no process groups to signal (a negative PID is refused there): the child
        // itself is stopped (TerminateProcess), so a timeout still ends the run.
        if (process.platform === "win32") child.kill(signal);
        else process.kill(-child.pid, signal);
      } catch {
        // the group is already gone
      }
    };
    const stop = () => {
      killGroup("SIGTERM");
      timers.push(setTimeout(() => killGroup("SIGKILL"), opts.killGraceMs ?? 3000));
    };
    const onAbort = () => {
      aborted = true;
      stop();
    };

    const finish = () => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      opts.signal?.removeEventListener("abort", onAbort);
      // Whatever survived in the group (a child that ignored SIGTERM) goes now.
      if (timedOut || aborted) killGroup("SIGKILL");
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        stdout: Buffer.concat(out.stdout).toString("utf8"),
        stderr: Buffer.concat(out.stderr).toString("utf8"),
        timedOut,
        aborted,
        truncated,
        spawnError,
        durationMs: Date.now() - started,
      });
    };

    child.on("error", (err: NodeJS.ErrnoException) => {
      spawnError ??= err;
      if (child.pid === undefined) finish();
    });
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      timers.push(setTimeout(finish, PIPE_DRAIN_MS));
    });
    child.on("close", finish);

    timers.push(
      setTimeout(() => {
        timedOut = true;
        stop();
      }, opts.timeoutMs),
    );
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// The last lines of a child's stderr, for a result message.
export function tail(text: string, maxChars = 500): string {
  const trimmed = text.trim();
  return trimmed.length > maxChars ? `…${trimmed.slice(-maxChars)}` : trimmed;
}

// Looks an executable up on PATH the way execvp would, without running anything. On Windows
// PATH is ";"-separated and a bare name also matches with each PATHEXT extension (.exe …).
export async function which(name: string, pathEnv: string, platform: NodeJS.Platform = process.platform): Promise<string | undefined> {
  const windows = platform === "win32";
  const extensions = windows && !/\.[A-Za-z0-9]+$/.test(name) ? ["", ".exe", ".cmd", ".bat", ".com"] : [""];
  for (const dir of pathEnv.split(windows ? ";" : ":")) {
    if (!dir) continue;
    for (const ext of extensions) {
      const candidate = windows ? `${dir.replace(/[\\/]+$/, "")}\\${name}${ext}` : `${dir}/${name}${ext}`;
      try {
        await access(candidate, windows ? constants.F_OK : constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

// Why a child failed, in one line for a result message: could not start, timed out, stopped,
// or its exit status with the end of its stderr (lines matching `noise` dropped).
export function describeFailure(what: string, result: ProcessResult, noise?: RegExp): string {
  if (result.spawnError) return `${what} could not start: ${result.spawnError.message}`;
  if (result.timedOut) return `${what} timed out after ${Math.round(result.durationMs / 1000)}s`;
  if (result.aborted) return `${what} was stopped`;
  const stderr = result.stderr
    .split("\n")
    .filter((l) => l.trim() && !(noise && noise.test(l)))
    .join("\n");
  const status = result.exitCode !== null ? `exit status ${result.exitCode}` : `signal ${result.signal}`;
  return `${what} failed (${status})${stderr ? `: ${tail(stderr, 300)}` : ""}`;
}

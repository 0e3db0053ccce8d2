// What the agent reads about its host beyond Node's `os` module: files, the few system tools it
// runs by absolute path (reg.exe on Windows, ioreg, vm_stat, sysctl and mount on macOS) and
// statfs. Behind one interface so the Windows and macOS paths run in tests on Linux, against
// fakes of those tools that print what the real ones print.
import type { BigIntStatsFs } from "node:fs";
import { readFile, statfs } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describeFailure, runProcess, type ProcessResult } from "./run-process.ts";

export type StatFs = Pick<BigIntStatsFs, "bsize" | "blocks" | "bfree" | "bavail" | "files" | "ffree">;

export interface HostAccess {
  readonly platform: NodeJS.Platform;
  // %SystemRoot% (Windows only): system tools are run from its System32, never looked up on
  // PATH, so a directory early on PATH cannot stand in for reg.exe.
  readonly systemRoot: string;
  // Runs a tool by absolute path, bounded in time and output.
  run(argv: readonly string[], signal?: AbortSignal): Promise<ProcessResult>;
  // A file's text, or undefined when it cannot be read.
  readText(file: string): Promise<string | undefined>;
  statfs(dir: string): Promise<StatFs>;
  // Node's readings, which work the same on every OS.
  readonly os: Pick<typeof os, "cpus" | "totalmem" | "freemem" | "loadavg" | "uptime" | "type" | "release" | "version" | "machine">;
}

const TOOL_TIMEOUT_MS = 15_000;
const TOOL_MAX_OUTPUT = 1024 * 1024;
const DEFAULT_SYSTEM_ROOT = "C:\\Windows";

// An absolute Windows path from the environment, or the fallback when it is missing or odd.
export function windowsDir(value: string | undefined, fallback: string): string {
  return value && /^[A-Za-z]:\\[^"<>|?*\n]*$/.test(value) ? value.replace(/\\+$/, "") : fallback;
}

export function createHostAccess(env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): HostAccess {
  return {
    platform,
    systemRoot: windowsDir(env.SystemRoot ?? env.SYSTEMROOT, DEFAULT_SYSTEM_ROOT),
    run: (argv, signal) => runProcess(argv, { timeoutMs: TOOL_TIMEOUT_MS, maxOutputBytes: TOOL_MAX_OUTPUT, signal, env }),
    readText: async (file) => {
      try {
        return await readFile(file, "utf8");
      } catch {
        return undefined;
      }
    },
    statfs: (dir) => statfs(dir, { bigint: true }),
    os,
  };
}

// The full path of a tool in %SystemRoot%\System32.
export const system32 = (host: HostAccess, tool: string) => path.win32.join(host.systemRoot, "System32", tool);

// A tool's stdout when it exited 0, otherwise why not, in one line. Windows tools end lines
// with CRLF; callers get LF only.
export async function toolOutput(host: HostAccess, argv: readonly string[], signal?: AbortSignal): Promise<{ stdout: string } | { error: string }> {
  const result = await host.run(argv, signal);
  const what = argv[0]!;
  if (result.exitCode !== 0 || result.spawnError || result.timedOut || result.aborted) return { error: describeFailure(what, result) };
  if (result.truncated) return { error: `${what} printed more than ${TOOL_MAX_OUTPUT} bytes` };
  return { stdout: result.stdout.replace(/\r\n/g, "\n") };
}

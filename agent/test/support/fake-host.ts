import os from "node:os";
import path from "node:path";
import type { HostAccess, StatFs } from "../../src/platform.ts";
import { runProcess } from "../../src/run-process.ts";
import { fakeTools, removeFakeTools, type FakeTools } from "./fake-tools.ts";

// A Windows or macOS host as the agent sees it, on Linux: the system tools it runs by absolute
// path (C:\Windows\System32\reg.exe, /usr/sbin/ioreg …) are shell scripts (fake-tools.ts) that
// print what the real tools print and fail the way they fail; a tool the fake does not have
// fails to start (ENOENT), as a missing one does. Files and statfs answer from tables.
export interface FakeHostOptions {
  platform: NodeJS.Platform;
  // Tool bodies by the absolute path the agent must run them from.
  tools?: Record<string, string>;
  // Recorded outputs the tool scripts print (see printFile in fake-tools.ts).
  outputs?: Record<string, string>;
  files?: Record<string, string>;
  // statfs answers by path; a path not listed fails with ENOENT.
  statfs?: Record<string, StatFs>;
  systemRoot?: string;
  os?: Partial<HostAccess["os"]>;
}

export interface FakeHost extends HostAccess {
  tools: FakeTools;
  // Every argv the agent ran, in order, with the absolute tool path as it asked for it.
  runs: string[][];
  remove(): Promise<void>;
}

const toolName = (file: string) => file.split(/[\\/]/).pop()!;

export async function fakeHost(opts: FakeHostOptions): Promise<FakeHost> {
  const scripts = Object.fromEntries(Object.entries(opts.tools ?? {}).map(([file, body]) => [toolName(file), body]));
  const tools = await fakeTools(`host-${opts.platform}`, scripts, opts.outputs);
  const known = new Set(Object.keys(opts.tools ?? {}));
  const runs: string[][] = [];
  return {
    platform: opts.platform,
    systemRoot: opts.systemRoot ?? "C:\\Windows",
    tools,
    runs,
    run(argv, signal) {
      runs.push([...argv]);
      const file = known.has(argv[0]!) ? path.join(tools.dir, "bin", toolName(argv[0]!)) : path.join(tools.dir, "absent", toolName(argv[0]!));
      return runProcess([file, ...argv.slice(1)], { timeoutMs: 10_000, signal, env: tools.env(true) });
    },
    readText: async (file) => opts.files?.[file],
    statfs: async (dir) => {
      const stats = opts.statfs?.[dir];
      if (!stats) throw Object.assign(new Error(`ENOENT: no such file or directory, statfs '${dir}'`), { code: "ENOENT" });
      return stats;
    },
    os: {
      cpus: os.cpus,
      totalmem: os.totalmem,
      freemem: os.freemem,
      loadavg: os.loadavg,
      uptime: os.uptime,
      type: os.type,
      release: os.release,
      version: os.version,
      machine: os.machine,
      ...opts.os,
    },
    remove: () => removeFakeTools(tools),
  };
}

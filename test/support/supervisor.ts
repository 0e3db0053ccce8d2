import { spawn, type ChildProcess } from "node:child_process";

// A service manager for tests, as systemd's Restart=always with RestartSec: runs one command,
// starts it again whenever it exits (whatever the exit code), and stops it with SIGTERM. The
// environment is read at every start, so a test can change it for the next one.
export interface Supervisor {
  env: NodeJS.ProcessEnv;
  // Exits of the command that the supervisor did not cause, in order.
  readonly exits: { code: number | null; signal: NodeJS.Signals | null }[];
  // Every line the command and its children wrote to stdout and stderr.
  readonly lines: string[];
  readonly starts: number;
  pid(): number | undefined;
  // Starts it (again, after stop()).
  start(): void;
  // SIGTERM, then waits for it to exit; it is not started again until start().
  stop(): Promise<void>;
}

export function supervise(command: string, args: string[], env: NodeJS.ProcessEnv, opts: { restartDelayMs?: number; cwd?: string } = {}): Supervisor {
  let child: ChildProcess | undefined;
  let running = false;
  let timer: NodeJS.Timeout | undefined;
  const exits: Supervisor["exits"] = [];
  const lines: string[] = [];
  let starts = 0;
  const collect = (stream: NodeJS.ReadableStream) => {
    let rest = "";
    stream.on("data", (d: Buffer) => {
      const parts = (rest + d.toString()).split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    });
  };
  const launch = () => {
    timer = undefined;
    if (!running) return;
    starts++;
    const started = spawn(command, args, { env: supervisor.env, cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    collect(started.stdout!);
    collect(started.stderr!);
    started.on("error", (err) => lines.push(`supervisor: cannot start ${command}: ${err.message}`));
    started.on("exit", (code, signal) => {
      if (child === started) child = undefined;
      if (!running) return;
      exits.push({ code, signal });
      timer = setTimeout(launch, opts.restartDelayMs ?? 200);
    });
  };
  const supervisor: Supervisor = {
    env: { ...env },
    exits,
    lines,
    get starts() {
      return starts;
    },
    pid: () => child?.pid,
    start() {
      if (running) return;
      running = true;
      launch();
    },
    async stop() {
      running = false;
      if (timer) clearTimeout(timer);
      timer = undefined;
      const current = child;
      if (!current || current.exitCode !== null || current.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        current.once("exit", () => resolve());
        current.kill("SIGTERM");
      });
    },
  };
  return supervisor;
}

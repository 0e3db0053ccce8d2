// npm start: builds the console, then runs the control plane with the agent builds in dist/agent
// published at start-up (REDFLAG_AGENT_RELEASES_DIR; `npm run build:agent` makes them).
//
// The console build's output (vite's progress and file lists) is kept back and shown only when
// the build fails, whole, with its exit code. The control plane then runs in the foreground; a
// signal sent to this script (Ctrl-C, `kill`, a service manager) reaches it too.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");

// npm runs this script with npm_execpath set to its own CLI; run npm with the same Node.
function npm(args: string[]): { command: string; args: string[] } {
  const cli = process.env.npm_execpath;
  return cli && /\.[cm]?js$/.test(cli) ? { command: process.execPath, args: [cli, ...args] } : { command: "npm", args };
}

async function buildConsole(): Promise<void> {
  const { command, args } = npm(["run", "build:console"]);
  const output: Buffer[] = [];
  const code = await new Promise<number>((resolve) => {
    const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d: Buffer) => output.push(d));
    child.stderr.on("data", (d: Buffer) => output.push(d));
    child.on("error", (err) => {
      output.push(Buffer.from(`${err.message}\n`));
      resolve(127);
    });
    child.on("close", (status, signal) => resolve(status ?? (signal ? 128 : 1)));
  });
  if (code !== 0) {
    process.stderr.write(Buffer.concat(output));
    process.stderr.write(`\nnpm start: the console build failed (npm run build:console exited with ${code}); its output is above\n`);
    process.exit(code);
  }
  process.stderr.write("npm start: built the console (console/build)\n");
}

function serve(): void {
  const env = { ...process.env, REDFLAG_AGENT_RELEASES_DIR: process.env.REDFLAG_AGENT_RELEASES_DIR || path.join(root, "dist", "agent") };
  // An 8 MB young generation: as in the Docker image (docs/benchmarks.md, "Memory").
  const child = spawn(process.execPath, ["--max-semi-space-size=8", path.join(root, "control-plane", "src", "main.ts")], { cwd: process.cwd(), env, stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => child.kill(signal));
  }
  child.on("exit", (code, signal) => process.exit(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)));
}

await buildConsole();
serve();

import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mergeResults, shares, type SimulationOptions, type SimulationResult } from "./simulator.ts";

// `bench:sim --processes K`: the agents split over K child processes (bench/sim-worker.ts), each
// with its share of the seeded plan. File descriptors are per process, so one process holds
// fewer connections than its `ulimit -n` (worker threads would not help); K processes hold K
// times as many, from one machine, each agent on its own HTTP/2 connection.

const WORKER = fileURLToPath(new URL("./sim-worker.ts", import.meta.url));

export interface WorkerMessage {
  result: SimulationResult;
  // CPU time of the worker (user + system), for the simulator's own share of the machine.
  cpuSeconds: number;
}

export async function simulateInProcesses(
  o: Omit<SimulationOptions, "share" | "onCommand">,
  processes: number,
  signal: AbortSignal,
): Promise<{ result: SimulationResult; cpuSeconds: number }> {
  // --register-concurrency bounds the Register calls of the whole fleet: each process takes its part.
  const registerConcurrency = o.registerConcurrency ? Math.ceil(o.registerConcurrency / processes) : 0;
  const runs = shares(o.agents, processes).map((share, k) => runWorker({ ...o, registerConcurrency, share }, k, signal));
  const done = await Promise.all(runs);
  return { result: mergeResults(done.map((d) => d.result)), cpuSeconds: done.reduce((total, d) => total + d.cpuSeconds, 0) };
}

function runWorker(o: Omit<SimulationOptions, "onCommand">, k: number, signal: AbortSignal): Promise<WorkerMessage> {
  return new Promise((resolve, reject) => {
    // "advanced" serialization (structured clone) keeps the error counts' Map intact.
    const child = fork(WORKER, [], { serialization: "advanced", stdio: ["ignore", "inherit", "inherit", "ipc"] });
    let answer: WorkerMessage | undefined;
    const onAbort = () => child.connected && child.send("abort");
    signal.addEventListener("abort", onAbort);
    child.on("message", (m: WorkerMessage) => (answer = m));
    child.once("spawn", () => child.send(o));
    child.once("error", reject);
    child.once("exit", (code, killedBy) => {
      signal.removeEventListener("abort", onAbort);
      if (answer) resolve(answer);
      else reject(new Error(`simulator process ${k + 1} (agents ${o.share!.from}–${o.share!.to - 1}) ended without a result (${killedBy ?? `exit code ${code}`})`));
    });
  });
}

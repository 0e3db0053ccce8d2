import { simulate, type SimulationOptions } from "./simulator.ts";
import type { WorkerMessage } from "./processes.ts";

// One of the child processes of `bench:sim --processes K` (bench/processes.ts): runs the share
// of the agents it is sent, then sends back its result and exits. "abort" from the parent, or
// Ctrl-C (which reaches the whole process group), ends the run early with the result so far.

const abort = new AbortController();
process.once("SIGINT", () => abort.abort());
process.on("message", (m: SimulationOptions | "abort") => {
  if (m === "abort") return abort.abort();
  void simulate(m, abort.signal).then((result) => {
    const cpu = process.cpuUsage();
    const answer: WorkerMessage = { result, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
    process.send!(answer, () => process.disconnect());
  });
});

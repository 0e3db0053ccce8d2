import { Command } from "commander";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { number } from "./options.ts";
import { freePort, spawnNode, stopChild, waitReady } from "./servers.ts";
import { printCommand, printMachineFacts, sampleProcess, treePssBytes } from "./stats.ts";

// Memory of the control plane on the embedded database (issue 18, item 7): starts the real server
// (control-plane/src/main.ts, with the production Node flags of `npm run serve`) on a fresh data
// directory, lets it idle, stops it, and starts it again on the same directory. Every 100 ms it
// sums VmRSS over the server and any process it started, so a helper process cannot hide memory.
const o = new Command("bench-embedded-memory")
  .description("RSS of the control plane on the embedded database: peak while starting, and idle after start, for a first start and a restart.")
  .option("--idle <seconds>", "how long the server idles after it is ready before the idle figure", number(1), 30)
  .option("--starts <n>", "starts on the same data directory (the first on a fresh one)", number(2), 2)
  .parse()
  .opts<{ idle: number; starts: number }>();

const ROOT = fileURLToPath(new URL("..", import.meta.url));
// The server runs as for the other benchmarks (bench/servers.ts spawnNode): `npm run serve`'s
// flags, plus BENCH_SERVER_NODE_ARGS (e.g. "--liftoff-only" to see what V8's optimizing compiler costs).
const SAMPLE_MS = 100;

interface StartFigures {
  readyMs: number;
  peakMb: number;
  idleMb: number;
  // What the machine spends on the server and its database process when idle (PSS: the pages
  // they share counted once).
  idlePssMb: number;
  // The server process alone: its own high-water mark (VmHWM) and its part of the idle figure.
  serverHwmMb: number;
  serverIdleMb: number;
}

printCommand();
printMachineFacts();
const dataDir = await mkdtemp(path.join(os.tmpdir(), "rfm-"));
try {
  const rows: StartFigures[] = [];
  for (let i = 0; i < o.starts; i++) rows.push(await measureStart(dataDir));
  console.log(`| start | ready after | peak RSS while starting | idle RSS ${o.idle} s after ready | idle PSS | server process alone: VmHWM / idle RSS |`);
  console.log("|---|---|---|---|---|---|");
  rows.forEach((r, i) =>
    console.log(
      `| ${i === 0 ? "first (fresh data directory)" : `restart ${i}`} | ${(r.readyMs / 1000).toFixed(1)} s | ${r.peakMb} MB | ${r.idleMb} MB | ${r.idlePssMb} MB | ${r.serverHwmMb} MB / ${r.serverIdleMb} MB |`,
    ),
  );
} finally {
  await rm(dataDir, { recursive: true, force: true });
}

async function measureStart(dir: string): Promise<StartFigures> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = performance.now();
  const child = spawnNode(path.join(ROOT, "control-plane/src/main.ts"), { REDFLAG_ADDR: `127.0.0.1:${port}`, REDFLAG_DATA_DIR: dir, REDFLAG_LOG_LEVEL: "warn" });
  let peakKb = 0;
  const sampler = setInterval(() => {
    void sampleProcess(child.pid!).then((s) => (peakKb = Math.max(peakKb, (s?.rssBytes ?? 0) / 1024)));
  }, SAMPLE_MS);
  try {
    await waitReady(url, child, 120_000);
    const readyMs = performance.now() - started;
    await new Promise((r) => setTimeout(r, o.idle * 1000));
    const idleKb = ((await sampleProcess(child.pid!))?.rssBytes ?? 0) / 1024;
    const idlePssKb = (await treePssBytes(child.pid!)) / 1024;
    const status = await readFile(`/proc/${child.pid}/status`, "utf8");
    return {
      readyMs,
      peakMb: mb(Math.max(peakKb, idleKb)),
      idleMb: mb(idleKb),
      idlePssMb: mb(idlePssKb),
      serverHwmMb: mb(statusKb(status, "VmHWM")),
      serverIdleMb: mb(statusKb(status, "VmRSS")),
    };
  } finally {
    clearInterval(sampler);
    // A clean shutdown of the embedded database (its checkpoint) may take longer than the default.
    await stopChild(child, 20_000);
  }
}

function mb(kb: number): number {
  return Math.round(kb / 1024);
}

function statusKb(status: string, field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
}

import { readdir, readFile } from "node:fs/promises";
import os from "node:os";

// mulberry32: a small seeded generator, so a run's schedule (start times, modes, jitter) is the
// same for the same --seed. Not for anything secret.
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// An interval with proportional jitter: uniformly within ±percent of it.
export function jittered(intervalMs: number, percent: number, random: () => number): number {
  return Math.max(0, intervalMs * (1 + ((random() * 2 - 1) * percent) / 100));
}

// Nearest-rank percentile of an unsorted sample; NaN when empty.
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export function summarize(samples: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  const arr = Array.from(sorted);
  return {
    count: arr.length,
    p50: percentile(arr, 50),
    p95: percentile(arr, 95),
    p99: percentile(arr, 99),
    max: arr.length ? arr[arr.length - 1]! : Number.NaN,
  };
}

export const ms = (n: number) => (Number.isFinite(n) ? `${n.toFixed(1)} ms` : "n/a");

// CPU time (user + system) and resident memory of a process, from /proc (Linux only).
export interface ProcessSample {
  cpuSeconds: number;
  rssBytes: number;
  atMs: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux (getconf CLK_TCK)

// The process and its descendants summed (on the embedded database, the control plane runs its
// database in a process of its own, which is part of its cost); undefined once pid is gone.
export async function sampleProcess(pid: number): Promise<ProcessSample | undefined> {
  const own = await sampleOne(pid);
  if (!own) return undefined;
  for (const child of await childrenOf(pid)) {
    const s = await sampleProcess(child);
    if (s) {
      own.cpuSeconds += s.cpuSeconds;
      own.rssBytes += s.rssBytes;
    }
  }
  return own;
}

async function sampleOne(pid: number): Promise<ProcessSample | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, "utf8"), readFile(`/proc/${pid}/status`, "utf8")]);
    // The command name (field 2) may contain spaces; fields after it start past the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { cpuSeconds: (utime + stime) / CLOCK_TICKS, rssBytes: rssKb * 1024, atMs: performance.now() };
  } catch {
    return undefined;
  }
}

async function childrenOf(pid: number): Promise<number[]> {
  try {
    return (await readFile(`/proc/${pid}/task/${pid}/children`, "utf8")).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

// The proportional set size of pid and its descendants: RSS counts the pages processes share
// (the node binary's code, mapped by the server and its database process) once in each, PSS
// divides them among the sharers, so a tree's PSS is what the machine spends on it.
export async function treePssBytes(pid: number): Promise<number> {
  let bytes: number;
  try {
    bytes = Number(/^Pss:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
  for (const child of await childrenOf(pid)) bytes += await treePssBytes(child);
  return bytes;
}

// How many file descriptors a process has open (Linux: /proc), e.g. one per connection a server holds.
export async function openFileDescriptors(pid: number): Promise<number | undefined> {
  try {
    return (await readdir(`/proc/${pid}/fd`)).length;
  } catch {
    return undefined;
  }
}

// Samples a process every second; reports its CPU share over the window and its peak RSS.
export function watchProcess(pid: number | undefined) {
  let first: ProcessSample | undefined;
  let last: ProcessSample | undefined;
  let peakRss = 0;
  const take = async () => {
    if (pid === undefined) return;
    const s = await sampleProcess(pid);
    if (!s) return;
    first ??= s;
    last = s;
    peakRss = Math.max(peakRss, s.rssBytes);
  };
  const timer = setInterval(() => void take(), 1000);
  timer.unref();
  void take();
  return {
    async stop() {
      clearInterval(timer);
      await take();
      if (!first || !last || last.atMs === first.atMs) return undefined;
      return {
        // Share of one core: 1.0 is one core fully busy.
        cpuCores: (last.cpuSeconds - first.cpuSeconds) / ((last.atMs - first.atMs) / 1000),
        rssMb: last.rssBytes / 1024 / 1024,
        peakRssMb: peakRss / 1024 / 1024,
      };
    },
  };
}

export type ServerUsage = Awaited<ReturnType<ReturnType<typeof watchProcess>["stop"]>>;

export function formatUsage(u: ServerUsage): string {
  if (!u) return "server CPU/RSS: not measured (no server PID)";
  return `server CPU ${(u.cpuCores * 100).toFixed(0)} % of one core, RSS ${u.rssMb.toFixed(0)} MB (peak ${u.peakRssMb.toFixed(0)} MB)`;
}

export function machineFacts() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg().map((n) => n.toFixed(2)).join(" "),
  };
}

export function printMachineFacts() {
  const m = machineFacts();
  console.log(`machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, load average at start ${m.loadAverage}`);
}

export function printCommand() {
  console.log(`command: ${["node", ...process.argv.slice(1).map((a, i) => (i === 0 ? a.replace(process.cwd() + "/", "") : a))].join(" ")}`);
}

// The control plane's own view of one RPC's latency: its redflag_rpc_duration_seconds
// histogram (code ok) read from /metrics, so a busy load generator cannot inflate it. A
// snapshot's buckets are cumulative counts by upper bound in seconds.
export type HistogramSnapshot = Map<number, number>;

// The control plane's /metrics text. Loopback callers need no token; from another machine (a
// simulator of a multi-machine run) REDFLAG_METRICS_TOKEN is sent as the server expects it.
// Refused (403 without the token): an error, so the server-side figures are left out.
export async function fetchMetrics(url: string, token = process.env.REDFLAG_METRICS_TOKEN): Promise<string> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000), headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!res.ok) throw new Error(`${url}/metrics answered ${res.status}`);
  return res.text();
}

// One unlabelled sample from /metrics text, e.g. metricSample(text, "redflag_long_polls_waiting"); 0 if absent.
export function metricSample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

// One AgentService method's histogram (code ok) from /metrics text.
export function rpcHistogram(text: string, method: string): HistogramSnapshot {
  const out: HistogramSnapshot = new Map();
  const re = new RegExp(`^redflag_rpc_duration_seconds_bucket\\{le="([^"]+)",service="redflag\\.v1\\.AgentService",method="${method}",code="ok"\\} (\\d+)$`, "gm");
  for (const m of text.matchAll(re)) out.set(m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2]));
  return out;
}

// Quantiles of the calls between two snapshots, as bucket upper bounds ("≤ 5 ms").
// `upTo`: only the calls that took at most that many seconds (a bucket bound).
export function histogramQuantiles(before: HistogramSnapshot, after: HistogramSnapshot, qs: number[], upTo = Infinity): { count: number; bounds: number[] } {
  const bounds = [...after.keys()].filter((b) => b <= upTo).sort((a, b) => a - b);
  const counts = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = counts.at(-1) ?? 0;
  return {
    count: total,
    bounds: qs.map((q) => bounds[counts.findIndex((c) => c >= q * total)] ?? NaN),
  };
}

export const bound = (seconds: number) => (Number.isFinite(seconds) ? `≤ ${+(seconds * 1000).toFixed(1)} ms` : "> 60 s");

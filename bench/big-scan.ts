import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandState } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { Command } from "commander";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { registerAgent, runAgent } from "../agent/src/index.ts";
import { silentLogger } from "../agent/src/log.ts";
import { integer } from "./options.ts";
import { startControlPlane, type BenchControlPlane } from "./servers.ts";
import { ms, printCommand, printMachineFacts, sampleProcess, summarize } from "./stats.ts";

// Benchmark 5: one host reporting a huge scan (issue 13, item 2). The real agent (its APT
// scanner on a stand-in `apt` that lists the updates, its executor and its reporting: parts of
// 1,000 updates) reports a scan of --updates updates to a real control plane (a child process);
// then the same scan again with --changed updates offered in a new version. Meanwhile an admin
// reads the agent and the fleet's updates every 50 ms (and for 5 s before, with nothing else
// going on). Prints the control plane's RSS before, at its peak (sampled every 100 ms) and 5 s
// after each scan, how long the agent took to report, and the admin reads' latency and failures.
const o = new Command("bench-scan")
  .description("Benchmark 5: the control plane's memory and responsiveness while one agent reports a huge scan in parts.")
  .option("--updates <n>", "updates in the scan", integer(1), 100_000)
  .option("--changed <n>", "updates offered in a new version in the second scan", integer(0), 100)
  .option("--database-url <url>", "also run on a fresh database on this PostgreSQL server (default: DATABASE_URL or TEST_DATABASE_URL)")
  .option("--no-embedded", "skip the embedded PGlite run")
  .parse()
  .opts<{ updates: number; changed: number; databaseUrl?: string; embedded: boolean }>();
const postgresUrl = o.databaseUrl ?? process.env.DATABASE_URL ?? process.env.TEST_DATABASE_URL;

printCommand();
printMachineFacts();

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;

async function run(backend: "embedded" | "postgres"): Promise<string[]> {
  const cp = await startControlPlane({
    postgresUrl: backend === "postgres" ? postgresUrl : undefined,
    env: { REDFLAG_MAX_SCAN_UPDATES: String(Math.max(1000, o.updates)) },
  });
  const root = await mkdtemp(path.join(os.tmpdir(), "rfb-scan-"));
  try {
    return await measure(cp, root);
  } finally {
    await cp.stop();
    await rm(root, { recursive: true, force: true });
  }
}

async function measure(cp: BenchControlPlane, root: string): Promise<string[]> {
  const listing = path.join(root, "upgradable.txt");
  const bin = path.join(root, "bin");
  await mkdir(bin);
  await writeFile(path.join(bin, "apt"), `#!/bin/sh\n[ "$1" = list ] || exit 100\nexec /bin/cat '${listing}'\n`);
  await chmod(path.join(bin, "apt"), 0o755);
  const list = (changed: number) => {
    const lines = Array.from({ length: o.updates }, (_, i) => `pkg-${String(i).padStart(7, "0")}/bookworm ${i < changed ? "3.0" : "2.0"} amd64 [upgradable from: 1.0]`);
    return writeFile(listing, `Listing...\n${lines.join("\n")}\n`);
  };

  const stateDir = path.join(root, "state");
  const seed = randomBytes(8).toString("hex");
  const { agentId } = await registerAgent({ stateDir, serverUrl: cp.url, token: await cp.registrationToken(1), machineIdSeed: seed, logger: silentLogger });
  const transport = createConnectTransport({
    baseUrl: cp.url,
    httpVersion: "1.1",
    interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${cp.adminKey}`), next(req))],
  });
  const fleet = createClient(FleetService, transport);
  const updates = createClient(UpdateService, transport);
  const rows: string[] = [];

  // The admin's two reads, every 50 ms until `done()`: latencies of those that succeeded, failures by code.
  const adminCalls = async (done: () => boolean) => {
    const latencies: number[] = [];
    const failures = new Map<string, number>();
    while (!done()) {
      const t0 = performance.now();
      try {
        await Promise.all([fleet.getAgent({ agentId }), updates.listUpdates({ pageSize: 50 })]);
        latencies.push(performance.now() - t0);
      } catch (err) {
        const key = String((err as { code?: unknown }).code ?? err);
        failures.set(key, (failures.get(key) ?? 0) + 1);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return { latencies, failures };
  };

  const scan = async (label: string, changed: number) => {
    await list(changed);
    // The same reads with nothing else going on, for comparison.
    const idleUntil = performance.now() + 5000;
    const idle = summarize((await adminCalls(() => performance.now() > idleUntil)).latencies);
    const id = (await cp.commands.createCommand({ agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } })).command!.id;
    const before = (await sampleProcess(cp.pid))!.rssBytes;
    let peak = before;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        const s = await sampleProcess(cp.pid);
        if (s) peak = Math.max(peak, s.rssBytes);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const admin = adminCalls(() => done);
    const t0 = performance.now();
    await runAgent({ stateDir, machineIdSeed: seed, once: true, aptRefresh: false, longPollSeconds: 0, logger: silentLogger, env: { ...process.env, PATH: bin } });
    const seconds = (performance.now() - t0) / 1000;
    done = true;
    const [, { latencies, failures }] = await Promise.all([sampler, admin]);
    const command = (await cp.commands.getCommand({ id })).command!;
    if (command.state !== CommandState.SUCCEEDED) throw new Error(`the scan ended ${CommandState[command.state]}: ${command.result?.message}`);
    const total = (await updates.listUpdates({ pageSize: 1, filter: { agentIds: [agentId] } })).total;
    await new Promise((r) => setTimeout(r, 5000));
    const after = (await sampleProcess(cp.pid))!.rssBytes;
    const l = summarize(latencies);
    const failed = [...failures].map(([k, n]) => `${n} × ${k}`).join(", ") || "none";
    rows.push(
      `| ${cp.backend} | ${label} | ${o.updates} | ${total} | ${seconds.toFixed(1)} s | ${mb(before)} | ${mb(peak)} | ${mb(after)} | ${ms(idle.p50)} / ${ms(idle.p99)} | ${latencies.length} | ${ms(l.p50)} | ${ms(l.p99)} | ${ms(l.max)} | ${failed} |`,
    );
    console.log(rows.at(-1));
  };

  await scan("first scan (all new)", 0);
  await scan(`same scan, ${o.changed} changed`, o.changed);
  return rows;
}

console.log(`updates per scan: ${o.updates}; agents send parts of at most 1,000`);
console.log("| backend | scan | updates | in the view | agent reported in | server RSS before | peak | 5 s after | admin reads idle p50 / p99 | admin reads during | p50 | p99 | max | failed |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
const backends: ("embedded" | "postgres")[] = [...(o.embedded ? (["embedded"] as const) : []), ...(postgresUrl ? (["postgres"] as const) : [])];
for (const backend of backends) await run(backend);

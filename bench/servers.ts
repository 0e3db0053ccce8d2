import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { TokenService } from "@redflag/gen/token_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { scratchPostgres } from "../control-plane/test/support/database.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

export interface ChildServer {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export interface BenchControlPlane extends ChildServer {
  backend: "embedded" | "postgres";
  adminKey: string;
  tokens: ReturnType<typeof createClient<typeof TokenService>>;
  commands: ReturnType<typeof createClient<typeof CommandService>>;
  registrationToken(seats: number): Promise<string>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function waitReady(url: string, child: ChildProcess, timeoutMs: number, probe = "/readyz") {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the server exited with code ${child.exitCode} during start-up`);
    try {
      // The control plane's /readyz, not /healthz: its listener answers /healthz while the database
      // is still being opened and migrated, before the admin key file exists.
      if ((await fetch(`${url}${probe}`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the server at ${url} was not ready (${probe}) within ${timeoutMs} ms`);
}

// SIGTERM, then SIGKILL after `killAfterMs`.
export function stopChild(child: ChildProcess, killAfterMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

// As `npm run serve` and the Docker image run the control plane.
const SERVER_NODE_FLAGS = ["--max-semi-space-size=8"];

export function spawnNode(script: string, env: Record<string, string>): ChildProcess {
  // process.execPath is the pinned Node 24 when run through npm scripts. The servers (the echo
  // floor too, so both are alike) get the control plane's production flags; BENCH_SERVER_NODE_ARGS
  // adds more or overrides them (the last of a flag wins), e.g. "--cpu-prof --cpu-prof-dir=prof"
  // for a profile, or a larger "--max-semi-space-size=…" to compare with V8's own sizing.
  const nodeArgs = [...SERVER_NODE_FLAGS, ...(process.env.BENCH_SERVER_NODE_ARGS ?? "").split(/\s+/).filter(Boolean)];
  const child = spawn(process.execPath, [...nodeArgs, script], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  // BENCH_SERVER_LOG=file keeps the server's own (warn and above) log lines.
  if (process.env.BENCH_SERVER_LOG) child.stdout!.pipe(createWriteStream(process.env.BENCH_SERVER_LOG, { flags: "a" }));
  else child.stdout!.resume();
  child.stderr!.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  child.once("exit", (code, signal) => {
    if (code && code !== 0 && signal === null) process.stderr.write(`${path.basename(script)} exited with ${code}: ${stderr}\n`);
  });
  return child;
}


// The real control plane (control-plane/src/main.ts) as a child process on a loopback port, with
// a fresh data directory and either the embedded database or a fresh database on `postgresUrl`.
export async function startControlPlane(opts: { postgresUrl?: string | undefined; env?: Record<string, string> } = {}): Promise<BenchControlPlane> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "rfb-"));
  const db = opts.postgresUrl ? await scratchPostgres(opts.postgresUrl, "redflag_bench") : undefined;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawnNode(path.join(ROOT, "control-plane/src/main.ts"), {
    REDFLAG_ADDR: `127.0.0.1:${port}`,
    REDFLAG_DATA_DIR: dataDir,
    REDFLAG_LOG_LEVEL: "warn",
    // Every simulated agent comes from 127.0.0.1 and shares one token, so the per-address and
    // per-token Register/Renew limits (meant for a real fleet) would measure only themselves.
    // Pass them in `env` to benchmark the limits.
    REDFLAG_REGISTER_RATE_PER_ADDRESS: "0",
    REDFLAG_REGISTER_RATE_PER_TOKEN: "0",
    REDFLAG_RENEW_RATE_PER_ADDRESS: "0",
    ...(db ? { DATABASE_URL: db.url } : {}),
    ...opts.env,
  });
  const cleanup = async () => {
    await stopChild(child);
    await db?.drop();
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await waitReady(url, child, 60_000);
  } catch (err) {
    await cleanup();
    throw err;
  }
  const adminKey = (await readFile(path.join(dataDir, "admin.key"), "utf8")).trim();
  const transport = createConnectTransport({
    baseUrl: url,
    httpVersion: "1.1",
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${adminKey}`);
        return next(req);
      },
    ],
  });
  const tokens = createClient(TokenService, transport);
  return {
    url,
    pid: child.pid!,
    backend: db ? "postgres" : "embedded",
    adminKey,
    tokens,
    commands: createClient(CommandService, transport),
    registrationToken: async (seats) => (await tokens.createRegistrationToken({ seats, note: "bench" })).secret,
    stop: cleanup,
  };
}

// The floor: a bare connect-node server (bench/echo-server.ts) on the control plane's own
// listener code, answering PollCommands with an empty response and nothing else.
export async function startEchoServer(): Promise<ChildServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawnNode(path.join(ROOT, "bench/echo-server.ts"), { BENCH_ECHO_PORT: String(port) });
  try {
    await waitReady(url, child, 30_000, "/healthz");
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { url, pid: child.pid!, stop: () => stopChild(child) };
}

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome, SubsystemRunState } from "@redflag/gen/command_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import pg from "pg";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorInterceptor } from "../src/http/interceptors.ts";
import { loadConfig } from "../src/config.ts";
import { metricsAccess } from "../src/http/probes.ts";
import { checkReadiness } from "../src/store/observability.ts";
import { generateKeyPair } from "../src/signing/keys.ts";
import { newRegistrationToken, nonce, randomMachineId, registerRequest, registerTestAgent } from "./support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// The value of one sample in Prometheus text format, e.g. sample(text, 'redflag_agents{health="online"}').
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const rpc = (service: string, method: string, code: string) =>
  `redflag_rpc_requests_total{service="redflag.v1.${service}",method="${method}",code="${code}"}`;

describe("observability", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_LAST_SEEN_FLUSH_MS: "10" });
  });
  afterAll(async () => {
    await cp?.close();
  });

  const scrape = async () => {
    const res = await fetch(`${cp.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return res.text();
  };

  it("exposes agents by health, queue depth, deliveries, results and signatures", async () => {
    const token = await newRegistrationToken(cp);
    const agent = await registerTestAgent(cp, token);
    await registerTestAgent(cp, token); // never polls
    await agent.client.pollCommands({ nonce: nonce() });
    await cp.app.lastSeen.flush();
    const queued = (await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } })).command!;

    const first = await scrape();
    expect(sample(first, 'redflag_agents{health="online"}')).toBe(1);
    expect(sample(first, 'redflag_agents{health="never_reported"}')).toBe(1);
    expect(sample(first, 'redflag_agents{health="offline"}')).toBe(0);
    expect(sample(first, 'redflag_agents{health="stale"}')).toBe(0);
    expect(sample(first, 'redflag_agents{health="decommissioned"}')).toBe(0);
    expect(sample(first, "redflag_command_queue_depth")).toBe(1);
    expect(sample(first, "redflag_command_deliveries_total")).toBe(0);
    // The key set the control plane signs at start-up.
    expect(sample(first, 'redflag_signatures_total{kind="key_set"}')).toBeGreaterThanOrEqual(1);
    expect(sample(first, 'redflag_db_pool_connections{state="total"}')).toBeGreaterThanOrEqual(1);
    expect(sample(first, 'redflag_db_pool_connections{state="waiting"}')).toBeGreaterThanOrEqual(0);
    expect(sample(first, rpc("AgentService", "Register", "ok"))).toBe(2);
    expect(sample(first, rpc("AgentService", "PollCommands", "ok"))).toBe(1);
    // The first poll found nothing, with (the pending index was trusted) or without a query.
    expect((sample(first, 'redflag_poll_claims_total{result="skipped"}') ?? 0) + (sample(first, 'redflag_poll_claims_total{result="empty"}') ?? 0)).toBe(1);
    expect(sample(first, "redflag_pending_index_agents")).toBe(1);
    expect(first).toContain('redflag_rpc_duration_seconds_bucket{le="0.005",service="redflag.v1.AgentService",method="PollCommands",code="ok"}');
    // prom-client's default process metrics.
    expect(first).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(first).toMatch(/^nodejs_eventloop_lag_seconds /m);

    const poll = await agent.client.pollCommands({ nonce: nonce() });
    expect(poll.commands).toHaveLength(1);
    const report = await agent.client.reportResults({
      results: [
        {
          commandId: queued.id,
          outcome: CommandOutcome.SUCCEEDED,
          message: "no updates",
          detail: { case: "scanUpdates", value: { updates: [], subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: 0 }] } },
        },
      ],
    });
    expect(report.acknowledgedCommandIds).toEqual([queued.id]);

    const second = await scrape();
    expect(sample(second, "redflag_command_deliveries_total")).toBe(1);
    expect(sample(second, "redflag_command_results_total")).toBe(1);
    expect(sample(second, 'redflag_signatures_total{kind="command"}')).toBe(1);
    expect(sample(second, rpc("AgentService", "PollCommands", "ok"))).toBe(2);
    expect(sample(second, rpc("AgentService", "ReportResults", "ok"))).toBe(1);
    expect(sample(second, 'redflag_poll_claims_total{result="delivered"}')).toBe(1);
    expect(sample(second, "redflag_pending_index_agents")).toBe(0);

    // With nothing queued, an idle poll answers from the index without a claim query.
    const deadline = Date.now() + 15_000;
    while (sample(await scrape(), "redflag_pending_index_synced") !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const skipped = sample(await scrape(), 'redflag_poll_claims_total{result="skipped"}') ?? 0;
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
    expect(sample(await scrape(), 'redflag_poll_claims_total{result="skipped"}')).toBe(skipped + 1);
  });

  it("counts a refused call under its Connect code", async () => {
    const anon = createClient(FleetService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
    const before = sample(await scrape(), rpc("FleetService", "ListAgents", "unauthenticated")) ?? 0;
    await expect(anon.listAgents({})).rejects.toMatchObject({ code: Code.Unauthenticated });
    const text = await scrape();
    expect(sample(text, rpc("FleetService", "ListAgents", "unauthenticated"))).toBe(before + 1);
    expect(sample(text, `redflag_rpc_duration_seconds_count{service="redflag.v1.FleetService",method="ListAgents",code="unauthenticated"}`)).toBe(before + 1);
  });

  it("echoes a well-formed x-request-id and generates one otherwise", async () => {
    const call = (headers: Record<string, string>) =>
      fetch(`${cp.url}/redflag.v1.FleetService/ListAgents`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: "{}",
      });
    const ok = await call({ authorization: `Bearer ${cp.adminKey}`, "x-request-id": "trace-0123456789abcdef" });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("x-request-id")).toBe("trace-0123456789abcdef");

    // Errors carry it too.
    const refused = await call({ "x-request-id": "trace-fedcba9876543210" });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("x-request-id")).toBe("trace-fedcba9876543210");

    const generated = await call({ authorization: `Bearer ${cp.adminKey}` });
    expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    const malformed = await call({ authorization: `Bearer ${cp.adminKey}`, "x-request-id": "bad id with spaces<script>" });
    expect(malformed.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("answers /healthz and /readyz", async () => {
    const health = await fetch(`${cp.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe("ok\n");
    const ready = await fetch(`${cp.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true });
  });

  it("requires the metrics token when one is set", async () => {
    const token = "0123456789abcdef0123456789abcdef";
    const guarded = await startTestControlPlane({ REDFLAG_METRICS_TOKEN: token });
    try {
      const none = await fetch(`${guarded.url}/metrics`);
      expect(none.status).toBe(401);
      expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect((await fetch(`${guarded.url}/metrics`, { headers: { authorization: "Bearer wrong-token-wrong-token" } })).status).toBe(401);
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("redflag_rpc_requests_total");
      // The probes stay open.
      expect((await fetch(`${guarded.url}/readyz`)).status).toBe(200);
    } finally {
      await guarded.close();
    }
  });
});

describe("metrics access", () => {
  it("serves loopback callers without a token and nobody else", () => {
    expect(metricsAccess("127.0.0.1", undefined, undefined)).toBe("allowed");
    expect(metricsAccess("::1", undefined, undefined)).toBe("allowed");
    expect(metricsAccess("::ffff:127.0.0.1", undefined, undefined)).toBe("allowed");
    expect(metricsAccess("192.168.1.20", undefined, undefined)).toBe("forbidden");
    expect(metricsAccess(undefined, undefined, undefined)).toBe("forbidden");
  });

  it("with a token, requires it from every caller", () => {
    const token = "0123456789abcdef0123456789abcdef";
    expect(metricsAccess("192.168.1.20", `Bearer ${token}`, token)).toBe("allowed");
    expect(metricsAccess("127.0.0.1", undefined, token)).toBe("unauthenticated");
    expect(metricsAccess("127.0.0.1", `Bearer ${token}x`, token)).toBe("unauthenticated");
    expect(metricsAccess("127.0.0.1", token, token)).toBe("unauthenticated");
  });

  it("validates REDFLAG_METRICS_TOKEN once with the rest of the config", () => {
    expect(() => loadConfig({ REDFLAG_METRICS_TOKEN: "short" })).toThrow(/REDFLAG_METRICS_TOKEN must be 16 to 256/);
    expect(loadConfig({ REDFLAG_METRICS_TOKEN: "a".repeat(32) }).metricsToken).toBe("a".repeat(32));
    expect(loadConfig({}).metricsToken).toBeUndefined();
  });
});

describe("readiness", () => {
  it("is not ready when the database is unreachable", async () => {
    // Nothing listens on port 1.
    const pool = new pg.Pool({ host: "127.0.0.1", port: 1, user: "postgres", database: "postgres", connectionTimeoutMillis: 1000 });
    pool.on("error", () => {});
    try {
      expect(await checkReadiness(pool, ["20261123220819_init"], 1500)).toEqual({ ready: false, reason: "the database is unreachable" });
    } finally {
      await pool.end();
    }
  });

  it("is not ready while a migration is missing, nor (on PostgreSQL) when the database refuses connections", async () => {
    const cp = await startTestControlPlane();
    const pool = cp.app.db.pool;
    try {
      expect(await checkReadiness(pool, ["20261123220819_init"], 2000)).toEqual({ ready: true });
      expect(await checkReadiness(pool, ["20261123220819_init", "29990101000000_from_the_future"], 2000)).toEqual({
        ready: false,
        reason: "1 migration not applied: 29990101000000_from_the_future",
      });
      // On PostgreSQL (TEST_DATABASE_URL) through the real endpoint; the unreachable case above
      // covers the embedded database.
      if (cp.databaseUrl) {
        // The database stops taking connections and drops the ones it has.
        const name = new URL(cp.databaseUrl).pathname.slice(1);
        const admin = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
        await admin.connect();
        try {
          await admin.query(`ALTER DATABASE "${name}" WITH ALLOW_CONNECTIONS false`);
          await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [name]);
          const res = await fetch(`${cp.url}/readyz`);
          expect(res.status).toBe(503);
          expect(await res.json()).toEqual({ ready: false, reason: "the database is unreachable" });
          await admin.query(`ALTER DATABASE "${name}" WITH ALLOW_CONNECTIONS true`);
          // And it recovers.
          await expect.poll(async () => (await fetch(`${cp.url}/readyz`)).status, { timeout: 10_000 }).toBe(200);
        } finally {
          await admin.query(`ALTER DATABASE "${name}" WITH ALLOW_CONNECTIONS true`).catch(() => {});
          await admin.end();
        }
      }
    } finally {
      await cp.close();
    }
  });
});

// The request ID reaches every line logged while serving the request, and plain HTTP routes.
describe("request IDs", () => {
  it("are on the handlers' own log lines and on plain HTTP routes' responses", async () => {
    const lines: Record<string, unknown>[] = [];
    const cp = await startTestControlPlane({}, undefined, (line) => lines.push(line));
    try {
      const token = await newRegistrationToken(cp);
      const key = generateKeyPair();
      const res = await cp.agentClient({ "x-request-id": "register-0123456789" }).register(registerRequest(token, randomMachineId(), key));
      const registered = lines.find((l) => l.msg === "agent registered");
      expect(registered).toMatchObject({ requestId: "register-0123456789", agentId: res.agentId, service: "redflag-server" });
      // Lines from outside any request carry none.
      expect(lines.find((l) => l.msg === "redflag control plane listening")).not.toHaveProperty("requestId");

      const health = await fetch(`${cp.url}/healthz`, { headers: { "x-request-id": "probe-0123456789" } });
      expect(health.headers.get("x-request-id")).toBe("probe-0123456789");
      const missing = await fetch(`${cp.url}/no/such/page.txt`);
      expect(missing.status).toBe(404);
      expect(missing.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      await cp.close();
    }
  });
});

// What a failure's log line holds.
describe("rpc logs", () => {
  it("log refused calls at warn with the request ID and Connect code, and no credentials", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "debug" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const interceptor = errorInterceptor(logger);
    const req = {
      service: { typeName: "redflag.v1.FleetService" },
      method: { name: "ListAgents" },
      header: new Headers({ "x-request-id": "req-0123456789", authorization: "Bearer secret-value" }),
      contextValues: { get: () => undefined },
    };
    const failing = interceptor(async () => {
      throw new ConnectError("missing credentials", Code.Unauthenticated);
    });
    const err = await (failing as (r: unknown) => Promise<unknown>)(req).catch((e: unknown) => e);
    expect((err as ConnectError).metadata.get("x-request-id")).toBe("req-0123456789");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, requestId: "req-0123456789", rpc: "redflag.v1.FleetService/ListAgents", code: "Unauthenticated" });
    expect(JSON.stringify(lines)).not.toContain("secret-value");
  });
});

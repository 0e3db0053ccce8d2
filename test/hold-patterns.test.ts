import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { PackageResultState } from "@redflag/gen/command_pb";
import { CommandService, CommandState } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshDatabase, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { run, startServerProcess, type ServerProcess } from "./support/processes.ts";

// Issue 13, item 1: a hold's "*" used to become ".*" in a backtracking regex, so a hold like
// "*" × 200 + "X" froze the control plane's event loop in ListUpdates (for good: the hold is
// stored) and froze agents running install_updates. Both sides run here as real processes, so
// a matcher that never returns fails the test at its deadline instead of hanging the run.
// Installing with apt needs root; these machines run the tests as root.
describe.runIf(process.getuid?.() === 0)("hostile hold patterns", () => {
  let db: FreshDatabase;
  let server: ServerProcess;
  let apt: FakeApt;
  let agentId: string;
  const env: Record<string, string> = {};
  const agentEnv: Record<string, string> = {};
  const stateDir = () => path.join(db.dataDir, "agent");

  const start = async () => {
    server = await startServerProcess(env);
    const key = (await readFile(path.join(db.dataDir, "server", "admin.key"), "utf8")).trim();
    const transport = createConnectTransport({
      baseUrl: server.url,
      httpVersion: "1.1",
      // A frozen event loop shows as a deadline, not as a test that never ends.
      defaultTimeoutMs: 20_000,
      interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${key}`), next(req))],
    });
    return {
      updates: createClient(UpdateService, transport),
      commands: createClient(CommandService, transport),
      fleet: createClient(FleetService, transport),
      tokens: createClient(TokenService, transport),
    };
  };
  let api: Awaited<ReturnType<typeof start>>;
  const stop = async () => {
    const exited = new Promise((resolve) => server.child.once("exit", resolve));
    server.child.kill("SIGTERM");
    // A process whose event loop is stuck never handles SIGTERM.
    const timer = setTimeout(() => server.child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const agentRunsOnce = async () => {
    const out = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir()], { env: agentEnv, timeoutMs: 30_000 });
    expect(out.code, out.stdout + out.stderr).toBe(0);
  };
  const healthy = async () => (await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5_000) })).status;

  beforeAll(async () => {
    db = await freshDatabase();
    Object.assign(env, { REDFLAG_DATA_DIR: path.join(db.dataDir, "server"), ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}) });
    apt = await createFakeApt(db.dataDir, {
      installed: ["openssl amd64 3.0.11-1~deb12u2", "curl amd64 7.88.1-10+deb12u14", "linux-image-6.1.0-18-amd64 amd64 6.1.76-1"],
      available: [
        "openssl amd64 3.0.15-1~deb12u1 oldstable-security",
        "curl amd64 7.88.1-10+deb12u15 oldstable-security",
        "linux-image-6.1.0-18-amd64 amd64 6.1.129-1 oldstable-security",
      ],
    });
    Object.assign(agentEnv, {
      REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
      REDFLAG_AGENT_APT_REFRESH: "0",
      REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
      PATH: `${apt.bin}:${process.env.PATH}`,
    });
    api = await start();
    const { secret } = await api.tokens.createRegistrationToken({ seats: 1 });
    const reg = await run(["agent/src/main.ts", "register", "--server", server.url, "--token", secret, "--state-dir", stateDir()], { env: agentEnv });
    expect(reg.code, reg.stderr).toBe(0);
    agentId = (await api.fleet.listAgents({})).agents[0]!.id;
    await api.commands.createCommand({ agentId, action: { case: "scanUpdates", value: { subsystems: ["apt"] } } });
    await agentRunsOnce();
  });
  afterAll(async () => {
    if (server) await stop();
    await db?.cleanup();
  });

  // "*" × 200 + "X" matches nothing here; "*" × 120 + "openssl" matches openssl alone. As
  // regexes both backtrack without end on every name they do not match.
  const NOTHING = "*".repeat(200) + "X";
  const OPENSSL = "*".repeat(120) + "openssl";

  it("lists, approves and installs around them, and the control plane keeps answering", async () => {
    await api.updates.setHold({ source: "*", name: NOTHING, reason: "hostile" });
    await api.updates.setHold({ source: "apt", name: OPENSSL, agentId, reason: "held for the audit" });

    const listing = api.updates.listUpdates({});
    expect(await healthy()).toBe(200);
    const { updates } = await listing;
    expect(updates.map((u) => [u.update!.name, u.held])).toEqual([
      ["curl", false],
      ["linux-image-6.1.0-18-amd64", false],
      ["openssl", true],
    ]);
    expect(await api.updates.approveUpdates({ selection: { all: true } })).toMatchObject({ approved: 2, held: 1 });
    const { commands } = await api.updates.installApprovedUpdates({ selection: { agentIds: [agentId] } });
    expect(commands).toHaveLength(1);
    await agentRunsOnce();
    const done = (await api.commands.getCommand({ id: commands[0]!.id })).command!;
    expect(done.state, done.result?.message).toBe(CommandState.SUCCEEDED);
    if (done.result?.detail.case !== "installUpdates") throw new Error("no install detail");
    expect(done.result.detail.value.packages.map((p) => p.name)).toEqual(["curl", "linux-image-6.1.0-18-amd64"]);
  });

  it("still answers after a restart with the holds stored", async () => {
    await stop();
    env.REDFLAG_ADDR = new URL(server.url).host;
    api = await start();
    expect(await healthy()).toBe(200);
    expect((await api.updates.listUpdates({})).updates.filter((u) => u.held).map((u) => u.update!.name)).toEqual(["openssl"]);
  });

  it("lets the agent install everything pending of a source except what they hold", async () => {
    // "Everything pending in apt" is resolved on the host: the agent matches the holds itself.
    const { command } = await api.commands.createCommand({ agentId, action: { case: "installUpdates", value: { sources: ["apt"] } } });
    await agentRunsOnce();
    const done = (await api.commands.getCommand({ id: command!.id })).command!;
    if (done.result?.detail.case !== "installUpdates") throw new Error(`no install detail: ${done.result?.message}`);
    expect(done.result.detail.value.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["openssl", PackageResultState.SKIPPED, `held by the agent config (${OPENSSL}): held for the audit`],
    ]);
    const installed = await apt.installed();
    expect(installed.get("openssl")).toBe("3.0.11-1~deb12u2");
    expect(installed.get("curl")).toBe("7.88.1-10+deb12u15");
  });
});

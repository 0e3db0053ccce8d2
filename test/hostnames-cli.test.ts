import { fromBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome, CommandSchema, SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { spawn } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, nonce, randomMachineId, registerTestAgent, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root, run } from "./support/processes.ts";

const CLI = "control-plane/src/cli/main.ts";

// A relay between the CLI and the control plane that counts the RPCs passing through, so a test
// can see how many lookups a command made.
async function countingRelay(upstream: string) {
  const calls: string[] = [];
  const server = http.createServer((req, res) => {
    calls.push(req.url ?? "");
    const out = http.request(new URL(req.url ?? "/", upstream), { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// The `redflag` CLI takes a hostname wherever it takes an agent ID, and names the hosts in its
// lists; run as a person runs it, against a real control plane.
describe("agents by hostname in the redflag CLI", () => {
  let cp: TestControlPlane;
  let relay: Awaited<ReturnType<typeof countingRelay>>;
  let web: TestAgent;
  let dbA: TestAgent;
  let dbB: TestAgent;
  let spare: TestAgent;
  let token: string;

  beforeAll(async () => {
    cp = await startTestControlPlane();
    relay = await countingRelay(cp.url);
    token = await newRegistrationToken(cp, 20);
    web = await registerTestAgent(cp, token, { hostname: "web-1" });
    dbA = await registerTestAgent(cp, token, { hostname: "db-1" });
    dbB = await registerTestAgent(cp, token, { hostname: "DB-1" });
    spare = await registerTestAgent(cp, token, { hostname: "spare-1" });
    // web and the first db-1 have been heard from; the second db-1 never has.
    await web.client.pollCommands({ nonce: nonce() });
    await dbA.client.pollCommands({ nonce: nonce() });
    await cp.app.lastSeen.flush();
  }, 120_000);
  afterAll(async () => {
    await relay?.close();
    await cp?.close();
  });

  const cli = (...args: string[]) => run([CLI, "--server", relay.url, "--api-key", cp.adminKey, ...args]);
  // Succeeds, or the test fails with what the CLI said.
  const ok = async (...args: string[]) => {
    const res = await cli(...args);
    expect(res.code, `${args.join(" ")}: ${res.stderr}`).toBe(0);
    return res.stdout;
  };
  const agentOf = async (commandId: string) => (await cp.admin.commands.getCommand({ id: commandId.trim() })).command!.agentId;
  const listAgentsCalls = () => relay.calls.filter((c) => c === "/redflag.v1.FleetService/ListAgents").length;

  it("takes a hostname, in any case, on every command that takes an agent", async () => {
    expect(await ok("agents", "get", "WEB-1")).toMatch(new RegExp(`^id:\\s+${web.agentId}\nhostname:\\s+web-1\n`));
    expect(await ok("agents", "label", "web-1", "--tag", "web", "--group", "dmz")).toBe("web-1: tags web; group dmz\n");
    expect(await agentOf(await ok("agents", "scan", "web-1", "--subsystem", "apt"))).toBe(web.agentId);
    expect(await agentOf(await ok("agents", "heartbeat", "web-1", "on"))).toBe(web.agentId);
    expect(await agentOf(await ok("agents", "reboot", "Web-1", "--force"))).toBe(web.agentId);
    expect(await agentOf(await ok("commands", "queue", "--agent", "web-1", "--type", "collect_specs"))).toBe(web.agentId);
    expect(await ok("agents", "config", "web-1")).toMatch(/^SUBSYSTEM\s+ENABLED/);
    expect(await ok("agents", "metrics", "web-1")).toBe("(none)\n");
    expect(await ok("agents", "allow-reregistration", "web-1", "--for", "1h")).toMatch(/^web-1 may register again once until /);
    const machineId = randomMachineId();
    expect(await ok("agents", "rebind", "spare-1", machineId)).toBe(`spare-1 now bound to ${machineId}\n`);
    expect(await ok("updates", "list", "--agent", "web-1")).toBe("(none)\n");
    expect(await ok("updates", "approve", "--agent", "web-1")).toBe("approved 0 updates\n");
    expect(await ok("updates", "reject", "--agent", "web-1")).toBe("rejected 0 updates\n");
    expect(await ok("updates", "install", "--agent", "web-1")).toBe("queued 0 approved packages in 0 install commands\n");
    expect(await ok("holds", "set", "--name", "openssl", "--agent", "web-1", "--reason", "pinned")).toMatch(new RegExp(`^holding \\*:openssl on web-1 \\(${web.agentId}\\): \\S+\n$`));
    expect(await ok("holds", "list", "--agent", "web-1")).toMatch(new RegExp(`\n\\*\\s+openssl\\s+web-1\\s+${web.agentId}\\s+pinned\\s`));
    const listed = await ok("commands", "list", "--agent", "web-1");
    expect(listed.trim().split("\n").slice(1).map((line) => line.split(/\s+/).slice(1, 3))).toEqual(Array(4).fill(["web-1", web.agentId]));
    const audit = await ok("audit", "--target", "agent:web-1");
    expect(audit).toMatch(new RegExp(`FleetService/SetAgentLabels\\s+agent:${web.agentId} \\(web-1\\)`));
    // A prefix of IDs that is nobody's hostname stays a prefix.
    expect(await ok("audit", "--target", `agent:${web.agentId.slice(0, 8)}`)).toContain(`agent:${web.agentId} (web-1)`);
    // No release is published: the control plane says so about this agent, found by its hostname.
    const upgrade = await cli("agents", "upgrade", "web-1");
    expect(upgrade.code).toBe(1);
    expect(upgrade.stderr).not.toMatch(/hostname|UUID/);
    expect(upgrade.stderr).toMatch(/^redflag: \w+: .*release/);
  }, 180_000);

  it("refuses a hostname several agents have, listing them, and changes nothing", async () => {
    const before = (await cp.admin.commands.listCommands({ pageSize: 500 })).commands.length;
    for (const args of [["agents", "get", "db-1"], ["commands", "queue", "--agent", "Db-1", "--type", "collect_specs"], ["updates", "approve", "--agent", "db-1"], ["agents", "scan", "db-1"]]) {
      const res = await cli(...args);
      expect(res.code, args.join(" ")).toBe(1);
      expect(res.stdout).toBe("");
      const lines = res.stderr.split("\n");
      expect(lines[0]).toBe(`redflag: 2 agents have the hostname ${args.includes("Db-1") ? "Db-1" : "db-1"}; use the ID of the one you mean:`);
      expect(lines[1]).toMatch(/^ID\s+HOSTNAME\s+LAST SEEN\s+STATE$/);
      expect(lines.slice(2)).toHaveLength(3);
      expect(lines.find((l) => l.startsWith(dbA.agentId))).toMatch(/^\S+\s+db-1\s+(just now|.+ ago)\s+(online|stale|offline)$/);
      expect(lines.find((l) => l.startsWith(dbB.agentId))).toMatch(/^\S+\s+DB-1\s+never\s+never reported$/);
      expect(lines.at(-1)).toBe("");
    }
    expect((await cp.admin.commands.listCommands({ pageSize: 500 })).commands).toHaveLength(before);
    // As it says: with the ID it works.
    const id = /^(\S+)\s+DB-1\s/m.exec((await cli("agents", "get", "db-1")).stderr)![1]!;
    expect(await ok("agents", "get", id)).toContain("hostname:    DB-1\n");
  }, 120_000);

  it("lists at most 20 agents of a hostname many have", async () => {
    const many = await newRegistrationToken(cp, 21);
    for (let i = 0; i < 21; i++) await registerTestAgent(cp, many, { hostname: "kiosk" });
    const res = await cli("agents", "get", "kiosk");
    expect(res.code).toBe(1);
    const lines = res.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe("redflag: more than 20 agents have the hostname kiosk; use the ID of the one you mean:");
    expect(lines.slice(2)).toHaveLength(20);
    for (const line of lines.slice(2)) expect(line).toMatch(/^\S+\s+kiosk\s+never\s+never reported$/);
  }, 120_000);

  it("says when no agent has the hostname, and the command it suggests lists them", async () => {
    for (const args of [
      ["agents", "scan", "no-such-host"],
      ["agents", "get", "no-such-host"],
      ["commands", "list", "--agent", "no-such-host"],
      ["updates", "list", "--agent", "web-1", "--agent", "no-such-host"],
      ["holds", "set", "--name", "curl", "--agent", "no-such-host"],
      ["audit", "--target", "agent:no-such-host"],
    ]) {
      const res = await cli(...args);
      expect(res.code, args.join(" ")).toBe(1);
      expect(res.stderr).toBe("redflag: no agent has the hostname no-such-host; `redflag agents list` shows them\n");
    }
    const hint = /`redflag ([^`]+)`/.exec((await cli("agents", "get", "no-such-host")).stderr)![1]!;
    const listed = await ok(...hint.split(" "));
    expect(listed).toMatch(/^ID\s+HOSTNAME\s+HEALTH/);
    for (const a of [web, dbA, dbB, spare]) expect(listed).toContain(a.agentId);
  }, 120_000);

  it("passes an agent ID through as it is, without a lookup", async () => {
    const calls = listAgentsCalls();
    expect(await ok("agents", "get", web.agentId.toUpperCase())).toContain(`id:          ${web.agentId}\n`);
    const unknown = await cli("commands", "queue", "--agent", "00000000-0000-4000-8000-000000000000", "--type", "collect_specs");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe("redflag: NotFound: agent 00000000-0000-4000-8000-000000000000 does not exist\n");
    expect(listAgentsCalls()).toBe(calls);
  });

  it("passes over a decommissioned agent with the same hostname for commands that need a live one", async () => {
    const old = await registerTestAgent(cp, token, { hostname: "mail-1" });
    expect(await ok("agents", "decommission", "mail-1")).toMatch(/^mail-1 decommissioned; \d+ pending commands? cancelled\n$/);
    // The host was reinstalled: a new machine ID, a new agent, the same name.
    const reinstalled = await registerTestAgent(cp, token, { hostname: "mail-1" });
    expect(await agentOf(await ok("agents", "scan", "mail-1"))).toBe(reinstalled.agentId);
    expect(await agentOf(await ok("commands", "queue", "--agent", "mail-1", "--type", "collect_specs"))).toBe(reinstalled.agentId);
    // Reading and re-admitting may mean either: the CLI asks.
    for (const args of [["agents", "get", "mail-1"], ["agents", "allow-reregistration", "mail-1"]]) {
      const res = await cli(...args);
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(new RegExp(`^redflag: 2 agents have the hostname mail-1; use the ID of the one you mean:\n`));
      expect(res.stderr).toMatch(new RegExp(`\n${old.agentId}\\s+mail-1\\s+never\\s+decommissioned\n`));
      expect(res.stderr).toMatch(new RegExp(`\n${reinstalled.agentId}\\s+mail-1\\s+never\\s+never reported(\n|$)`));
    }
  }, 120_000);

  it("names the hosts in its lists, with one lookup per page", async () => {
    // A failed command on web-1, and a pending update there.
    const failedId = (await cp.admin.commands.createCommand({ agentId: web.agentId, action: { case: "collectSpecs", value: {} } })).command!.id;
    const scanId = (await cp.admin.fleet.triggerScan({ agentId: web.agentId })).command!.id;
    const delivered = (await web.client.pollCommands({ nonce: nonce() })).commands.map((c) => fromBinary(CommandSchema, c.command));
    const seq = (id: string) => delivered.find((c) => c.id === id)!.sequence;
    await web.client.reportResults({
      results: [
        { commandId: failedId, sequence: seq(failedId), outcome: CommandOutcome.FAILED, message: "the disk is full", finishTime: timestampFromDate(new Date()) },
        {
          commandId: scanId,
          sequence: seq(scanId),
          outcome: CommandOutcome.SUCCEEDED,
          finishTime: timestampFromDate(new Date()),
          detail: {
            case: "scanUpdates",
            value: {
              subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN }],
              updates: [{ source: "apt", name: "curl", architecture: "amd64", currentVersion: "1.0", availableVersion: "2.0", repository: "bookworm-security", severity: UpdateSeverity.CRITICAL, security: true }],
            },
          },
        },
      ],
    });
    await cp.admin.commands.createCommand({ agentId: dbB.agentId, action: { case: "collectSpecs", value: {} } });
    const hostOf = new Map([[web.agentId, "web-1"], [dbA.agentId, "db-1"], [dbB.agentId, "DB-1"], [spare.agentId, "spare-1"]]);

    let calls = listAgentsCalls();
    const commands = await ok("commands", "list");
    expect(listAgentsCalls() - calls).toBe(1);
    const rows = commands.trim().split("\n");
    expect(rows[0]).toMatch(/^ID\s+HOST\s+AGENT\s+TYPE\s+STATE/);
    const shown = rows.slice(1).map((line) => line.split(/\s+/).slice(1, 3) as [string, string]);
    expect(new Set(shown.map(([, id]) => id)).size).toBeGreaterThan(1);
    for (const [host, id] of shown) if (hostOf.has(id)) expect(host).toBe(hostOf.get(id));

    expect(await ok("commands", "get", failedId)).toContain(`\nagent:    web-1 (${web.agentId})\n`);
    expect(await ok("report")).toMatch(new RegExp(`\\n\\S+\\s+${failedId}\\s+web-1\\s+${web.agentId}\\s+collect_specs\\s+failed\\s+the disk is full\\n`));

    calls = listAgentsCalls();
    const audit = await ok("audit");
    expect(listAgentsCalls() - calls).toBe(1);
    expect(audit).toContain(`agent:${spare.agentId} (spare-1)`);
    expect(audit).toContain(`agent:${web.agentId} (web-1)`);

    const holds = await ok("holds", "list");
    expect(holds).toMatch(/^SOURCE\s+NAME\s+HOST\s+AGENT\s+REASON/);
    expect(holds).toMatch(new RegExp(`openssl\\s+web-1\\s+${web.agentId}\\s+pinned`));

    expect(await ok("updates", "list", "--agent", "web-1")).toMatch(new RegExp(`\nweb-1\\s+apt\\s+curl\\s+1\\.0\\s+2\\.0\\s+critical\\s+pending\\s+${web.agentId}\n$`));
    const installed = await ok("updates", "approve", "--agent", "web-1", "--install");
    expect(installed).toMatch(new RegExp(`^approved and queued 1 package in 1 install command\n${web.agentId}  \\S+  web-1\n$`));
  }, 120_000);

  it("shows the host of each command change it watches", async () => {
    const child = spawn(process.execPath, [CLI, "--server", cp.url, "--api-key", cp.adminKey, "commands", "watch", "--agent", "web-1"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    try {
      // The watch starts when the CLI has resolved the name and subscribed; queue until it shows.
      let queued = "";
      for (let i = 0; i < 120 && !out.includes(queued || "\u0000"); i++) {
        queued = (await cp.admin.commands.createCommand({ agentId: web.agentId, action: { case: "collectSpecs", value: {} } })).command!.id;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(out).toMatch(new RegExp(`^\\S+Z  web-1  ${web.agentId}  collect_specs  pending  ${queued}$`, "m"));
    } finally {
      child.kill("SIGINT");
    }
    expect(await exited).toBe(0);
  }, 120_000);
});

// `redflag tokens create`: the token, the fingerprint, and one line per platform under a
// heading; when the control plane's URL reaches only this machine, a warning on stderr first.
describe("redflag tokens create", () => {
  let cp: TestControlPlane;
  beforeAll(async () => {
    cp = await startTestControlPlane();
  }, 120_000);
  afterAll(async () => {
    await cp?.close();
  });

  const cli = (...args: string[]) => run([CLI, "--server", cp.url, "--api-key", cp.adminKey, ...args]);
  const activeFingerprint = async () => {
    const security = createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    return (await security.getSecurityOverview({})).signingKeys.find((k) => k.state === "active")!.fingerprint;
  };

  // The printed commands by their headings, checked to carry the secret and the fingerprint.
  function printed(stdout: string, server: string, fingerprint: string) {
    const secret = stdout.split("\n")[0]!;
    expect(secret).toMatch(/^rfreg_\S+$/);
    expect(stdout).toContain(`Agents pin the signing key with fingerprint\n${fingerprint}\n`);
    expect(stdout).toContain(`registers it with\n${server} and starts it.\n`);
    const sections = stdout.split(/^# (linux|macos|windows)\n/m);
    const byPlatform = Object.fromEntries(Array.from({ length: (sections.length - 1) / 2 }, (_, i) => [sections[1 + 2 * i]!, sections[2 + 2 * i]!.trim()]));
    expect(Object.keys(byPlatform)).toEqual(["linux", "macos", "windows"]);
    expect(byPlatform.linux).toBe(`curl -fsSL '${server}/install/linux.sh' | sudo sh -s -- --token '${secret}' --fingerprint ${fingerprint}`);
    expect(byPlatform.macos).toBe(`curl -fsSL '${server}/install/macos.sh' | sudo sh -s -- --token '${secret}' --fingerprint ${fingerprint}`);
    expect(byPlatform.windows).toContain(`Invoke-RestMethod '${server}/install/windows.ps1'`);
    expect(byPlatform.windows).toContain(`-Token '${secret}' -Fingerprint ${fingerprint}`);
    return byPlatform;
  }

  it("warns on stderr first when other machines cannot reach the URL, and following the warning ends it", async () => {
    const fingerprint = await activeFingerprint();
    const res = await cli("tokens", "create", "--seats", "1", "--note", "lab");
    expect(res.code, res.stderr).toBe(0);
    const warning = /^redflag: warning: (127\.0\.0\.1:\d+ is this machine's loopback address: .*)\n$/.exec(res.stderr)?.[1];
    expect(warning, res.stderr).toBeDefined();
    expect(res.stdout).not.toContain("loopback");
    printed(res.stdout, cp.url, fingerprint);

    // The JSON form keeps stdout to the response; the warning is in it and on stderr.
    const json = await cli("--json", "tokens", "create", "--seats", "1");
    expect(json.code, json.stderr).toBe(0);
    expect(json.stderr).toBe(`redflag: warning: ${warning}\n`);
    const body = JSON.parse(json.stdout) as { serverUrlWarning: string; installCommands: { platform: string; command: string }[]; signingKeyFingerprint: string };
    expect(body.serverUrlWarning).toBe(warning);
    expect(body.installCommands.map((c) => c.platform)).toEqual(["linux", "macos", "windows"]);
    expect(body.signingKeyFingerprint).toBe(fingerprint);

    // As the warning says: set REDFLAG_PUBLIC_URL and restart the control plane.
    const publicUrl = /for example REDFLAG_PUBLIC_URL=(\S+)\)/.exec(warning!)![1]!;
    cp = await cp.restart({ REDFLAG_PUBLIC_URL: publicUrl });
    const after = await cli("tokens", "create", "--seats", "1");
    expect(after.code, after.stderr).toBe(0);
    expect(after.stderr).toBe("");
    // Plain http to another machine: the agent needs --insecure-http, which the commands say.
    expect(after.stdout).toContain(`# linux\n# plain http: anyone on the network path can read the token; serve https (REDFLAG_TLS_CERT, REDFLAG_TLS_KEY) to drop --insecure-http\ncurl -fsSL '${publicUrl}/install/linux.sh'`);
    const again = await cli("--json", "tokens", "create", "--seats", "1");
    expect(again.stderr).toBe("");
    expect((JSON.parse(again.stdout) as { serverUrlWarning?: string }).serverUrlWarning).toBeUndefined();
  }, 180_000);

  it("prints no warning for a URL other machines reach", async () => {
    cp = await cp.restart({ REDFLAG_PUBLIC_URL: "https://redflag.example.net:8443" });
    const res = await cli("tokens", "create", "--seats", "2", "--expires", "1h");
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toBe("");
    expect(res.stdout).toMatch(/\n\ntoken \S+: 2 seats, expires \d{4}-\d\d-\d\dT[\d:.]+Z\.\n/);
    printed(res.stdout, "https://redflag.example.net:8443", await activeFingerprint());
  }, 120_000);
});

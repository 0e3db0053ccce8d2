import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CommandState } from "@redflag/gen/command_service_pb";
import { NOTIFICATION_EVENTS } from "@redflag/common/notification-events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import controlPlanePkg from "../package.json" with { type: "json" };
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// The redflag CLI called in-process (main(argv, env, io)) against a real control plane: what it
// prints, its exit codes, and that a refused call changes nothing.
describe("redflag CLI in-process", () => {
  let cp: TestControlPlane;
  let config: string;
  let web: TestAgent;

  beforeAll(async () => {
    cp = await startTestControlPlane();
    config = await mkdtemp(path.join(tmpdir(), "rf-cli-inproc-"));
    web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-1" });
  });
  afterAll(async () => {
    await cp?.close();
    await rm(config, { recursive: true, force: true });
  });

  // As the admin, with nothing from this process's own environment.
  const admin = (args: string[], input?: string) =>
    runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config }, input });

  it("prints its version and help without a server", async () => {
    expect(await runInProcess(["--version"])).toEqual({ code: 0, stdout: `${controlPlanePkg.version}\n`, stderr: "" });
    const help = await runInProcess(["tokens", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: redflag tokens \[options\] \[command\]\n/);
    expect(help.stdout).toContain("create [options]  create a registration token; its secret is printed once");
    // Every event a rule can choose is named in the help (it used to list five of nine).
    const rules = (await runInProcess(["notifications", "rules", "create", "--help"])).stdout.replace(/\s+/g, " ");
    for (const event of NOTIFICATION_EVENTS) expect(rules).toContain(event);
    const unknown = await runInProcess(["bogus"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: unknown command 'bogus'\n/);
  });

  it("creates, lists and revokes registration tokens; a bad seat count changes nothing", async () => {
    const before = (await cp.admin.tokens.listRegistrationTokens({ pageSize: 500 })).tokens.length;
    const bad = await admin(["tokens", "create", "--seats", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: option '--seats <n>' argument '0' is invalid\. must be a whole number of at least 1\n\nUsage: redflag tokens create/);
    expect(bad.stdout).toBe("");
    expect((await cp.admin.tokens.listRegistrationTokens({ pageSize: 500 })).tokens).toHaveLength(before);

    const created = await admin(["--json", "tokens", "create", "--seats", "3", "--note", "rack 4"]);
    expect(created.code, created.stderr).toBe(0);
    const { token } = JSON.parse(created.stdout) as { token: { id: string; seats: number; note: string } };
    expect(token).toMatchObject({ seats: 3, note: "rack 4" });
    // A new program per call: the --json of the call before does not carry over.
    const list = await admin(["tokens", "list"]);
    expect(list.stdout).toMatch(new RegExp(`^${token.id}\\s+\\S+…\\s+active\\s+0/3\\s+never\\s+rack 4$`, "m"));
    expect(await admin(["tokens", "revoke", token.id])).toEqual({ code: 0, stdout: `token ${token.id} revoked\n`, stderr: "" });
  });

  it("takes an agent by hostname, and says so when no agent has it", async () => {
    const got = await admin(["agents", "get", "WEB-1"]);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toMatch(new RegExp(`^id:\\s+${web.agentId}\\nhostname:\\s+web-1\\n`));

    const labelled = await admin(["agents", "label", "web-1", "--tag", "edge", "--group", "dmz"]);
    expect(labelled).toEqual({ code: 0, stdout: "web-1: tags edge; group dmz\n", stderr: "" });

    const missing = await admin(["agents", "label", "no-such-host", "--tag", "other"]);
    expect(missing).toEqual({ code: 1, stdout: "", stderr: "redflag: no agent has the hostname no-such-host; `redflag agents list` shows them\n" });
    expect((await cp.admin.fleet.getAgent({ agentId: web.agentId })).agent).toMatchObject({ tags: ["edge"], group: "dmz" });
  });

  it("queues commands, refuses update_agent from a URL without queueing, and exits 1 when a waited-for command does not finish", async () => {
    const refused = await admin(["commands", "queue", "--agent", "web-1", "--type", "update_agent", "--url", "http://example.com/agent.tgz"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^redflag: update_agent takes no --url, --artifact or --platform: agent upgrades come only from the control plane's release registry\./);
    expect((await cp.admin.commands.listCommands({ agentId: web.agentId, pageSize: 10 })).commands).toHaveLength(0);

    const queued = await admin(["commands", "queue", "--agent", "web-1", "--type", "collect_specs"]);
    expect(queued.code, queued.stderr).toBe(0);
    const id = queued.stdout.trim();
    expect((await cp.admin.commands.getCommand({ id })).command).toMatchObject({ agentId: web.agentId });

    // Nobody polls for web-1: the wait ends with the command still pending.
    const waited = await admin(["commands", "queue", "--agent", web.agentId, "--type", "scan_updates", "--wait", "1s"]);
    expect(waited.code).toBe(1);
    expect(waited.stderr).toMatch(/^redflag: command \S+ is still pending after 1s\n$/);

    const listed = await admin(["commands", "list", "--agent", "web-1"]);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+web-1\\s+${web.agentId}\\s+collect_specs\\s+pending\\s+-`, "m"));
    expect(await admin(["commands", "cancel", id])).toEqual({ code: 0, stdout: `${id} cancelled\n`, stderr: "" });
    await cp.admin.commands.cancelCommand({ id: waited.stderr.split(" ")[2]! });
  });

  it("says when a command was merged into one already pending, and why a second reboot is refused", async () => {
    const first = await admin(["commands", "queue", "--agent", "web-1", "--type", "install_updates", "--package", "apt:curl"]);
    expect(first.code, first.stderr).toBe(0);
    const id = first.stdout.trim();
    const merged = await admin(["commands", "queue", "--agent", "web-1", "--type", "install_updates", "--package", "apt:openssl"]);
    expect(merged).toEqual({
      code: 0,
      stdout: `${id}\n`,
      stderr: `redflag: merged into install_updates command ${id}, already pending for web-1: nothing new was queued\n`,
    });
    const json = JSON.parse((await admin(["--json", "commands", "queue", "--agent", "web-1", "--type", "install_updates", "--package", "apt:openssl"])).stdout);
    expect(json).toMatchObject({ command: { id }, merged: true });

    const reboot = await admin(["commands", "queue", "--agent", "web-1", "--type", "reboot"]);
    expect(reboot.code, reboot.stderr).toBe(0);
    const rebootId = reboot.stdout.trim();
    const again = await admin(["agents", "reboot", "web-1"]);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe("");
    expect(again.stderr).toMatch(
      new RegExp(`^redflag: FailedPrecondition: agent ${web.agentId} already has a reboot pending \\(command ${rebootId}, queued \\S+\\); cancel it first \\(redflag commands cancel ${rebootId}\\) or wait until it is delivered\n$`),
    );
    const pending = (await cp.admin.commands.listCommands({ agentId: web.agentId, pageSize: 50 })).commands.filter((c) => c.state === CommandState.PENDING);
    expect(pending.map((c) => c.id).sort()).toEqual([id, rebootId].sort());
    for (const c of pending) await cp.admin.commands.cancelCommand({ id: c.id });
  });

  it("lists the hosts that need a reboot and shows which sources said so", async () => {
    await web.client.pollCommands({ nonce: randomBytes(16), status: { agentVersion: "0.1.0", rebootRequired: true, rebootRequiredBy: ["zypper"] } });
    await cp.app.lastSeen.flush();
    const listed = await admin(["agents", "list", "--reboot-required"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^ID\s+HOSTNAME\s+HEALTH\s+OS\s+VERSION\s+LAST SEEN\s+UPDATES\s+REBOOT\n/);
    expect(listed.stdout).toMatch(new RegExp(`^${web.agentId}\\s+web-1\\s+.*\\s+required$`, "m"));
    expect((await admin(["agents", "get", "web-1"])).stdout).toContain("\nreboot:      required (by zypper)\n");
    await web.client.pollCommands({ nonce: randomBytes(16), status: { agentVersion: "0.1.0" } });
    await cp.app.lastSeen.flush();
    expect((await admin(["agents", "list", "--reboot-required"])).stdout).not.toContain(web.agentId);
    expect((await admin(["agents", "get", "web-1"])).stdout).toContain("\nreboot:      not required\n");
  });

  it("sets and removes holds; a hold for an unknown host is not created", async () => {
    const missing = await admin(["holds", "set", "--name", "linux-image-*", "--agent", "ghost"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("redflag: no agent has the hostname ghost; `redflag agents list` shows them\n");
    // No holds at all (JSON leaves an empty list out).
    expect((await admin(["--json", "holds", "list"])).stdout).toBe("{}\n");

    const set = await admin(["holds", "set", "--name", "linux-image-*", "--source", "apt", "--agent", "web-1", "--reason", "kernel freeze"]);
    expect(set.code, set.stderr).toBe(0);
    const holdId = new RegExp(`^holding apt:linux-image-\\* on web-1 \\(${web.agentId}\\): (\\S+)\\n$`).exec(set.stdout)![1]!;
    expect((await admin(["holds", "list"])).stdout).toMatch(new RegExp(`^apt\\s+linux-image-\\*\\s+web-1\\s+${web.agentId}\\s+kernel freeze\\s+\\S+\\s+${holdId}$`, "m"));
    expect(await admin(["holds", "remove", holdId])).toEqual({ code: 0, stdout: `hold ${holdId} removed\n`, stderr: "" });
  });

  it("changes settings from arguments and from standard input; bad values change nothing", async () => {
    const value = async () => (await admin(["--json", "settings", "list"])).stdout;
    const before = await value();
    const notPair = await admin(["settings", "set", "poll_interval"]);
    expect(notPair).toEqual({ code: 1, stdout: "", stderr: 'redflag: "poll_interval" is not key=value\n' });
    const outOfRange = await admin(["settings", "set", "poll_interval=1s"]);
    expect(outOfRange.code).toBe(1);
    expect(outOfRange.stderr).toMatch(/^redflag: InvalidArgument: .*poll_interval/);
    expect(await value()).toBe(before);

    expect(await admin(["settings", "set", "poll_interval=2m"])).toEqual({ code: 0, stdout: "updated poll_interval\n", stderr: "" });
    expect(await admin(["settings", "import", "-"], '{"poll_interval": "3m"}')).toEqual({ code: 0, stdout: "imported: 1 setting changed\n", stderr: "" });
    expect((await admin(["settings", "history", "--key", "poll_interval"])).stdout).toMatch(/poll_interval\s+2m\s+3m\s+/);
  });

  it("reads the credential from the env it is given, signs in through standard input, and keeps the session in REDFLAG_CONFIG_DIR", async () => {
    const viaEnv = await runInProcess(["whoami"], { env: { REDFLAG_SERVER: cp.url, REDFLAG_API_KEY: cp.adminKey, REDFLAG_CONFIG_DIR: config } });
    expect(viaEnv).toMatchObject({ code: 0, stdout: expect.stringMatching(/: admin through admin key\n$/) });

    const noKey = await runInProcess(["--server", cp.url, "--api-key-file", path.join(config, "missing.key"), "whoami"], { env: { REDFLAG_CONFIG_DIR: config } });
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toBe(`redflag: no API key: ${path.join(config, "missing.key")} is not readable; pass --api-key, set REDFLAG_API_KEY, or point --api-key-file at the server's admin.key\n`);
    const badUrl = await runInProcess(["--server", "not a url", "--api-key", "x", "whoami"]);
    expect(badUrl).toEqual({ code: 1, stdout: "", stderr: "redflag: --server not a url is not a URL (for example http://127.0.0.1:8080)\n" });
    const wrongKey = await runInProcess(["--server", cp.url, "--api-key", "rfadm_wrong", "whoami"]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/^redflag: Unauthenticated: /);

    const keyFile = path.join(config, "admin.key");
    await writeFile(keyFile, cp.adminKey + "\n");
    const created = await admin(["users", "create", "--username", "olga", "--role", "operator", "--password-stdin"], "her very own passphrase\n");
    expect(created.code, created.stderr).toBe(0);
    const noTerminal = await admin(["users", "create", "--username", "ivan", "--role", "viewer"]);
    expect(noTerminal).toEqual({ code: 1, stdout: "", stderr: "redflag: no terminal to type a password on: pass --password-stdin and pipe it in\n" });
    expect((await admin(["users", "list"])).stdout).not.toContain("ivan");

    const session = (args: string[], input?: string) => runInProcess(["--server", cp.url, ...args], { env: { REDFLAG_CONFIG_DIR: config, REDFLAG_API_KEY: "" }, input });
    const wrong = await session(["login", "--username", "olga", "--password-stdin"], "not her passphrase\n");
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^redflag: Unauthenticated: /);
    const login = await session(["login", "--username", "olga", "--password-stdin"], "her very own passphrase\n");
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toBe(`signed in to ${cp.url} as olga (operator); session saved in ${path.join(config, "session.json")}\n`);
    expect((await session(["whoami"])).stdout).toBe("olga (olga): operator through session\n");
    expect(await session(["logout"])).toEqual({ code: 0, stdout: `signed out of ${cp.url}\n`, stderr: "" });
    expect(await session(["logout"])).toEqual({ code: 0, stdout: "not signed in\n", stderr: "" });
  });

  it("says when the control plane cannot be reached", async () => {
    const down = await runInProcess(["--server", "http://127.0.0.1:9", "--api-key", "x", "agents", "list"]);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^redflag: Unavailable: cannot reach the control plane at http:\/\/127\.0\.0\.1:9: /);
  });
});

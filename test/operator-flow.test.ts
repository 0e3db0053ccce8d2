import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { run } from "./support/processes.ts";

// The operator's day, scripted with the `redflag` CLI against a real control plane and a real
// agent process (its apt is a stateful fake): sign in, make a registration token, enrol a
// machine, approve its security updates by severity and install them, then read in the audit
// log who did each step.
describe.runIf(process.getuid?.() === 0)("operator flow through the CLI", () => {
  let cp: TestControlPlane;
  let root: string;
  let apt: FakeApt;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-operator-"));
    apt = await createFakeApt(root, {
      installed: ["curl amd64 7.88.1-10+deb12u14", "nginx amd64 1.22.1-9", "base-files amd64 12.4+deb12u11"],
      available: [
        "curl amd64 7.88.1-10+deb12u15 oldstable-security",
        "nginx amd64 1.22.1-9+deb12u2 oldstable-security",
        "libnginx-mod-new amd64 1.22.1-9+deb12u2 oldstable",
        "base-files amd64 12.4+deb12u15 oldstable",
      ],
    });
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  const cli = async (args: string[], input?: string) => {
    const out = await run(["control-plane/src/cli/main.ts", "--server", cp.url, ...args], {
      env: { REDFLAG_CONFIG_DIR: path.join(root, "cli"), REDFLAG_API_KEY: "" },
      input,
    });
    expect(out.code, `${args.join(" ")}: ${out.stderr}`).toBe(0);
    return out.stdout;
  };
  const agentEnv = () => ({
    REDFLAG_AGENT_MACHINE_ID_SEED: seed,
    REDFLAG_AGENT_APT_REFRESH: "0",
    REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
    PATH: `${apt.bin}:${process.env.PATH}`,
  });
  const seed = randomBytes(8).toString("hex");
  const agentOnce = async () => {
    const out = await run(["agent/src/main.ts", "run", "--once", "--state-dir", path.join(root, "agent")], { env: agentEnv(), timeoutMs: 60_000 });
    expect(out.code, out.stderr).toBe(0);
  };

  it("signs in, enrols a machine, approves security updates by severity, installs them, and audits every step", async () => {
    await cli(["setup", "--username", "dana", "--password-stdin"], "the operations passphrase\n");
    const token = JSON.parse(await cli(["--json", "tokens", "create", "--seats", "1", "--note", "web servers"])) as { secret: string };
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", token.secret, "--state-dir", path.join(root, "agent")], { env: agentEnv() });
    expect(reg.code, reg.stderr).toBe(0);
    const agentId = (JSON.parse(await cli(["--json", "agents", "list"])) as { agents: { id: string }[] }).agents[0]!.id;

    expect(await cli(["agents", "label", agentId, "--tag", "web", "--tag", "prod", "--group", "dmz"])).toMatch(/tags web, prod; group dmz\n$/);
    expect(await cli(["agents", "list", "--tag", "web", "--health", "never_reported"])).toContain(agentId);
    expect(await cli(["agents", "config", agentId])).toMatch(/^SUBSYSTEM\s+ENABLED\s+AUTO\s+INTERVAL\s+TIMEOUT/);

    await cli(["agents", "scan", agentId, "--subsystem", "apt"]);
    await agentOnce();
    const listed = await cli(["updates", "list", "--security"]);
    expect(listed).toMatch(/curl\s+7\.88\.1-10\+deb12u14\s+7\.88\.1-10\+deb12u15\s+security\s+pending/);
    expect(listed).toMatch(/nginx\s+1\.22\.1-9\s+1\.22\.1-9\+deb12u2\s+security\s+pending/);
    expect(listed).not.toMatch(/base-files/);

    expect(await cli(["updates", "list", "--group", "elsewhere"])).toBe("(none)\n");
    const approved = await cli(["updates", "approve", "--severity", "security", "--group", "dmz", "--install"]);
    expect(approved).toMatch(/^approved and queued 2 packages in 1 install command\n/);
    const commandId = approved.trim().split("\n")[1]!.split(/\s+/)[1]!;
    expect((await cli(["updates", "list", "--status", "approved"]))).toMatch(/curl.*approved, install pending/);

    await agentOnce();
    const shown = await cli(["commands", "get", commandId]);
    expect(shown).toMatch(/state:\s+succeeded/);
    expect(shown).toMatch(/apt\s+curl\s+7\.88\.1-10\+deb12u14\s+7\.88\.1-10\+deb12u15\s+installed/);
    expect(shown).toMatch(/apt\s+nginx\s+1\.22\.1-9\s+1\.22\.1-9\+deb12u2\s+installed/);
    const installed = await apt.installed();
    expect([installed.get("curl"), installed.get("nginx"), installed.get("base-files")]).toEqual(["7.88.1-10+deb12u15", "1.22.1-9+deb12u2", "12.4+deb12u11"]);
    // Installed exactly the approved versions.
    expect((await apt.argvLog()).at(-1)).toMatch(/-- curl:amd64=7\.88\.1-10\+deb12u15 nginx:amd64=1\.22\.1-9\+deb12u2$/);
    // The agent rescanned: only the unapproved update is left.
    expect(await cli(["updates", "list"])).toMatch(/^HOST.*\n\S+\s+apt\s+base-files\s+.*pending\s+\S+\n$/);

    const audit = JSON.parse(await cli(["--json", "audit", "--actor", "dana"])) as { entries: { action: string; target: string; afterJson: string }[] };
    const actions = audit.entries.map((e) => e.action.replace("redflag.v1.", "")).reverse();
    expect(actions).toEqual([
      "AuthService/Setup",
      "TokenService/CreateRegistrationToken",
      "FleetService/SetAgentLabels",
      "FleetService/TriggerScan",
      "UpdateService/InstallApprovedUpdates",
      "UpdateService/InstallApprovedUpdates",
    ]);
    const install = audit.entries.find((e) => e.target === `agent:${agentId}` && e.afterJson.includes("install_updates"))!;
    expect(JSON.parse(install.afterJson)).toMatchObject({ commandId, packages: ["apt/curl=7.88.1-10+deb12u15", "apt/nginx=1.22.1-9+deb12u2"] });
  });
});

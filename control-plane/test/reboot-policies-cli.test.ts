import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// redflag reboot-policies create|list|update|delete, in process against a real control plane.

let cp: TestControlPlane;
let web: TestAgent;
let config: string;
const admin = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });
const words = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);

beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
  config = await mkdtemp(path.join(os.tmpdir(), "rf-cli-"));
  web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-7" });
});
afterAll(async () => {
  await cp?.close();
  await rm(config, { recursive: true, force: true });
});

describe("redflag reboot-policies", () => {
  it("runs the examples of its help as printed and lists what they made", async () => {
    const help = await runInProcess(["reboot-policies", "create", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--mode <mode>\s+never; when-required/);
    const examples = help.stdout.split("\n").filter((l) => l.trim().startsWith("redflag reboot-policies "));
    expect(examples).toHaveLength(2);
    for (const line of examples) {
      const run = await admin(words(line.trim()).slice(1));
      expect(run.code, `${line}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^created reboot policy "[^"]+" \((always|when-required)\): \S+\n$/);
    }
    const list = await admin(["reboot-policies", "list"]);
    expect(list.stdout).toMatch(/^NAME\s+MODE\s+APPLIES TO\s+WHEN\s+PRE-HOOK\s+POST-HOOK\s+HOOK LIMIT\s+RETURN WITHIN\s+STATE\s+ID$/m);
    expect(list.stdout).toMatch(/^fleet default\s+when-required\s+all agents\s+at once\s+-\s+-\s+5m\s+30m\s+enabled\s+\S+$/m);
    expect(list.stdout).toMatch(/^web nightly\s+always\s+group:web\s+in a window\s+drain\s+undrain\s+2m\s+15m\s+enabled\s+\S+$/m);
    expect((await runInProcess(["reboot-policies", "--help"])).stdout).toMatch(/the most specific wins/);
  });

  it("updates by name, names agents by hostname, refuses a hook that is a path, and deletes", async () => {
    const bad = await admin(["reboot-policies", "update", "web nightly", "--pre-hook", "/bin/sh"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^redflag: InvalidArgument: policy.pre_hook "\/bin\/sh" is not a hook name/);
    const changed = await admin(["reboot-policies", "update", "web nightly", "--agent", "web-7", "--no-window-only", "--pre-hook", "", "--mode", "never", "--disable"]);
    expect(changed).toEqual({ code: 0, stdout: expect.stringMatching(/^updated reboot policy "web nightly": \S+\n$/), stderr: "" });
    const json = JSON.parse((await admin(["--json", "reboot-policies", "list"])).stdout);
    expect(json.policies.find((p: { spec: { name: string } }) => p.spec.name === "web nightly").spec).toMatchObject({
      mode: "REBOOT_MODE_NEVER",
      targets: { agentIds: [web.agentId] },
      postHook: "undrain",
    });
    expect((await admin(["reboot-policies", "list"])).stdout).toMatch(/^web nightly\s+never\s+agent:web-7\s+at once\s+-\s+undrain\s+2m\s+15m\s+disabled\s/m);
    expect(await admin(["reboot-policies", "delete", "web nightly"])).toEqual({ code: 0, stdout: 'reboot policy "web nightly" deleted\n', stderr: "" });
    expect(await admin(["reboot-policies", "delete", "web nightly"])).toEqual({ code: 1, stdout: "", stderr: "redflag: no reboot policy is named web nightly; `redflag reboot-policies list` shows them\n" });
  });
});

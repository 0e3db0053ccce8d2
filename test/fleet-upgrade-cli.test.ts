import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type PublishReleaseRequest, PublishReleaseRequestSchema, ReleaseService } from "@redflag/gen/release_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

async function* stream(data: Uint8Array, version: string, platform: string): AsyncGenerator<PublishReleaseRequest> {
  const sha256 = new Uint8Array(createHash("sha256").update(data).digest());
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version, platform, sizeBytes: BigInt(data.length), sha256 } } });
  yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: data } });
}

// An admin upgrades half of a group from the CLI, follows it with the command the CLI printed,
// and meets the minimum supported version: the refusal's hint is a command that works.
describe("redflag agents upgrade (fleet) and upgrade-status", () => {
  let cp: TestControlPlane;
  const agents: TestAgent[] = [];
  const cli = (args: string[]) => run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);

  beforeAll(async () => {
    cp = await startTestControlPlane();
    const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
    await createClient(ReleaseService, transport).publishRelease(stream(randomBytes(2048), "0.2.0", "linux-x64"));
    const token = await newRegistrationToken(cp);
    for (let i = 0; i < 4; i++) {
      const agent = await registerTestAgent(cp, token);
      await cp.admin.fleet.setAgentLabels({ agentId: agent.agentId, group: "web", tags: [] });
      agents.push(agent);
    }
    await createClient(SettingsService, transport).updateSettings({ values: { minimum_agent_version: "0.2.0" } });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  it("queues half of a group, prints a hint that works, and refuses what it cannot mean", async () => {
    const none = await cli(["agents", "upgrade"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe("redflag: name an agent (ID or hostname), or exactly one of --all, --group <group> and --tag <tag>\n");
    const both = await cli(["agents", "upgrade", agents[0]!.agentId, "--all"]);
    expect(both.stderr).toBe("redflag: name one agent, or --all, --group or --tag, not both\n");
    const badShare = await cli(["agents", "upgrade", "--all", "--percent", "0"]);
    expect(badShare.code).toBe(2);
    expect(badShare.stderr).toContain("must be a whole number from 1 to 100");

    const half = await cli(["agents", "upgrade", "--group", "web", "--percent", "50"]);
    expect(half.code, half.stderr).toBe(0);
    expect(half.stdout).toMatch(/^fleet upgrade [0-9a-f-]{36} of group web: 4 selected, 2 chosen \(50%\), 2 queued, 0 skipped\n/);
    expect(half.stdout).toMatch(/HOSTNAME\s+AGENT\s+FROM\s+TO\s+PLATFORM\n/);
    expect(half.stdout.match(/ 0\.1\.0\s+0\.2\.0\s+linux-x64\n/g)).toHaveLength(2);
    const hint = /follow it with `redflag (agents upgrade-status --rollout [0-9a-f-]{36})`\n$/.exec(half.stdout);
    expect(hint).not.toBeNull();

    const status = await cli(hint![1]!.split(" "));
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout.match(/0\.1\.0\s+0\.2\.0\s+queued\s+/g)).toHaveLength(2);
    expect(status.stdout).toContain("waiting for the agent's next poll");
    expect(status.stdout).toMatch(/\n2 queued\n$/);

    // The same share again picks the same agents: both are in progress now.
    const again = await cli(["--json", "agents", "upgrade", "--group", "web", "--percent", "50"]);
    const res = JSON.parse(again.stdout) as { upgrades?: unknown[]; skipped: { reason: string }[] };
    expect(res.upgrades ?? []).toHaveLength(0);
    expect(res.skipped.map((s) => s.reason)).toEqual(["an upgrade to 0.2.0 is in progress", "an upgrade to 0.2.0 is in progress"]);
  }, 120_000);

  it("shows agents below the minimum as upgrade required, and the refusal's hint upgrades them", async () => {
    const list = await cli(["agents", "list"]);
    expect(list.stdout.match(/0\.1\.0 \(upgrade required\)/g)).toHaveLength(4);
    const agentId = agents[0]!.agentId;
    const scan = await cli(["commands", "queue", "--agent", agentId, "--type", "scan_updates"]);
    expect(scan.code).toBe(1);
    const hint = /^redflag: FailedPrecondition: agent host-\w+ runs 0\.1\.0, below the minimum supported 0\.2\.0: upgrade it first \(`redflag (agents upgrade [0-9a-f-]{36})`\)\n$/.exec(scan.stderr);
    expect(hint, scan.stderr).not.toBeNull();
    const upgrade = await cli(hint![1]!.split(" "));
    expect(upgrade.code, upgrade.stderr).toBe(0);
    const status = await cli(["agents", "upgrade-status", "--agent", agentId, "--state", "queued"]);
    expect(status.stdout).toMatch(/0\.1\.0\s+0\.2\.0\s+queued/);
  }, 120_000);
});

import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome, CommandSchema } from "@redflag/gen/command_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import { type PublishReleaseRequest, PublishReleaseRequestSchema, ReleaseService } from "@redflag/gen/release_service_pb";
import { fromBinary } from "@bufbuild/protobuf";
import { createHash, randomBytes } from "node:crypto";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKeyPair } from "../control-plane/src/signing/keys.ts";
import { newRegistrationToken, nonce, randomMachineId, registerRequest, registerTestAgent, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

async function* stream(data: Uint8Array, version: string, platform: string): AsyncGenerator<PublishReleaseRequest> {
  const sha256 = new Uint8Array(createHash("sha256").update(data).digest());
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version, platform, sizeBytes: BigInt(data.length), sha256 } } });
  yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: data } });
}

// The built console in Debian's Chromium against a real control plane: an admin starts a fleet
// upgrade of a group from the Upgrades page's dialog, reads which agent was skipped and why,
// and follows the progress table until an agent reports the new version.
describe("the console's fleet upgrade, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  const agents: TestAgent[] = [];
  let shots: string;

  beforeAll(async () => {
    // The scheduler moves upgrades on only when the test ticks it.
    session = await startConsoleSession({ env: { REDFLAG_SWEEP_INTERVAL_MS: "3600000" } });
    ({ cp, page, admin, shots } = session);
    const asAdmin = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
    await createClient(ReleaseService, asAdmin).publishRelease(stream(randomBytes(2048), "0.2.0", "linux-x64"));
    const token = await newRegistrationToken(cp);
    for (let i = 0; i < 3; i++) agents.push(await registerTestAgent(cp, token));
    // A Raspberry Pi: no build for linux-arm64 is published.
    const machineId = randomMachineId();
    const pi = await cp.agentClient().register({
      ...registerRequest(token, machineId, generateKeyPair(), "garden-pi"),
      os: { family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12", kernel: "6.1.0", arch: "aarch64" },
    });
    for (const id of [...agents.map((a) => a.agentId), pi.agentId]) await cp.admin.fleet.setAgentLabels({ agentId: id, group: "web", tags: [] });
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  it("starts a fleet upgrade from the dialog, lists the skipped agent with why, and shows progress per agent", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Upgrades", exact: true }).click();
    await page.getByRole("heading", { name: "Agent upgrades" }).waitFor();
    await page.getByText("No agent upgrades yet").waitFor();

    await page.getByRole("button", { name: "Upgrade agents…" }).click();
    const dialog = page.getByRole("dialog", { name: "Upgrade agents" });
    await dialog.getByLabel("Agents", { exact: true }).selectOption("group");
    await dialog.getByLabel("Group", { exact: true }).fill("web");
    // The registry's versions are offered; the default is the newest for each platform.
    expect(await dialog.getByLabel("Release", { exact: true }).locator("option").allTextContents()).toEqual(["Newest for each agent's platform", "0.2.0"]);
    await dialog.getByRole("button", { name: "Queue upgrades" }).click();
    const result = dialog.getByTestId("fleet-upgrade-result");
    await result.waitFor();
    expect(await result.locator("p").first().textContent()).toContain("4 selected: 3 queued, 1 skipped.");
    const skipped = dialog.getByTestId("skipped-row");
    expect(await skipped.count()).toBe(1);
    expect(await skipped.locator("td").allTextContents()).toEqual(["garden-pi", 'no release is published for linux-arm64 (this agent\'s platform) or "any"']);
    await page.screenshot({ path: path.join(shots, "upgrades-dialog.png") });
    await dialog.getByRole("button", { name: "Done" }).click();

    // The table shows this fleet upgrade's agents, each queued.
    expect(page.url()).toMatch(/\/upgrades\?rollout=[0-9a-f-]{36}$/);
    const rows = page.getByTestId("upgrade-row");
    await expect.poll(() => rows.count()).toBe(3);
    expect(await page.getByTestId("upgrade-counts").textContent()).toBe("3 queued");

    // One agent installs and comes back on 0.2.0: its row says succeeded once the page refreshes.
    const agent = agents[0]!;
    const polled = await agent.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0" } });
    const cmd = fromBinary(CommandSchema, polled.commands[0]!.command);
    await agent.client.reportResults({ results: [{ commandId: cmd.id, outcome: CommandOutcome.SUCCEEDED, message: "installed version 0.2.0" }] });
    await agent.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.2.0" } });
    await cp.app.lastSeen.flush();
    await cp.app.scheduler.tick();
    const hostname = (await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent!.hostname;
    const row = rows.filter({ hasText: hostname });
    await expect.poll(() => row.getAttribute("data-state"), { timeout: 20_000 }).toBe("succeeded");
    expect(await row.textContent()).toContain("the agent reports 0.2.0");
    expect(await page.getByTestId("upgrade-counts").textContent()).toBe("2 queued, 1 succeeded");
    await page.screenshot({ path: path.join(shots, "upgrades.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);
});

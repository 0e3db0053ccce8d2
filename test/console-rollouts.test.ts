import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome, CommandSchema, PackageResultState } from "@redflag/gen/command_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports, type PackageUpdateInput } from "../control-plane/src/store/commands.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

const pkg = (name: string): PackageUpdateInput => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion: "1.1",
  repository: "bookworm-security",
  severity: "security",
  security: true,
  sizeBytes: 1000n,
  rebootRequired: false,
});

// The built console in Debian's Chromium against a real control plane: an operator previews a
// rollout of the web group (one named canary, then the rest), starts it, follows the canary's
// install and the promotion to the second ring, and pauses and resumes it.
describe("the console's staged rollouts, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  const agents: TestAgent[] = [];
  const hostnames: string[] = [];
  let shots: string;

  beforeAll(async () => {
    // The scheduler moves the rollout on only when the test ticks it.
    session = await startConsoleSession({ env: { REDFLAG_SWEEP_INTERVAL_MS: "3600000" } });
    ({ cp, page, admin, shots } = session);
    const token = await newRegistrationToken(cp);
    let scanClock = Date.now();
    for (let i = 0; i < 4; i++) {
      const agent = await registerTestAgent(cp, token);
      agents.push(agent);
      await cp.admin.fleet.setAgentLabels({ agentId: agent.agentId, group: "web", tags: [] });
      // Two security updates on each web server, both approved.
      await recordScanReports(cp.app.db.prisma, cp.app.db.statements, agent.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(++scanClock), scan: { updates: [pkg("openssl"), pkg("curl")], parts: 0, sources: ["apt"] } }], { rows: 10_000 });
      hostnames.push((await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent!.hostname);
    }
    const asAdmin = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
    await createClient(UpdateService, asAdmin).approveUpdates({ selection: { all: true } });
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  // The agent takes its install from the queue and reports every package installed.
  async function install(agent: TestAgent): Promise<void> {
    const polled = await agent.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0" } });
    const commands = polled.commands.map((c) => fromBinary(CommandSchema, c.command));
    const cmd = commands.find((c) => c.action.case === "installUpdates");
    expect(cmd, `an install among ${commands.map((c) => c.action.case).join(", ")}`).toBeDefined();
    const packages = ["openssl", "curl"].map((name) => ({ source: "apt", name, architecture: "amd64", fromVersion: "1.0", toVersion: "1.1", state: PackageResultState.INSTALLED }));
    await agent.client.reportResults({ results: [{ commandId: cmd!.id, outcome: CommandOutcome.SUCCEEDED, message: "installed 2 packages", detail: { case: "installUpdates", value: { packages } } }] });
  }

  it("previews and starts a rollout, shows its rings move on, and pauses and resumes it", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Rollouts", exact: true }).click();
    await page.getByRole("heading", { name: "Rollouts" }).first().waitFor();
    await page.getByText("No rollouts yet").waitFor();

    const form = page.getByRole("form", { name: "New rollout" });
    await form.getByLabel("Rollout name").fill("openssl and curl");
    await form.getByLabel("All agents").uncheck();
    await form.getByLabel("Groups").fill("web");
    const canary = form.getByRole("group", { name: "Ring 1" });
    await canary.getByLabel("Size").selectOption("agents");
    await canary.getByLabel("Agents (hostnames or IDs)").fill(hostnames[0]!);
    await canary.getByLabel("Soak time").fill("");
    const rest = form.getByRole("group", { name: "Ring 2" });
    await rest.getByLabel("Success threshold (%)").fill("100");

    await form.getByRole("button", { name: "Preview" }).click();
    const preview = page.getByTestId("rollout-preview");
    await preview.waitFor();
    expect(await preview.locator("p").first().textContent()).toContain("Would place 4 hosts in 2 rings");
    const ringRows = preview.getByTestId("preview-ring");
    expect(await ringRows.nth(0).locator("td").allTextContents()).toEqual(["1. canary", "1", "2"]);
    expect(await ringRows.nth(1).locator("td").allTextContents()).toEqual(["2. rest", "3", "6"]);
    expect(await preview.getByTestId("preview-host").filter({ hasText: hostnames[0]! }).locator("td").allTextContents()).toEqual([hostnames[0]!, "canary", "2"]);
    await page.screenshot({ path: path.join(shots, "rollouts-preview.png"), fullPage: true });

    await form.getByRole("button", { name: "Start rollout" }).click();
    const row = page.getByTestId("rollout");
    await row.waitFor();
    expect(await row.getAttribute("data-state")).toBe("running");
    expect(await row.textContent()).toContain("1 of 2 (canary)");
    const detail = page.getByTestId("rollout-detail");
    await detail.waitFor();
    expect(page.url()).toMatch(/\/rollouts\?id=[0-9a-f-]{36}$/);

    // The scheduler queues the canary's install; the page follows without a reload.
    await cp.app.scheduler.tick();
    const rings = detail.getByTestId("ring");
    await expect.poll(() => rings.nth(0).getAttribute("data-state"), { timeout: 20_000 }).toBe("installing");
    const canaryHost = detail.getByTestId("rollout-host").filter({ hasText: hostnames[0]! });
    await expect.poll(() => canaryHost.getAttribute("data-state"), { timeout: 20_000 }).toBe("installing");
    expect(await canaryHost.getByRole("link", { name: `Install command on ${hostnames[0]}` }).getAttribute("href")).toMatch(/^\/activity\/[0-9a-f-]{36}$/);

    // The canary installs both updates; with no soak the next tick promotes to the rest.
    await install(agents[0]!);
    // The control plane records when agents were last seen in batches: the canary is online.
    await cp.app.lastSeen.flush();
    await cp.app.scheduler.tick();
    await cp.app.scheduler.tick();
    // (A halt would show its reason in the failure.)
    const haltReason = () => detail.getByTestId("halt-reason").textContent({ timeout: 100 }).catch(() => "");
    await expect.poll(async () => `${await rings.nth(0).getAttribute("data-state")} ${await haltReason()}`.trim(), { timeout: 20_000 }).toBe("passed");
    expect(await rings.nth(0).getByTestId("progress").textContent()).toContain("1 succeeded");
    await expect.poll(() => rings.nth(1).getAttribute("data-state"), { timeout: 20_000 }).toBe("installing");
    await expect.poll(() => row.textContent(), { timeout: 20_000 }).toContain("2 of 2 (rest)");
    await page.screenshot({ path: path.join(shots, "rollouts.png"), fullPage: true, style: ".notices { display: none !important; }" });

    // Paused: Resume is offered instead of Pause; resumed: running again.
    await detail.getByRole("button", { name: "Pause" }).click();
    await expect.poll(() => detail.getAttribute("data-state")).toBe("paused");
    await expect.poll(() => row.getAttribute("data-state")).toBe("paused");
    expect(await detail.getByRole("button", { name: "Pause" }).count()).toBe(0);
    await detail.getByRole("button", { name: "Resume" }).click();
    await expect.poll(() => detail.getAttribute("data-state")).toBe("running");
    await expect.poll(() => row.getAttribute("data-state")).toBe("running");

    // On a phone the rollout fits the screen; its tables scroll inside their frames.
    await page.setViewportSize({ width: 375, height: 800 });
    const overflow = await detail.evaluate((el) => el.scrollWidth - el.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.screenshot({ path: path.join(shots, "rollouts-375.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);
});

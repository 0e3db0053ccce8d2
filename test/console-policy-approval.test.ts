import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UpdateService, UpdateStatus } from "@redflag/gen/update_service_pb";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports, type PackageUpdateInput } from "../control-plane/src/store/commands.ts";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "../control-plane/test/support/agents.ts";
import { headerInterceptor, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

const pkg = (name: string, security: boolean): PackageUpdateInput => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion: "2.0",
  repository: security ? "bookworm-security" : "bookworm",
  severity: security ? "security" : "unknown",
  security,
  sizeBytes: 1000n,
  rebootRequired: false,
});

// The built console in Debian's Chromium against a real control plane: an operator previews an
// auto-approval policy on a host's pending updates, saves it, and the leader's next round
// approves what the preview showed, with the policy named as who decided.
describe("the console's auto-approval policies, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  let web: TestAgent;
  let shots: string;

  beforeAll(async () => {
    // The scheduler runs when the test ticks it.
    session = await startConsoleSession({ env: { REDFLAG_SWEEP_INTERVAL_MS: "3600000" } });
    ({ cp, page, admin, shots } = session);
    web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-1" });
    await recordScanReports(cp.app.db.prisma, cp.app.db.statements, web.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(), scan: { updates: [pkg("openssl", true), pkg("tzdata", false)], parts: 0, sources: ["apt"] } }], {
      rows: 10_000,
    });
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  it("previews a policy, saves it, and the scheduler approves what the preview showed", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Policies", exact: true }).click();
    await page.getByRole("heading", { name: "Auto-approval policies" }).waitFor();
    await page.getByText("No policies yet").waitFor();

    const form = page.locator("form", { has: page.locator(".policy-form") });
    await form.getByLabel("Name").fill("security at once");
    await form.getByLabel("Security updates only").check();
    await form.getByRole("button", { name: "Preview" }).click();
    const preview = page.getByTestId("policy-preview");
    await preview.waitFor();
    expect(await preview.locator("p").first().textContent()).toMatch(/Would approve 1 update on 1 host now/);
    expect(await page.getByTestId("preview-match").allTextContents()).toEqual([expect.stringMatching(/^web-1openssl \(apt\)2\.0/)]);

    await form.getByRole("button", { name: "Save policy" }).click();
    const row = page.getByTestId("policy");
    await row.waitFor();
    expect(await row.locator("td").nth(1).textContent()).toBe("security at once");
    expect(await row.textContent()).toContain("security updates");

    // The leader's round applies it: openssl approved by the policy, tzdata still waiting.
    await cp.app.scheduler.tick();
    const updates = createClient(UpdateService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    const listed = await updates.listUpdates({ filter: { agentIds: [web.agentId] } });
    expect(Object.fromEntries(listed.updates.map((u) => [u.update!.name, `${UpdateStatus[u.status]} ${u.decidedBy}`.trim()]))).toEqual({
      openssl: "APPROVED policy: security at once",
      tzdata: "PENDING",
    });
    await page.screenshot({ path: path.join(shots, "policies.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);
});

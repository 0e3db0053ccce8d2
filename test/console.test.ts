import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type BrowserContext } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary } from "@bufbuild/protobuf";
import { CommandOutcome, CommandSchema } from "@redflag/gen/command_pb";
import { recordScanReports } from "../control-plane/src/store/commands.ts";
import { newRegistrationToken, nonce, registerTestAgent } from "../control-plane/test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root, run } from "./support/processes.ts";

// The console in real headless Chromium (Debian's, see ENVIRONMENT.md; .ci/run installs it)
// against a real control plane serving the freshly built console: first-run setup, the
// agent list, sign out and in again, and a wrong password shown as the server's words.
describe("the console in a real browser", () => {
  let cp: TestControlPlane;
  let browser: Browser;
  // One browser profile for the tests: the session cookie carries from one to the next.
  let context: BrowserContext;
  const shots = path.join(root, "test-output", "screenshots");

  beforeAll(async () => {
    const build = await run([path.join(root, "node_modules", "vite", "bin", "vite.js"), "build"], { cwd: path.join(root, "console"), timeoutMs: 120_000 });
    expect(build.code, build.stderr).toBe(0);
    cp = await startTestControlPlane();
    await mkdir(shots, { recursive: true });
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      // playwright-core gives the browser its own fresh profile.
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    context = await browser.newContext();
  });
  afterAll(async () => {
    await browser?.close();
    await cp?.close();
  });

  it("sets up the first admin, shows the fleet, and signs out and in", async () => {
    await registerTestAgent(cp, await newRegistrationToken(cp));
    const page = await context.newPage();
    await page.goto(cp.url);
    await page.getByRole("heading", { name: "Create the first admin" }).waitFor();
    expect(await page.getByTestId("fingerprint").textContent()).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    await page.screenshot({ path: path.join(shots, "setup.png") });

    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password (12 characters or more)").fill("short");
    await page.getByRole("button", { name: "Create admin" }).click();
    await page.getByRole("alert").waitFor();
    expect(await page.getByRole("alert").textContent()).toBe("the password must be at least 12 characters");

    await page.getByLabel("Password (12 characters or more)").fill("a console passphrase");
    await page.getByRole("button", { name: "Create admin" }).click();
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    expect(await page.getByTestId("whoami").textContent()).toBe("admin");
    expect(await page.getByTestId("agent").count()).toBe(1);
    expect(await page.getByTestId("agent").textContent()).toContain("never reported");
    await page.screenshot({ path: path.join(shots, "agents.png") });

    // The session is an HttpOnly cookie: scripts in the page cannot read it.
    expect(await page.evaluate(() => document.cookie)).toBe("");
    const cookies = await context.cookies();
    expect(cookies.find((c) => c.name === "redflag_session")).toMatchObject({ httpOnly: true, sameSite: "Strict" });

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill("not the passphrase");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").waitFor();
    expect(await page.getByRole("alert").textContent()).toBe("wrong username or password");
    await page.getByLabel("Password").fill("a console passphrase");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Agents" }).waitFor();

    await page.close();
  });

  it("approves and installs an update, follows the command live in Activity, and manages tokens", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    await recordScanReports(cp.app.db.prisma, agent.agentId, [
      {
        id: crypto.randomUUID(),
        scanTime: new Date(),
        scannedSources: ["apt"],
        updates: [{ source: "apt", name: "openssl", architecture: "amd64", currentVersion: "3.0.15-1", availableVersion: "3.0.16-1", repository: "bookworm-security", severity: "security", security: true, sizeBytes: 1000n, rebootRequired: false }],
      },
    ]);
    const page = await context.newPage();
    await page.goto(cp.url);
    await page.getByRole("heading", { name: "Agents" }).waitFor();
    await page.getByTestId("live").waitFor();
    const row = page.getByTestId("update").filter({ hasText: "openssl" });
    expect(await row.textContent()).toContain("security");
    await page.getByRole("button", { name: /Approve and install openssl/ }).click();
    await page.getByTestId("update").filter({ hasText: "install queued" }).waitFor();
    await page.locator('[data-testid="command"][data-state="pending"]').filter({ hasText: "install updates" }).waitFor();

    // The agent takes it and reports; the Activity row changes without a reload.
    const polled = await agent.client.pollCommands({ nonce: nonce() });
    const command = fromBinary(CommandSchema, polled.commands[0]!.command);
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "installed 1, failed 0, skipped 0", sequence: command.sequence }] });
    await page.locator('[data-testid="command"][data-state="succeeded"]').filter({ hasText: "installed 1, failed 0, skipped 0" }).waitFor();
    await page.screenshot({ path: path.join(shots, "activity.png"), fullPage: true });

    await page.getByLabel("Seats").fill("2");
    await page.getByLabel("Note").fill("lab machines");
    await page.getByRole("button", { name: "Create token" }).click();
    const secret = (await page.getByTestId("token-secret").textContent())!;
    expect(secret).toMatch(/^rfreg_/);
    expect(await page.getByTestId("install-linux").textContent()).toContain(secret);
    const token = page.getByTestId("token").filter({ hasText: "lab machines" });
    expect(await token.textContent()).toContain("active");
    await token.getByRole("button", { name: /Revoke token/ }).click();
    await page.getByTestId("token").filter({ hasText: "lab machines" }).filter({ hasText: "revoked" }).waitFor();
    await page.screenshot({ path: path.join(shots, "tokens.png"), fullPage: true });

    // Deep links load the console too.
    const deep = await page.goto(`${cp.url}/agents/anything`);
    expect(deep?.status()).toBe(200);
    expect(await page.title()).toBe("RedFlag");
    await page.close();
  });
});

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent } from "../control-plane/test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { root, run } from "./support/processes.ts";

// The console in real headless Chromium (Debian's, see ENVIRONMENT.md; .ci/run installs it)
// against a real control plane serving the freshly built console: first-run setup, the
// agent list, sign out and in again, and a wrong password shown as the server's words.
describe("the console in a real browser", () => {
  let cp: TestControlPlane;
  let browser: Browser;
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
  });
  afterAll(async () => {
    await browser?.close();
    await cp?.close();
  });

  it("sets up the first admin, shows the fleet, and signs out and in", async () => {
    await registerTestAgent(cp, await newRegistrationToken(cp));
    const page = await browser.newPage();
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
    const cookies = await page.context().cookies();
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

    // Deep links load the console too.
    const deep = await page.goto(`${cp.url}/agents/anything`);
    expect(deep?.status()).toBe(200);
    expect(await page.title()).toBe("RedFlag");
    await page.close();
  });
});

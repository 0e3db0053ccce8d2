import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { createRequire } from "node:module";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { buildConsole, launchChromium, navTo } from "./support/browser.ts";
import { root, run } from "./support/processes.ts";

// The console in real headless Chromium (Debian's, see ENVIRONMENT.md; .ci/run installs it)
// against a real control plane serving the freshly built console, and a real agent process
// polling it, on a host whose apt is a stateful fake. What a new operator does: set up, enrol
// the machine from a token made in the browser, see it appear, scan it, approve an update,
// watch the install finish live in Activity, revoke the token. Screenshots of each main page
// land in test-output/screenshots/.
// The agent installs through apt, which needs root; these machines run the tests as root.
// What page.evaluate runs is browser code; this file is typechecked without the DOM library.
declare const document: { cookie: string; documentElement: { scrollWidth: number } };
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

describe.runIf(process.getuid?.() === 0)("the console in a real browser, with a real agent", () => {
  let cp: TestControlPlane;
  let browser: Browser;
  // One browser profile for the whole story: the session cookie carries from step to step.
  let context: BrowserContext;
  let page: Page;
  let work: string;
  let apt: FakeApt;
  let agent: ChildProcess | undefined;
  const agentLog: string[] = [];
  let agentId = "";
  let tokenPrefix = "";
  const host = hostname();
  const shots = path.join(root, "test-output", "screenshots");
  // The main navigation's links (pages have links of the same names in their text).
  const nav = (p: Page, name: string) => p.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });
  // Each main page is photographed (passing notices such as "Scan queued" left out of the
  // pictures: they would cover the page) and checked with axe-core against WCAG 2 A and AA.
  const violations = new Map<string, string[]>();
  const shot = async (name: string, p: Page = page) => {
    await p.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true, style: ".notices { display: none !important; }" });
    await p.addScriptTag({ path: axePath });
    const found = await p.evaluate(async () => {
      const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: { id: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe;
      const res = await axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return res.violations.map((v) => `${v.id} (${v.help}): ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join(", ")}`);
    });
    if (found.length > 0) violations.set(name, found);
  };
  const env = {
    REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
    REDFLAG_AGENT_APT_REFRESH: "0",
    // Poll continuously, each poll held open a few seconds, so queued commands start at once.
    REDFLAG_AGENT_LONG_POLL_SECONDS: "3",
  };

  beforeAll(async () => {
    await buildConsole(120_000);
    cp = await startTestControlPlane({ REDFLAG_POLL_INTERVAL: "3s" });
    work = await mkdtemp(path.join(tmpdir(), "rf-console-"));
    apt = await createFakeApt(work, {
      installed: ["openssl amd64 3.0.15-1~deb12u1", "curl amd64 7.88.1-10+deb12u14", "nginx amd64 1.22.1-9"],
      available: [
        "openssl amd64 3.0.16-1~deb12u1 bookworm-security",
        "curl amd64 7.88.1-10+deb12u15 bookworm-security",
        "nginx amd64 1.22.1-9+deb12u2 bookworm",
        "libnginx-mod-new amd64 1.22.1-9+deb12u2 bookworm",
      ],
      // Earlier versions the repositories still have: what a rollback can go back to.
      older: ["openssl amd64 3.0.15-1~deb12u1 bookworm", "openssl amd64 3.0.11-1~deb12u2 bookworm"],
    });
    await mkdir(shots, { recursive: true });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
  });
  afterAll(async () => {
    agent?.kill("SIGTERM");
    await browser?.close();
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const startAgent = (stateDir: string) => {
    agent = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], {
      cwd: root,
      env: { ...process.env, ...env, PATH: `${apt.bin}:${process.env.PATH}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    agent.stdout!.on("data", (d: Buffer) => agentLog.push(d.toString()));
    agent.stderr!.on("data", (d: Buffer) => agentLog.push(d.toString()));
  };

  it("sets up the first admin, makes a registration token, and the enrolled agent appears", async () => {
    await page.goto(cp.url);
    await page.getByRole("heading", { name: "Create the first admin" }).waitFor();
    await shot("setup");

    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password (12 characters or more)").fill("short");
    await page.getByLabel("Repeat the password").fill("short");
    await page.getByRole("button", { name: "Create admin" }).click();
    expect(await page.getByRole("alert").textContent()).toBe("the password must be at least 12 characters");

    await page.getByLabel("Password (12 characters or more)").fill("a console passphrase");
    await page.getByLabel("Repeat the password").fill("a console passphrase");
    await page.getByRole("button", { name: "Create admin" }).click();
    await page.getByRole("heading", { name: "Confirm the server URL" }).waitFor();
    expect(await page.getByTestId("server-url").textContent()).toBe(cp.url);
    // On a loopback address the wizard warns that other machines cannot reach it.
    await page.getByRole("button", { name: /^(This URL is right|Go on with this URL)$/ }).click();
    const fingerprint = (await page.getByTestId("fingerprint").textContent())!;
    expect(fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    await page.getByRole("button", { name: "Enrol a machine" }).click();

    // The session is an HttpOnly cookie: scripts in the page cannot read it.
    expect(await page.evaluate(() => document.cookie)).toBe("");
    expect((await context.cookies()).find((c) => c.name === "redflag_session")).toMatchObject({ httpOnly: true, sameSite: "Strict" });

    await page.waitForURL(/\/tokens$/);
    await page.getByLabel("Seats").fill("2");
    await page.getByLabel("Note").fill("lab machines");
    await page.getByRole("button", { name: "Create token" }).click();
    const secret = (await page.getByTestId("token-secret").textContent())!.trim();
    expect(secret).toMatch(/^rfreg_/);
    expect(await page.getByTestId("install-linux").textContent()).toContain(secret);
    const token = page.getByTestId("token").filter({ hasText: "lab machines" });
    expect(await token.textContent()).toContain("active");
    tokenPrefix = secret.slice(0, 12);
    await shot("tokens");

    // Enrol this machine with the token from the browser, as the install command does.
    const stateDir = path.join(work, "agent");
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], {
      env: { ...env, PATH: `${apt.bin}:${process.env.PATH}` },
    });
    expect(reg.code, reg.stderr).toBe(0);
    // The agent pinned the key whose fingerprint the setup wizard showed.
    expect(reg.stdout + reg.stderr).toContain(fingerprint);
    startAgent(stateDir);

    await nav(page, "Agents").click();
    const row = page.getByTestId("agent").filter({ hasText: host });
    await row.waitFor();
    agentId = (await row.getAttribute("data-agent-id"))!;
    await page.locator(`[data-testid="agent"][data-health="online"]`).waitFor({ timeout: 30_000 });
    await shot("agents");
  });

  it("scans the host from its page and shows its system, storage and updates", async () => {
    await page.getByTestId("agent").filter({ hasText: host }).getByRole("link", { name: host, exact: true }).click();
    await page.getByRole("heading", { name: host }).waitFor();
    await page.getByRole("button", { name: /^Scan now/ }).first().click();
    await page.getByTestId("notice").filter({ hasText: /Scan queued/i }).waitFor();
    // The agent takes the scan within seconds and the page follows the command live.
    await page.locator('[data-testid="agent-command"][data-state="succeeded"]').filter({ hasText: "scan updates" }).first().waitFor({ timeout: 30_000 });
    await page.reload();
    await page.getByTestId("agent-update").filter({ hasText: "openssl" }).waitFor();
    // openssl, curl and nginx; the new dependency nginx brings is not an update of its own.
    expect(await page.getByTestId("agent-update").count()).toBe(3);
    expect(await page.getByTestId("metric-cpu").textContent()).toMatch(/%/);
    await shot("agent-detail");
  });

  it("approves and installs an update from the Updates page and follows it live in Activity", async () => {
    await nav(page, "Updates").click();
    const openssl = page.getByTestId("update").filter({ hasText: "openssl" });
    await openssl.waitFor();
    expect(await openssl.textContent()).toContain("security");
    await shot("updates");
    await openssl.getByRole("checkbox").check();
    await page.getByRole("button", { name: /^Approve & install/ }).click();
    const confirm = page.getByRole("dialog");
    if (await confirm.isVisible().catch(() => false)) await confirm.getByRole("button", { name: /Approve & install|Confirm|Install/ }).click();
    await page.getByTestId("notice").filter({ hasText: /queued/i }).waitFor();

    await nav(page, "Activity").click();
    await page.getByTestId("live").waitFor();
    const install = page.locator('[data-testid="command"]').filter({ hasText: "install updates" }).first();
    await install.waitFor();
    // The agent installs it and reports; the row changes without a reload.
    await page.locator('[data-testid="command"][data-state="succeeded"]').filter({ hasText: "install updates" }).waitFor({ timeout: 30_000 });
    expect(await install.textContent()).toContain("installed 1, failed 0, skipped 0");
    expect((await apt.installed()).get("openssl")).toBe("3.0.16-1~deb12u1");
    await shot("activity");

    await install.getByRole("link").first().click();
    await page.getByTestId("package-result").filter({ hasText: "openssl" }).filter({ hasText: "3.0.16-1~deb12u1" }).waitFor();
    await shot("command");
  });

  it("previews an upgrade's dependency changes with a dry run, then installs exactly that set", async () => {
    await nav(page, "Updates").click();
    const nginx = page.getByTestId("update").filter({ hasText: "nginx" });
    await nginx.getByRole("checkbox").check();
    await page.getByRole("button", { name: "Preview (dry run)" }).click();
    // The agent simulates the install and the page shows what would change, the new
    // dependency included, before anything is installed.
    const added = page.locator('[data-testid="dry-run-change"][data-kind="install"]').filter({ hasText: "libnginx-mod-new" });
    await added.waitFor({ timeout: 30_000 });
    expect(await page.locator('[data-testid="dry-run-change"][data-kind="upgrade"]').filter({ hasText: "nginx" }).textContent()).toContain("1.22.1-9+deb12u2");
    expect((await apt.installed()).get("nginx")).toBe("1.22.1-9");
    await shot("dry-run");

    await page.getByRole("button", { name: "Confirm and install exactly these" }).click();
    await page.getByTestId("confirm-queued").waitFor();
    await expect.poll(async () => (await apt.installed()).get("libnginx-mod-new"), { timeout: 30_000 }).toBe("1.22.1-9+deb12u2");
    expect((await apt.installed()).get("nginx")).toBe("1.22.1-9+deb12u2");
  });

  it("rolls openssl back from the agent page to a version the host says it can go back to", async () => {
    await nav(page, "Agents").click();
    await page.getByTestId("agent").filter({ hasText: host }).getByRole("link", { name: host, exact: true }).click();
    const installed = page.getByRole("region", { name: "Installed recently" });
    await installed.getByTestId("installed-package").filter({ hasText: "openssl" }).waitFor();
    await installed.getByRole("button", { name: `Roll back openssl on ${host}…` }).click();
    // The page asks the agent, which answers on its next poll; the dialog follows it live.
    const dialog = page.getByRole("dialog", { name: `Roll back openssl on ${host}` });
    const choice = dialog.getByTestId("rollback-version");
    await choice.first().waitFor({ timeout: 30_000 });
    expect((await choice.allTextContents()).map((t) => t.replace(/\s+/g, " ").trim())).toEqual(["3.0.15-1~deb12u1 from bookworm", "3.0.11-1~deb12u2 from bookworm"]);
    await dialog.getByRole("radio", { name: /3\.0\.15-1~deb12u1/ }).check();
    await shot("rollback");
    await dialog.getByRole("button", { name: "Roll back…" }).click();
    await dialog.getByRole("button", { name: "Roll back to 3.0.15-1~deb12u1" }).click();
    await page.getByTestId("notice").filter({ hasText: `Rollback of openssl to 3.0.15-1~deb12u1 queued for ${host}` }).waitFor();
    await expect.poll(async () => (await apt.installed()).get("openssl"), { timeout: 30_000 }).toBe("3.0.15-1~deb12u1");
    await page.locator('[data-testid="agent-command"][data-state="succeeded"]').filter({ hasText: "rollback update" }).first().waitFor({ timeout: 30_000 });
  });

  it("revokes the token, and shows the dashboard, settings, security and audit pages", async () => {
    await navTo(page, "Tokens");
    const token = page.getByTestId("token").filter({ hasText: "lab machines" });
    await token.getByRole("button", { name: /Revoke token/ }).click();
    const confirm = page.getByRole("dialog");
    if (await confirm.isVisible().catch(() => false)) await confirm.getByRole("button", { name: /Revoke/ }).click();
    await page.getByTestId("token").filter({ hasText: "lab machines" }).filter({ hasText: "revoked" }).waitFor();

    await nav(page, "Dashboard").click();
    await page.getByTestId("health-online").waitFor();
    expect(await page.getByTestId("health-online").textContent()).toContain("1");
    await shot("dashboard");

    await nav(page, "Settings").click();
    await page.getByText("How often an idle agent polls").waitFor();
    await shot("settings");
    await navTo(page, "Security");
    await page.getByTestId("active-fingerprint").waitFor();
    await shot("security");
    await navTo(page, "Audit log");
    await page.getByTestId("audit-entry").filter({ hasText: "RevokeRegistrationToken" }).first().waitFor();
    await shot("audit");
  });

  it("says it is reconnecting while the control plane restarts, then carries on by itself", async () => {
    await nav(page, "Agents").click();
    await page.getByTestId("agent").first().waitFor();
    const restarted = cp.restart({ REDFLAG_POLL_INTERVAL: "3s" });
    await page.getByTestId("reconnecting").waitFor({ timeout: 20_000 }).catch(() => undefined);
    cp = await restarted;
    await page.getByTestId("reconnecting").waitFor({ state: "detached", timeout: 30_000 });
    await page.getByTestId("agent").first().waitFor();
    expect(await page.getByRole("alert").count()).toBe(0);
  });

  it("signs out and in again, with a wrong password shown in the server's words", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in to RedFlag" }).waitFor();
    await shot("sign-in");
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill("not the passphrase");
    await page.getByRole("button", { name: "Sign in" }).click();
    expect(await page.getByRole("alert").textContent()).toBe("wrong username or password");
    await page.getByLabel("Password").fill("a console passphrase");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();

    // Deep links load the console too, and an unknown agent says so.
    const deep = await page.goto(`${cp.url}/agents/00000000-0000-4000-8000-000000000000`);
    expect(deep?.status()).toBe(200);
    expect(await page.title()).toBe("RedFlag");
  });

  it("works on a phone-sized screen", async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 375, height: 740 });
    await phone.goto(`${cp.url}/agents`);
    await phone.getByTestId("agent").first().waitFor();
    // The navigation folds into a menu button.
    expect(await nav(phone, "Updates").isVisible()).toBe(false);
    await phone.getByRole("button", { name: "Menu" }).click();
    await nav(phone, "Updates").click();
    await phone.getByTestId("update").first().waitFor();
    // Nothing wider than the screen but the tables' own scrolling.
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    await shot("phone-updates", phone);
    await phone.close();
  });

  it("meets WCAG 2.1 A and AA on every page it showed (axe-core)", () => {
    expect(Object.fromEntries(violations)).toEqual({});
  });
});

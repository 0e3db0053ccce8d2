import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { mkdir } from "node:fs/promises";
import { type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { buildConsole, launchChromium, navTo } from "./support/browser.ts";
import { root, run } from "./support/processes.ts";

// The console as a new user meets it, in Debian's Chromium against a real control plane (on a
// loopback address, as a first try on one machine is) and a real agent on a host with 121
// pending updates, like the Debian host the rough edges were seen on: the setup wizard keeps
// its step and shows the URL warning and the signing-key check; the Tokens page's commands
// each copy with one click; the agent page stays short; absent package sources stay quiet;
// regular updates are "not rated"; the Updates page groups by package; the audit log names its
// targets; unknown pages and the favicon answer properly.
// What page.evaluate runs is browser code; this file is typechecked without the DOM library.
declare const document: {
  documentElement: { scrollHeight: number };
  querySelector(s: string): { getBoundingClientRect(): { top: number } } | null;
};
declare const navigator: { clipboard: { readText(): Promise<string> } };
declare function getSelection(): { toString(): string } | null;
declare const sessionStorage: object;
declare const localStorage: object;

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const REGULAR = 118;
const SECURITY = ["openssl", "libssl3", "curl"];
const pkgName = (i: number) => `lib-regular-${String(i).padStart(3, "0")}`;

describe("the console for a new user, with a real agent on a host with 121 updates", () => {
  let cp: TestControlPlane;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let work: string;
  let apt: FakeApt;
  let agent: ChildProcess | undefined;
  let secret = "";
  let fingerprint = "";
  const host = hostname();
  const env = {
    REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
    REDFLAG_AGENT_APT_REFRESH: "0",
    REDFLAG_AGENT_LONG_POLL_SECONDS: "3",
  };
  const nav = (p: Page, name: string) => p.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });
  // The new views, photographed into test-output/screenshots/ and checked with axe-core against
  // WCAG 2 A and AA, as test/console.test.ts does for the main pages.
  const shots = path.join(root, "test-output", "screenshots");
  const violations = new Map<string, string[]>();
  const shot = async (name: string) => {
    await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true, style: ".notices { display: none !important; }" });
    await page.addScriptTag({ path: axePath });
    const found = await page.evaluate(async () => {
      const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: { id: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe;
      const res = await axe.run((globalThis as unknown as { document: unknown }).document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return res.violations.map((v) => `${v.id} (${v.help}): ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join(", ")}`);
    });
    if (found.length > 0) violations.set(name, found);
  };

  beforeAll(async () => {
    await buildConsole(180_000);
    cp = await startTestControlPlane({ REDFLAG_POLL_INTERVAL: "3s" });
    work = await mkdtemp(path.join(tmpdir(), "rf-first-run-"));
    await mkdir(shots, { recursive: true });
    const regular = Array.from({ length: REGULAR }, (_, i) => pkgName(i));
    apt = await createFakeApt(work, {
      installed: [...SECURITY, ...regular].map((n) => `${n} amd64 1.0-1`),
      available: [...SECURITY.map((n) => `${n} amd64 1.0-2 bookworm-security`), ...regular.map((n) => `${n} amd64 1.0-2 bookworm`)],
    });
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: cp.url });
    page = await context.newPage();
  });
  afterAll(async () => {
    agent?.kill("SIGTERM");
    await browser?.close();
    await cp?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the setup wizard warns about the loopback URL, keeps its step across reloads and shows the signing key", async () => {
    await page.goto(cp.url);
    await page.getByRole("heading", { name: "Create the first admin" }).waitFor();
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Display name").fill("Ada Admin");
    await page.getByLabel("Password (12 characters or more)").fill("a console passphrase");
    await page.getByLabel("Repeat the password").fill("a console passphrase");
    await page.getByRole("button", { name: "Create admin" }).click();
    await page.getByRole("heading", { name: "Confirm the server URL" }).waitFor();
    const warning = page.getByTestId("server-url-warning");
    expect(await warning.textContent()).toContain("other machines cannot reach it");
    expect(await warning.textContent()).toContain("REDFLAG_PUBLIC_URL=");
    await shot("setup-url-warning");
    // The step is in the URL, never the password.
    expect(new URL(page.url()).search).toBe("?step=url");
    await page.reload();
    await page.getByRole("heading", { name: "Confirm the server URL" }).waitFor();
    expect(await page.getByTestId("server-url").textContent()).toBe(cp.url);
    await page.getByRole("button", { name: "Go on with this URL" }).click();
    await page.getByRole("heading", { name: "Check the signing key" }).waitFor();
    await page.reload();
    await page.getByRole("heading", { name: "Check the signing key" }).waitFor();
    fingerprint = (await page.getByTestId("fingerprint").textContent())!;
    await shot("setup-signing-key");
    expect(fingerprint).toMatch(/^([0-9a-f]{2}:){31}[0-9a-f]{2}$/);
    expect(await page.evaluate(() => JSON.stringify(sessionStorage) + JSON.stringify(localStorage))).not.toContain("passphrase");
    await page.getByRole("button", { name: "Enrol a machine" }).click();
    await page.waitForURL(/\/tokens$/);
  });

  it("the Tokens page shows the warning above one block per platform, each copied with one click", async () => {
    await page.getByRole("button", { name: "Create token" }).click();
    secret = (await page.getByTestId("token-secret").textContent())!.trim();
    const warning = page.getByTestId("server-url-warning");
    expect(await warning.textContent()).toContain("Other machines cannot use these commands yet.");
    expect(await page.getByTestId("signing-key-fingerprint").textContent()).toBe(fingerprint);
    const blocks = page.getByTestId("install-block");
    expect(await blocks.evaluateAll((els) => els.map((e) => (e as unknown as { dataset: { platform: string } }).dataset.platform))).toEqual(["linux", "macos", "windows"]);
    // The warning comes first, where it is read before anything is copied.
    const top = (sel: string) => page.evaluate((s) => document.querySelector(s)!.getBoundingClientRect().top, sel);
    expect(await top('[data-testid="server-url-warning"]')).toBeLessThan(await top('[data-testid="install-block"]'));
    for (const platform of ["linux", "macos", "windows"]) {
      const command = (await page.getByTestId(`install-${platform}`).textContent())!;
      expect(command).toContain(secret);
      expect(command).toContain(fingerprint);
      const button = page.locator(`[data-testid="install-block"][data-platform="${platform}"] button`);
      expect(await button.evaluate((b) => (b as unknown as { innerText: string }).innerText)).toBe("Copy");
      await page.getByRole("button", { name: `Copy ${platform} command` }).click();
      await page.getByRole("button", { name: `Copied ${platform} command` }).waitFor();
      expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(command);
    }
    expect(await page.getByTestId("install-linux").textContent()).toContain(`${cp.url}/install/linux.sh`);
    await shot("tokens-install-commands");
  });

  it("copies by selection where the page has no clipboard API (plain http to another machine)", async () => {
    const bare = await context.newPage();
    await bare.addInitScript(() => {
      Object.defineProperty(globalThis.navigator, "clipboard", { value: undefined, configurable: true });
    });
    await bare.goto(`${cp.url}/tokens`);
    await bare.getByRole("button", { name: "Create token" }).click();
    const command = (await bare.getByTestId("install-linux").textContent())!;
    await bare.getByRole("button", { name: "Copy linux command" }).click();
    await bare.getByRole("button", { name: "Copied linux command" }).waitFor();
    expect(await bare.evaluate(() => getSelection()?.toString())).toBe(command);
    await bare.close();
  });

  it("the agent page lists 20 of 121 updates with the rest on request, and the command history in reach", async () => {
    const stateDir = path.join(work, "agent");
    const reg = await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], { env: { ...env, PATH: `${apt.bin}:${process.env.PATH}` } });
    expect(reg.code, reg.stderr).toBe(0);
    agent = spawn(process.execPath, ["agent/src/main.ts", "run", "--state-dir", stateDir], {
      cwd: root,
      env: { ...process.env, ...env, PATH: `${apt.bin}:${process.env.PATH}` },
      stdio: "ignore",
    });
    await nav(page, "Agents").click();
    await page.getByTestId("agent").filter({ hasText: host }).getByRole("link", { name: host, exact: true }).click();
    await page.getByRole("heading", { name: host }).waitFor();
    await page.getByRole("button", { name: /^Scan now/ }).first().click();
    await page.locator('[data-testid="agent-command"][data-state="succeeded"]').filter({ hasText: "scan updates" }).first().waitFor({ timeout: 60_000 });
    // The agent's scan result reads as counted words.
    expect(await page.getByTestId("agent-command").first().textContent()).toContain("found 121 updates, 3 security");
    await page.reload();
    await page.getByTestId("agent-update").first().waitFor();
    expect(await page.getByTestId("agent-update").count()).toBe(20);
    expect(await page.getByTestId("agent-updates-collapse").textContent()).toContain("Showing 20 of 121 updates");
    // Spaced as a sentence: "Linux · Debian …".
    expect(await page.getByTestId("agent-system").textContent()).toMatch(/^Linux · /);
    // Regular Debian updates are "not rated", never "unknown".
    const rows = page.getByTestId("agent-update");
    expect(await rows.filter({ hasText: "not rated" }).count()).toBe(17);
    expect(await rows.filter({ hasText: "unknown" }).count()).toBe(0);
    // Short enough that the command history is near; and linked from the top.
    await shot("agent-detail-121-updates");
    const collapsed = await page.evaluate(() => document.documentElement.scrollHeight);
    expect(collapsed).toBeLessThan(5000);
    await page.getByRole("navigation", { name: "On this page" }).getByRole("link", { name: "Command history" }).click();
    expect(page.url()).toMatch(/#commands-heading$/);
    await page.getByRole("button", { name: "Show all 121" }).click();
    expect(await page.getByTestId("agent-update").count()).toBe(121);
    await page.getByRole("button", { name: "Show only the first 20" }).click();
    expect(await page.getByTestId("agent-update").count()).toBe(20);

    // Package sources this Debian host does not have: one quiet line, not a row each.
    const absent = (await page.getByTestId("absent-subsystems").textContent())!;
    expect(absent).toMatch(/^\s*Not on this host: .*dnf.*zypper/);
    const subsystems = await page.getByTestId("subsystem").evaluateAll((els) => els.map((e) => (e as unknown as { dataset: { name: string } }).dataset.name));
    expect(subsystems).toContain("apt");
    expect(subsystems).not.toContain("dnf");
  });

  it("the scan's own page lists only the sources that ran, the rest in one line", async () => {
    await page.getByTestId("agent-command").filter({ hasText: "scan updates" }).first().getByRole("link").first().click();
    await page.getByTestId("absent-sources").waitFor();
    expect(await page.getByTestId("result-message").textContent()).toContain("found 121 updates, 3 security");
    expect(await page.getByTestId("absent-sources").textContent()).toMatch(/Not on this host: .*dnf/);
    const runs = await page.getByTestId("subsystem-run").allTextContents();
    expect(runs.some((r) => r.includes("apt") && r.includes("scanned"))).toBe(true);
    expect(runs.join(" ")).not.toContain("not present");
    expect(runs.join(" ")).not.toContain("(s)");
    await shot("scan-result");
  });

  it("the Updates page says matches right, rates regular updates \"not rated\", and groups by package", async () => {
    await page.goto(`${cp.url}/updates?package=openssl`);
    expect(await page.getByTestId("total").textContent()).toMatch(/^\s*1 update matches these filters/);
    expect(await page.getByRole("group", { name: "Severity" }).getByText("not rated").count()).toBe(1);
    await page.goto(`${cp.url}/updates?severity=unknown`);
    expect(await page.getByTestId("total").textContent()).toMatch(/^\s*118 updates match these filters/);

    await page.goto(`${cp.url}/updates`);
    await page.getByRole("navigation", { name: "Show updates" }).getByRole("link", { name: "By package" }).click();
    await page.waitForURL(/view=packages/);
    await page.getByTestId("package-update").first().waitFor();
    expect(await page.getByTestId("package-total").textContent()).toMatch(/121 packages with pending updates/);
    // Security fixes first.
    const first = page.getByTestId("package-update").first();
    expect(await first.getAttribute("data-package")).toMatch(/^(openssl|libssl3|curl)$/);
    expect(await first.getByTestId("host-count").textContent()).toContain("1 host");
    await first.getByTestId("host-count").click();
    const hosts = page.getByTestId("package-hosts");
    await hosts.getByRole("link", { name: host }).waitFor();
    expect(await hosts.getByRole("link", { name: host }).getAttribute("href")).toMatch(/^\/agents\/[0-9a-f-]{36}$/);
    await shot("updates-by-package");
    // Filters keep the view.
    await page.getByLabel("Security fixes only").check();
    await expect.poll(() => page.getByTestId("package-update").count()).toBe(3);
    expect(page.url()).toContain("view=packages");
  });

  it("the audit log names its targets, linked", async () => {
    await navTo(page, "Audit log");
    await page.getByTestId("audit-entry").first().waitFor();
    // The token made on the Tokens page, by its prefix, and the agent by its hostname.
    await page.getByTestId("audit-target").filter({ hasText: secret.slice(0, 12) }).first().waitFor();
    const body = (await page.locator("main").textContent())!;
    expect(body).not.toMatch(/registration_token:[0-9a-f-]{36}/);
    expect(body).not.toMatch(/agent:[0-9a-f-]{36}/);
    expect(await page.getByTestId("audit-target").filter({ hasText: host }).first().getAttribute("href")).toMatch(/^\/agents\//);
    await shot("audit-targets");
  });

  it("answers unknown pages with a page that offers a way back, and serves a favicon", async () => {
    const res = await page.goto(`${cp.url}/no-such-page`);
    expect(res?.status()).toBe(200);
    await page.getByRole("heading", { name: "Page not found" }).waitFor();
    expect(await page.getByTestId("error-page").textContent()).toContain("/no-such-page");
    await shot("not-found");
    await page.getByRole("link", { name: "Go to the dashboard" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    expect(await page.locator('link[rel="icon"]').first().getAttribute("href")).toMatch(/favicon\.svg$/);
    for (const [file, type] of [["favicon.svg", "image/svg+xml"], ["favicon.ico", "image/x-icon"]]) {
      const icon = await fetch(`${cp.url}/${file}`);
      expect(icon.status).toBe(200);
      expect(icon.headers.get("content-type")).toBe(type);
    }
  });

  it("meets WCAG 2.1 A and AA on every view it showed (axe-core)", () => {
    expect(Object.fromEntries(violations)).toEqual({});
  });
});

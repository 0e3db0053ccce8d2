import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { expect } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../../control-plane/test/support/control-plane.ts";
import { root, run } from "./processes.ts";

// The console tests' browser: Debian's Chromium driven by playwright-core (which gives it a
// fresh profile), headless and without the background networking this closed network refuses.
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export const launchChromium = (): Promise<Browser> => chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });

// This run of vitest: every test file runs in a fork of the same vitest process (pool
// "forks"), whose start time tells it from an earlier process that had the same PID.
async function thisRun(): Promise<string> {
  const stat = await readFile(`/proc/${process.ppid}/stat`, "utf8").catch(() => "");
  return `${process.ppid} ${stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? ""}`;
}

// The console built as the control plane serves it (`vite build` in console/), once per run:
// test files run side by side, and two builds in one folder trip over each other's output. One
// builds at a time (a lock folder), and a build another file of this run made is used as is.
export async function buildConsole(timeoutMs = 180_000): Promise<void> {
  const lock = path.join(root, "console", ".test-build-lock");
  const stamp = path.join(root, "console", "build", ".test-run");
  const run_ = await thisRun();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      // A lock older than a build can take was left by a run that was killed.
      const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now());
      if (age > timeoutMs) await rm(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`the console build lock ${lock} stayed taken`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  try {
    if ((await readFile(stamp, "utf8").catch(() => "")) === run_) return;
    const build = await run([path.join(root, "node_modules", "vite", "bin", "vite.js"), "build"], { cwd: path.join(root, "console"), timeoutMs });
    expect(build.code, build.stderr).toBe(0);
    await writeFile(stamp, run_);
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

export interface ConsoleSessionOptions {
  // Control-plane settings beyond the test defaults, such as a scheduler only the test ticks.
  env?: Record<string, string>;
  // The first admin, made with AuthService.Setup before the browser opens.
  username?: string;
  password?: string;
  viewport?: { width: number; height: number };
}

export interface ConsoleSession {
  // The control plane serving the built console at cp.url.
  cp: TestControlPlane;
  browser: Browser;
  // A page in its own browser context, not signed in yet.
  page: Page;
  admin: { username: string; password: string };
  // Where screenshots go (test-output/screenshots/), made if missing.
  shots: string;
  // Closes the browser, then the control plane.
  close(): Promise<void>;
}

// What most console tests start from: the console built, a control plane serving it on a
// port of its own with a first admin already set up, and Chromium open on an empty page. If a
// step fails, what was already started is closed before the error is thrown: the caller never
// gets a session to close.
export async function startConsoleSession(options: ConsoleSessionOptions = {}): Promise<ConsoleSession> {
  const admin = { username: options.username ?? "admin", password: options.password ?? "a console passphrase" };
  const shots = path.join(root, "test-output", "screenshots");
  await buildConsole(180_000);
  let cp: TestControlPlane | undefined;
  let browser: Browser | undefined;
  const close = async () => {
    await browser?.close();
    await cp?.close();
  };
  try {
    cp = await startTestControlPlane(options.env);
    await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).setup(admin);
    await mkdir(shots, { recursive: true });
    browser = await launchChromium();
    const page = await (await browser.newContext({ viewport: options.viewport ?? { width: 1280, height: 900 } })).newPage();
    return { cp, browser, page, admin, shots, close };
  } catch (err) {
    await close();
    throw err;
  }
}

// Signs in on the console's login page, as a person does.
export async function signIn(page: Page, baseUrl: string, username: string, password: string): Promise<void> {
  await page.goto(`${baseUrl}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

// Follows a link of the main navigation, as a person does: the admins' pages (Tokens, Security,
// Audit log, Notifications) sit behind the "Admin" button, opened first when they are hidden.
export async function navTo(page: Page, name: string): Promise<void> {
  const nav = page.getByRole("navigation", { name: "Main" });
  const link = nav.getByRole("link", { name, exact: true });
  if (!(await link.isVisible())) await nav.getByRole("button", { name: "Admin" }).click();
  await link.click();
}

import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { expect } from "vitest";
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

import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { expect } from "vitest";
import { root, run } from "./processes.ts";

// The console tests' browser: Debian's Chromium driven by playwright-core (which gives it a
// fresh profile), headless and without the background networking this closed network refuses.
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export const launchChromium = (): Promise<Browser> => chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });

// The console built as the control plane serves it (`vite build` in console/).
export async function buildConsole(timeoutMs = 180_000): Promise<void> {
  const build = await run([path.join(root, "node_modules", "vite", "bin", "vite.js"), "build"], { cwd: path.join(root, "console"), timeoutMs });
  expect(build.code, build.stderr).toBe(0);
}

// Signs in on the console's login page, as a person does.
export async function signIn(page: Page, baseUrl: string, username: string, password: string): Promise<void> {
  await page.goto(`${baseUrl}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

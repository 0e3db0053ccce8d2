import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

// The page's DOM as far as these checks read it inside the browser (test files compile without lib "dom").
declare const document: { activeElement: { value?: string; getAttribute(name: string): string | null } | null };

// The built console in Debian's Chromium against a real control plane: an admin previews a
// weekly Berlin window, creates it, finds it in the list, and edits it.
describe("the console's maintenance windows, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  let shots: string;

  beforeAll(async () => {
    session = await startConsoleSession();
    ({ cp, page, admin, shots } = session);
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  it("previews a definition, creates the window and lists it", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Windows", exact: true }).click();
    await page.getByRole("heading", { name: "Maintenance windows" }).waitFor();
    await page.getByText("No windows yet").waitFor();

    await page.getByLabel("Name").fill("db saturdays");
    await page.getByLabel("Rule (RRULE)").fill("FREQ=WEEKLY;BYDAY=SA");
    await page.getByLabel("First start (local)").fill("2026-03-21T22:00");
    await page.getByLabel("Lasts").fill("5h");
    await page.getByLabel("Time zone").fill("Europe/Berlin");
    await page.getByLabel("Groups").fill("db");
    await page.getByRole("button", { name: "Preview" }).click();
    const occurrences = page.getByTestId("occurrence");
    await expect.poll(() => occurrences.count()).toBe(10);
    // The next ten from now, each at 22:00 Berlin time for five hours of elapsed time: 03:00,
    // or 04:00 summer time on the night the clocks go forward, 02:00 winter time when they go back.
    const shown = await occurrences.allTextContents();
    for (const line of shown) expect(line).toMatch(/^\d{4}-\d{2}-\d{2}T22:00:00\+0[12]:00 → \d{4}-\d{2}-\d{2}T0[234]:00:00\+0[12]:00$/);

    await page.getByRole("button", { name: "Create window" }).click();
    const row = page.getByTestId("window");
    await row.waitFor();
    expect(await row.locator("td").first().textContent()).toBe("db saturdays");
    expect(await row.textContent()).toContain("group db");
    await page.screenshot({ path: path.join(shots, "windows.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);

  it("edits the window in the same form: prefilled, previewed, refused in the server's words, saved", async () => {
    const row = page.getByTestId("window");
    await row.getByRole("button", { name: "Edit db saturdays" }).click();
    const form = page.getByRole("form", { name: "Edit window db saturdays" });
    await form.waitFor();
    expect(await page.evaluate(() => document.activeElement?.value)).toBe("db saturdays");
    expect(await form.getByLabel("First start (local)").inputValue()).toBe("2026-03-21T22:00");
    expect(await form.getByLabel("Lasts").inputValue()).toBe("5h");
    expect(await form.getByLabel("Time zone").inputValue()).toBe("Europe/Berlin");
    expect(await form.getByLabel("Groups").inputValue()).toBe("db");

    // The control plane's refusal beside the form; the window stays as it was.
    await form.getByLabel("Time zone").fill("Mars/Olympus");
    await form.getByRole("button", { name: "Save changes" }).click();
    await expect.poll(async () => (await form.getByRole("alert").textContent()) ?? "").toContain('time_zone "Mars/Olympus" is not an IANA time zone');
    expect(await row.textContent()).toContain("Europe/Berlin");

    await form.getByLabel("Time zone").fill("Europe/Berlin");
    await form.getByLabel("Lasts").fill("3h");
    await form.getByLabel("Tags").fill("frozen");
    await form.getByRole("button", { name: "Preview" }).click();
    await page.getByRole("heading", { name: "Next occurrences of the changes to db saturdays" }).waitFor();
    for (const line of await page.getByTestId("occurrence").allTextContents()) expect(line).toMatch(/T22:00:00\+0[12]:00 → \d{4}-\d{2}-\d{2}T0[012]:00:00\+0[12]:00$/);
    await form.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("form", { name: "New window" }).waitFor();
    await expect.poll(() => row.textContent()).toContain("3 h");
    expect(await row.textContent()).toContain("group db, tag frozen");
    expect(await page.getByTestId("window").count()).toBe(1);
    // Focus is back on the row's Edit button; Escape on a new edit leaves the window alone.
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Edit db saturdays");
    await page.keyboard.press("Enter");
    await page.getByRole("form", { name: "Edit window db saturdays" }).getByLabel("Name").fill("renamed");
    await page.keyboard.press("Escape");
    await page.getByRole("form", { name: "New window" }).waitFor();
    expect(await row.locator("td").first().textContent()).toBe("db saturdays");
  }, 120_000);
});

import { createRequire } from "node:module";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

// The page's DOM as far as these checks read it inside the browser (test files compile without lib "dom").
interface Rect { top: number; bottom: number; left: number; right: number }
interface Node_ {
  textContent: string | null;
  children: ArrayLike<Node_>;
  lastElementChild: Node_ | null;
  getBoundingClientRect(): Rect;
  querySelector(selector: string): Node_ | null;
  querySelectorAll(selector: string): Iterable<Node_>;
  getAttribute(name: string): string | null;
  closest(selector: string): Node_ | null;
  cloneNode(deep: boolean): Node_;
  insertBefore(node: Node_, before: Node_ | null): void;
}
declare const document: { querySelector(selector: string): Node_ | null; activeElement: Node_ | null; documentElement: { scrollWidth: number } };

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

// The main navigation's entries, the admins' group aside, and every page it leads to.
const ENTRIES = ["Dashboard", "Agents", "Updates", "Policies", "Activity", "Upgrades", "Windows", "Settings"];
const PAGES = ["/", "/agents", "/updates", "/policies", "/activity", "/upgrades", "/windows", "/settings", "/tokens", "/security", "/audit", "/notifications"];

// The header's items (brand, each navigation entry, the account) as boxes on the page.
async function headerBoxes(page: Page) {
  return page.evaluate(() => {
    const box = (el: Node_) => {
      const r = el.getBoundingClientRect();
      return { text: (el.textContent ?? "").trim().replace(/\s+/g, " "), top: r.top, bottom: r.bottom, left: r.left, right: r.right };
    };
    const header = document.querySelector("header.top")!;
    return {
      header: box(header),
      // Each entry's own link or button (the Admin entry's list is hidden until opened).
      items: [...header.querySelectorAll("nav#nav > ul > li > :first-child")].map(box),
      brand: box(header.querySelector(".brand")!),
      me: box(header.querySelector(".me")!),
    };
  });
}

// The built console in Chromium at 1280 × 800, signed in as an admin with a long name: the
// main navigation stays on one row, also with one more entry (Rollouts), and every page it
// names can be reached with the keyboard alone.
describe("the console's main navigation, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  let shots: string;

  beforeAll(async () => {
    session = await startConsoleSession({ username: "margaret.hamilton", viewport: { width: 1280, height: 800 } });
    ({ cp, page, admin, shots } = session);
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  it("keeps an admin's full navigation on one row at 1280 px, with room for a Rollouts entry", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("heading", { name: "Dashboard" }).first().waitFor();
    const { header, items, brand, me } = await headerBoxes(page);
    const names = items.map((i) => i.text);
    // Every entry of today's menu in order (pages added later, such as Rollouts, may sit between them), the Admin group last.
    expect(names.filter((n) => ENTRIES.includes(n))).toEqual(ENTRIES);
    expect(names.at(-1)).toBe("Admin ▾");
    // One row: every entry, the brand and the account share the first entry's line.
    for (const b of [...items, brand, me]) {
      expect(Math.abs(b.top + b.bottom - (items[0]!.top + items[0]!.bottom)) / 2, `"${b.text}" is off the first row`).toBeLessThan(8);
    }
    expect(header.bottom - header.top).toBeLessThan(64);

    // The Rollouts entry other work adds: until it is there, a stand-in as wide, still on one row.
    if (!names.includes("Rollouts")) {
      await page.evaluate(() => {
        const list = document.querySelector("nav#nav > ul")!;
        const extra = list.children[5]!.cloneNode(true); // "Upgrades"
        extra.querySelector("a")!.textContent = "Rollouts";
        list.insertBefore(extra, list.lastElementChild);
      });
      const more = await headerBoxes(page);
      for (const b of [...more.items, more.me]) expect(Math.abs(b.top - more.items[0]!.top), `"${b.text}" wrapped`).toBeLessThan(8);
    }
    await page.screenshot({ path: path.join(shots, "nav-1280.png"), clip: { x: 0, y: 0, width: 1280, height: 120 } });
    await page.reload();
  }, 120_000);

  it("reaches every page with the keyboard: the Admin button opens its links, Escape closes them", async () => {
    await page.goto(`${cp.url}/`);
    await page.getByRole("heading", { name: "Dashboard" }).first().waitFor();
    const nav = page.getByRole("navigation", { name: "Main" });
    const admin = nav.getByRole("button", { name: "Admin" });
    expect(await admin.getAttribute("aria-expanded")).toBe("false");
    expect(await nav.getByRole("link", { name: "Tokens", exact: true }).isVisible()).toBe(false);

    // Tab from the brand through the navigation; Enter on the Admin button opens it.
    await page.locator(".brand").focus();
    const reached: string[] = [];
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press("Tab");
      const focused = await page.evaluate(() => {
        const el = document.activeElement;
        return { href: el?.getAttribute("href") ?? "", text: el?.textContent?.trim() ?? "", expanded: el?.getAttribute("aria-expanded") ?? "", inNav: !!el?.closest("nav#nav") };
      });
      if (!focused.inNav) break;
      if (focused.href) reached.push(focused.href);
      if (focused.expanded === "false") {
        await page.keyboard.press("Enter");
        expect(await admin.getAttribute("aria-expanded")).toBe("true");
      }
    }
    // Each page once (pages added later may be among them).
    expect(reached.filter((href) => PAGES.includes(href))).toEqual(PAGES);
    expect(new Set(reached).size).toBe(reached.length);
    // Tabbing on out of it closed it.
    expect(await admin.getAttribute("aria-expanded")).toBe("false");

    // Escape closes it and puts the focus back on its button.
    await admin.focus();
    await page.keyboard.press("Enter");
    await nav.getByRole("link", { name: "Audit log", exact: true }).waitFor();
    await page.addScriptTag({ path: axePath });
    const violations = await page.evaluate(async () => {
      const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: { id: string; nodes: { target: string[] }[] }[] }> } }).axe;
      const res = await axe.run("header.top", { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return res.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    });
    expect(violations).toEqual([]);
    await page.screenshot({ path: path.join(shots, "nav-admin-open.png"), clip: { x: 0, y: 0, width: 1280, height: 300 } });
    await page.keyboard.press("Tab");
    await page.keyboard.press("Escape");
    expect(await admin.getAttribute("aria-expanded")).toBe("false");
    expect(await page.evaluate(() => document.activeElement?.textContent?.trim())).toMatch(/^Admin/);
    expect(await nav.getByRole("link", { name: "Tokens", exact: true }).isVisible()).toBe(false);

    // A link in it leads to its page; the menu closes and the button shows the page is inside.
    await admin.click();
    await nav.getByRole("link", { name: "Notifications", exact: true }).click();
    await page.getByRole("heading", { name: "Notifications", level: 1 }).waitFor();
    expect(await admin.getAttribute("aria-expanded")).toBe("false");
    expect(await admin.textContent()).toContain("(current section)");
    // A click elsewhere closes it too.
    await admin.click();
    await page.getByRole("heading", { name: "Notifications", level: 1 }).click();
    expect(await admin.getAttribute("aria-expanded")).toBe("false");
  }, 120_000);

  it("lists the admins' pages with the rest in the phone menu", async () => {
    const phone = await page.context().newPage();
    await phone.setViewportSize({ width: 375, height: 740 });
    await phone.goto(`${cp.url}/`);
    await phone.getByRole("heading", { name: "Dashboard" }).first().waitFor();
    await phone.getByRole("button", { name: "Menu" }).click();
    const nav = phone.getByRole("navigation", { name: "Main" });
    for (const name of ["Settings", "Tokens", "Security", "Audit log", "Notifications"]) expect(await nav.getByRole("link", { name, exact: true }).isVisible(), name).toBe(true);
    expect(await nav.getByRole("button", { name: "Admin" }).isVisible()).toBe(false);
    await nav.getByRole("link", { name: "Audit log", exact: true }).click();
    await phone.getByRole("heading", { name: "Audit log", level: 1 }).waitFor();
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    await phone.close();
  }, 60_000);
});

import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

// The built console in Debian's Chromium against a real control plane: an admin creates an
// auto-approval policy, then edits it in the same form, the control plane's refusal shown in
// its words beside it.
describe("the console's policies page, in a real browser", () => {
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

  it("creates a policy and edits it: prefilled, refused in the server's words, saved", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Policies", exact: true }).click();
    await page.getByText(/No policies yet/).waitFor();
    const create = page.getByRole("form", { name: "New policy" });
    await create.getByLabel("Name").fill("security soon");
    await create.getByLabel("Security updates only").check();
    await create.getByLabel("Delay after first seen").fill("2d");
    await create.getByRole("button", { name: "Save policy" }).click();
    const row = page.getByTestId("policy");
    await row.waitFor();
    expect(await row.textContent()).toContain("2 d after first seen");

    await row.getByRole("button", { name: "Edit security soon" }).click();
    const form = page.getByRole("form", { name: "Edit policy security soon" });
    await form.waitFor();
    expect(await form.getByLabel("Name").inputValue()).toBe("security soon");
    expect(await form.getByLabel("Security updates only").isChecked()).toBe(true);
    expect(await form.getByLabel("Delay after first seen").inputValue()).toBe("2d");

    await form.getByLabel("Security updates only").uncheck();
    await form.getByRole("button", { name: "Save changes" }).click();
    await expect.poll(async () => (await form.getByRole("alert").textContent()) ?? "").toMatch(/^definition\.criteria is empty: a rule needs at least one of/);

    await form.getByLabel("Security updates only").check();
    await form.getByLabel("Groups").fill("web");
    await form.getByLabel("Delay after first seen").fill("1w");
    await form.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("form", { name: "New policy" }).waitFor();
    await expect.poll(() => row.textContent()).toContain("7 d after first seen");
    expect(await row.textContent()).toContain("security updates; in group web");
    expect(await page.getByTestId("policy").count()).toBe(1);
    await page.screenshot({ path: path.join(shots, "policies-edited.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);
});

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MaintenanceService, RebootMode } from "@redflag/gen/maintenance_service_pb";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headerInterceptor, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { navTo, signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

// The page's DOM as far as these checks read it inside the browser (test files compile without lib "dom").
declare const document: { activeElement: { value?: string; getAttribute(name: string): string | null } | null };

// The built console in Debian's Chromium against a real control plane: an admin creates a reboot
// policy on the Windows page (refused first for a hook that is a path), finds it listed, edits it
// in the same form and deletes it; the control plane keeps what the page shows.
describe("the console's reboot policies, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let page: Page;
  let admin: ConsoleSession["admin"];
  let shots: string;
  const saved = async () => {
    const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
    return (await createClient(MaintenanceService, transport).listRebootPolicies({})).policies;
  };

  beforeAll(async () => {
    session = await startConsoleSession();
    ({ cp, page, admin, shots } = session);
  }, 300_000);
  afterAll(async () => {
    await session?.close();
  });

  it("creates a policy, refused first for a hook that is a path, and lists it", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await navTo(page, "Windows");
    await page.getByRole("heading", { name: "Reboot policies" }).waitFor();
    await page.getByText("No reboot policies").waitFor();

    const form = page.getByRole("form", { name: "New reboot policy" });
    await form.getByLabel("Reboot policy", { exact: true }).fill("web nightly");
    await form.getByLabel("Mode").selectOption("always");
    await form.getByLabel("Group(s)").fill("web");
    await form.getByLabel("Only in a maintenance window").check();
    await form.getByLabel("Pre-reboot hook").fill("../bin/drain");
    await form.getByRole("button", { name: "Create reboot policy" }).click();
    await expect.poll(async () => (await form.getByRole("alert").textContent()) ?? "").toContain('policy.pre_hook "../bin/drain" is not a hook name');
    expect(await saved()).toEqual([]);

    await form.getByLabel("Pre-reboot hook").fill("drain");
    await form.getByRole("button", { name: "Create reboot policy" }).click();
    const row = page.getByTestId("reboot-policy");
    await row.waitFor();
    expect((await row.locator("td").allTextContents()).slice(0, 7).map((t) => t.trim())).toEqual(["web nightly", "always", "group web", "in a maintenance window", "before: drain (5 min each)", "15 min", "enabled"]);
    expect(await saved()).toMatchObject([{ spec: { name: "web nightly", mode: RebootMode.ALWAYS, windowOnly: true, preHook: "drain", postHook: "", targets: { groups: ["web"] } } }]);
    await page.screenshot({ path: path.join(shots, "reboot-policies.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);

  it("edits it in the same form, prefilled; Escape leaves it; then deletes it", async () => {
    const row = page.getByTestId("reboot-policy");
    await row.getByRole("button", { name: "Edit reboot policy web nightly" }).click();
    const form = page.getByRole("form", { name: "Edit reboot policy web nightly" });
    await form.waitFor();
    expect(await page.evaluate(() => document.activeElement?.value)).toBe("web nightly");
    expect(await form.getByLabel("Mode").inputValue()).toBe("always");
    expect(await form.getByLabel("Group(s)").inputValue()).toBe("web");
    expect(await form.getByLabel("Only in a maintenance window").isChecked()).toBe(true);
    expect(await form.getByLabel("Pre-reboot hook").inputValue()).toBe("drain");
    expect(await form.getByLabel("Hook time limit").inputValue()).toBe("5m");

    // The control plane's refusal beside the form; the policy stays as it was.
    await form.getByLabel("Hook time limit").fill("2h");
    await form.getByRole("button", { name: "Save changes" }).click();
    await expect.poll(async () => (await form.getByRole("alert").textContent()) ?? "").toBe("policy.hook_timeout must be from 1 second to 30 minutes");
    expect(await saved()).toMatchObject([{ spec: { hookTimeout: { seconds: 300n } } }]);

    await form.getByLabel("Hook time limit").fill("2m");
    await form.getByLabel("Mode").selectOption("when required");
    await form.getByLabel("Post-reboot hook").fill("undrain");
    await form.getByLabel("Only in a maintenance window").uncheck();
    await form.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("form", { name: "New reboot policy" }).waitFor();
    await expect.poll(async () => (await row.locator("td").allTextContents()).slice(0, 5).map((t) => t.trim())).toEqual(["web nightly", "when required", "group web", "at once", "before: drain, after: undrain (2 min each)"]);
    const [policy] = await saved();
    expect(policy).toMatchObject({ spec: { name: "web nightly", mode: RebootMode.WHEN_REQUIRED, windowOnly: false, preHook: "drain", postHook: "undrain", hookTimeout: { seconds: 120n }, enabled: true } });
    // Focus is back on the row's Edit button; Escape on a new edit leaves the policy alone.
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Edit reboot policy web nightly");
    await page.keyboard.press("Enter");
    await page.getByRole("form", { name: "Edit reboot policy web nightly" }).getByLabel("Reboot policy", { exact: true }).fill("renamed");
    await page.keyboard.press("Escape");
    await page.getByRole("form", { name: "New reboot policy" }).waitFor();
    expect(await row.locator("td").first().textContent()).toBe("web nightly");
    expect((await saved())[0]?.spec?.name).toBe("web nightly");

    await row.getByRole("button", { name: "Delete reboot policy web nightly" }).click();
    await page.getByRole("button", { name: "Yes" }).click();
    await page.getByText("No reboot policies").waitFor();
    expect(await saved()).toEqual([]);
  }, 120_000);
});

import { createHmac } from "node:crypto";
import path from "node:path";
import { type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { startHttpReceiver, type HttpReceiver } from "../control-plane/test/support/receivers.ts";
import { navTo, signIn, startConsoleSession, type ConsoleSession } from "./support/browser.ts";

const SIGNING = "a webhook signing secret";
const SIGNING_2 = "the second signing secret";

// The built console in Debian's Chromium against a real control plane and a real HTTP
// receiver: an admin adds a webhook channel on the Notifications page, sends it a test
// message, and sees it arrive (signed) and appear in the delivery log; a receiver that
// refuses is reported in the server's words; editing the channel keeps its sealed secrets
// unless new ones are given.
describe("the console's notifications page, in a real browser", () => {
  let session: ConsoleSession;
  let cp: TestControlPlane;
  let receiver: HttpReceiver;
  let page: Page;
  let admin: ConsoleSession["admin"];
  let shots: string;

  beforeAll(async () => {
    session = await startConsoleSession();
    ({ cp, page, admin, shots } = session);
    receiver = await startHttpReceiver();
  }, 300_000);
  afterAll(async () => {
    await receiver?.close();
    await session?.close();
  });

  it("adds a webhook channel, sends a test message that arrives signed, and shows it in the delivery log", async () => {
    await signIn(page, cp.url, admin.username, admin.password);
    await navTo(page, "Notifications");
    await page.getByRole("heading", { name: "Notifications", level: 1 }).waitFor();
    await page.getByText(/No channels yet. Add one below/).waitFor();
    await page.getByText("Nothing sent yet").waitFor();

    const form = page.getByRole("form", { name: "New channel" });
    await form.getByLabel("Kind").selectOption({ label: "Webhook" });
    await form.getByLabel("Name").fill("receiver");
    await form.getByLabel("URL").fill(`${receiver.url}/hook`);
    await form.getByLabel("Signing secret", { exact: false }).fill(SIGNING);
    await form.getByRole("button", { name: "Add channel" }).click();
    const row = page.getByTestId("channel");
    await row.waitFor();
    expect(await row.textContent()).toContain("signing secret set");
    expect(await page.content()).not.toContain(SIGNING);

    await row.getByRole("button", { name: "Send a test message to receiver" }).click();
    const outcome = page.getByTestId("test-outcome");
    await outcome.waitFor();
    expect(await outcome.textContent()).toContain("Test message delivered to receiver.");
    // It arrived at the receiver, signed over the timestamp and the body as docs/notifications.md says.
    const hook = receiver.requests.filter((r) => r.path === "/hook").at(-1)!;
    expect(hook.method).toBe("POST");
    const timestamp = String(hook.headers["x-redflag-timestamp"]);
    const expected = createHmac("sha256", SIGNING).update(`${timestamp}.${hook.body}`).digest("hex");
    expect(hook.headers["x-redflag-signature"]).toBe(`sha256=${expected}`);
    expect(JSON.parse(hook.body)).toMatchObject({ event: "test" });

    const log = page.getByTestId("delivery");
    await expect.poll(() => log.count()).toBe(1);
    expect(await log.getAttribute("data-status")).toBe("sent");
    expect(await log.locator("td").nth(1).textContent()).toBe("receiver");
    expect(await log.locator("td").nth(5).textContent()).toBe("1");

    // A receiver that refuses: the server's words beside the button and in the log.
    receiver.answers.push((res) => res.writeHead(404).end("no_such_hook"));
    await row.getByRole("button", { name: "Send a test message to receiver" }).click();
    await expect.poll(() => outcome.getAttribute("data-delivered")).toBe("false");
    expect(await outcome.textContent()).toContain("not delivered: the receiver answered 404: no_such_hook");
    await expect.poll(() => log.count()).toBe(2);
    expect(await log.first().getAttribute("data-status")).toBe("failed");
    expect(await log.first().textContent()).toContain("the receiver answered 404: no_such_hook");
    await page.screenshot({ path: path.join(shots, "notifications.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);

  it("edits the channel: empty secret fields keep the sealed secrets, filled ones replace them", async () => {
    const signedWith = (secret: string, hook: { headers: Record<string, string | string[] | undefined>; body: string }) =>
      hook.headers["x-redflag-signature"] === `sha256=${createHmac("sha256", secret).update(`${String(hook.headers["x-redflag-timestamp"])}.${hook.body}`).digest("hex")}`;
    const row = page.getByTestId("channel");
    await row.getByRole("button", { name: "Edit channel receiver" }).click();
    let form = page.getByRole("form", { name: "Edit channel receiver" });
    await form.waitFor();
    expect(await form.getByLabel("Kind").isDisabled()).toBe(true);
    expect(await form.getByLabel("URL").inputValue()).toBe("");
    expect(await form.getByLabel("Signing secret", { exact: false }).inputValue()).toBe("");
    expect(await form.getByTestId("secret-hint").textContent()).toContain("signing secret set. Leave the secret fields empty to keep them.");
    await form.getByLabel("Name").fill("receiver-2");
    await form.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("form", { name: "New channel" }).waitFor();
    await expect.poll(() => row.getAttribute("data-name")).toBe("receiver-2");

    // Still delivered to the same URL, signed with the same secret.
    await row.getByRole("button", { name: "Send a test message to receiver-2" }).click();
    await expect.poll(async () => (await page.getByTestId("test-outcome").textContent()) ?? "").toContain("Test message delivered to receiver-2.");
    const kept = receiver.requests.filter((r) => r.path === "/hook").at(-1)!;
    expect(signedWith(SIGNING, kept)).toBe(true);

    // A new URL without its signing secret is refused in the server's words; with it, both are replaced.
    await row.getByRole("button", { name: "Edit channel receiver-2" }).click();
    form = page.getByRole("form", { name: "Edit channel receiver-2" });
    await form.getByLabel("URL").fill(`${receiver.url}/hook2`);
    await form.getByRole("button", { name: "Save changes" }).click();
    await expect.poll(async () => (await form.getByRole("alert").textContent()) ?? "").toBe("a webhook channel needs secrets.signing_secret");
    await form.getByLabel("Signing secret", { exact: false }).fill(SIGNING_2);
    await form.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("form", { name: "New channel" }).waitFor();
    await row.getByRole("button", { name: "Send a test message to receiver-2" }).click();
    await expect.poll(() => receiver.requests.filter((r) => r.path === "/hook2").length).toBe(1);
    expect(signedWith(SIGNING_2, receiver.requests.find((r) => r.path === "/hook2")!)).toBe(true);
    expect(await page.content()).not.toContain(SIGNING_2);
    await page.screenshot({ path: path.join(shots, "notifications-edited.png"), fullPage: true, style: ".notices { display: none !important; }" });
  }, 120_000);
});

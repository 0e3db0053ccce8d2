import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Role } from "@redflag/gen/identity_pb";
import { ChannelKind, NotificationChannelSchema, NotificationDeliverySchema } from "@redflag/gen/notification_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { notificationServer } from "#lib/testing/notification-server.ts";
import Notifications from "./+page.svelte";

const asAdmin = () => (session.principal = { kind: "session", role: Role.ADMIN, user: { username: "ana" } } as never);

const SLACK_ID = "11111111-1111-4111-8111-111111111111";
const slack = () =>
  create(NotificationChannelSchema, {
    id: SLACK_ID,
    name: "ops-slack",
    kind: ChannelKind.SLACK,
    enabled: true,
    secretHint: "hooks.slack.com/…a1b2",
    ntfyPriority: 0,
    createTime: timestampFromDate(new Date(Date.now() - 86_400_000)),
  });

const delivery = (i: number) =>
  create(NotificationDeliverySchema, {
    id: `d-${i}`,
    channelId: SLACK_ID,
    channelName: "ops-slack",
    ruleId: "r",
    event: "install_failed",
    status: "sent",
    attempts: 1,
    title: `Install failed: host-${i}`,
    eventCount: 1,
    createTime: timestampFromDate(new Date(Date.now() - i * 60_000)),
  });

const channelForm = () => screen.getByRole("form", { name: "New channel" });
const ruleForm = () => screen.getByRole("form", { name: "New rule" });
async function fill(label: string, value: string, form = channelForm()) {
  await fireEvent.input(within(form).getByLabelText(label, { exact: false }), { target: { value } });
}

describe("the notifications page", () => {
  beforeEach(() => {
    setTestUrl("/notifications");
    notices.list = [];
    asAdmin();
  });

  it("tells non-admins plainly and never asks the server", async () => {
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
    const server = notificationServer({ channels: [slack()] });
    renderWithApi(Notifications, server.routes);
    expect(screen.getByText("Only admins can manage notifications.")).toBeTruthy();
    await new Promise((r) => setTimeout(r, 20));
    expect(server.calls).toEqual([]);
  });

  it("shows empty states that say what to do", async () => {
    renderWithApi(Notifications, notificationServer().routes);
    expect(await screen.findByText(/No channels yet. Add one below/)).toBeTruthy();
    expect(await screen.findByText(/No rules yet/)).toBeTruthy();
    expect(await screen.findByText(/Nothing sent yet/)).toBeTruthy();
  });

  it("adds a webhook channel with its URL and signing secret, and lists it by a hint, never the secret", async () => {
    const server = notificationServer();
    renderWithApi(Notifications, server.routes);
    await screen.findByText(/No channels yet/);
    await fill("Name", "receiver");
    await fill("URL", "https://hooks.example.com/redflag/abcdef123456");
    await fill("Signing secret", "short");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    // The server's own refusal, and nothing added.
    expect((await within(channelForm()).findByRole("alert")).textContent).toBe("secrets.signing_secret must be 16 to 256 characters");
    expect(server.channels).toEqual([]);

    await fill("Signing secret", "a signing secret of some length");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    const row = await screen.findByTestId("channel");
    expect(server.creates.at(-1)).toMatchObject({ name: "receiver", kind: ChannelKind.WEBHOOK, secrets: { url: "https://hooks.example.com/redflag/abcdef123456", signingSecret: "a signing secret of some length", token: "", smtpPassword: "" } });
    expect(server.creates.at(-1)!.email).toBeUndefined();
    expect(row.textContent).toContain("Webhook");
    expect(row.textContent).toContain("hooks.example.com/…3456, signing secret set");
    expect(document.body.textContent).not.toContain("a signing secret of some length");
    expect(notices.list.at(-1)?.text).toBe("Channel receiver added; send it a test message to check it.");
    expect(within(channelForm()).queryByRole("alert")).toBeNull();
  });

  it("asks each kind for what it needs and sends only that", async () => {
    const server = notificationServer();
    renderWithApi(Notifications, server.routes);
    await screen.findByText(/No channels yet/);
    const kind = screen.getByLabelText("Kind");

    await fireEvent.change(kind, { target: { value: String(ChannelKind.SLACK) } });
    expect(screen.queryByLabelText("Signing secret", { exact: false })).toBeNull();
    await fill("Name", "ops-slack");
    await fill("Slack webhook URL", "ftp://hooks.slack.com/x");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    expect((await within(channelForm()).findByRole("alert")).textContent).toBe("secrets.url must be an http:// or https:// URL");
    await fill("Slack webhook URL", "https://hooks.slack.com/services/T0/B0/a1b2");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    await screen.findByTestId("channel");
    expect(server.creates.at(-1)!.secrets).toMatchObject({ url: "https://hooks.slack.com/services/T0/B0/a1b2", token: "", signingSecret: "" });

    await fireEvent.change(kind, { target: { value: String(ChannelKind.NTFY) } });
    await fill("Name", "phone");
    await fill("Topic URL", "https://ntfy.sh/redflag-alerts");
    await fill("Access token", "tk_abcdefghijkl");
    await fireEvent.change(screen.getByLabelText("Priority"), { target: { value: "4" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    await waitFor(() => expect(screen.getAllByTestId("channel")).toHaveLength(2));
    expect(server.creates.at(-1)).toMatchObject({ kind: ChannelKind.NTFY, ntfyPriority: 4, secrets: { url: "https://ntfy.sh/redflag-alerts", token: "tk_abcdefghijkl" } });

    await fireEvent.change(kind, { target: { value: String(ChannelKind.GOTIFY) } });
    await fill("Name", "gotify");
    await fill("Gotify server URL", "https://gotify.example.com");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    expect((await within(channelForm()).findByRole("alert")).textContent).toBe("a gotify channel needs secrets.token");
  });

  it("adds an email channel with its server, addresses and password", async () => {
    const server = notificationServer();
    renderWithApi(Notifications, server.routes);
    await screen.findByText(/No channels yet/);
    await fireEvent.change(screen.getByLabelText("Kind"), { target: { value: String(ChannelKind.EMAIL) } });
    expect(screen.queryByLabelText("URL", { exact: false })).toBeNull();
    await fill("Name", "mail");
    await fill("SMTP host", "smtp.example.com");
    await fill("SMTP port", "465");
    await fireEvent.change(screen.getByLabelText("Security"), { target: { value: "tls" } });
    await fill("SMTP password", "hunter2hunter2");
    await fill("From", "redflag@example.com");
    await fill("To", "ops@example.com, oncall@example.com");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    expect((await within(channelForm()).findByRole("alert")).textContent).toBe("secrets.smtp_password needs email.smtp_username");

    await fill("SMTP user", "redflag");
    await fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    const row = await screen.findByTestId("channel");
    expect(server.creates.at(-1)).toMatchObject({
      kind: ChannelKind.EMAIL,
      secrets: { url: "", smtpPassword: "hunter2hunter2" },
      email: { smtpHost: "smtp.example.com", smtpPort: 465, smtpSecurity: "tls", smtpUsername: "redflag", from: "redflag@example.com", to: ["ops@example.com", "oncall@example.com"] },
    });
    expect(row.textContent).toContain("smtp.example.com:465, redflag@example.com → ops@example.com, oncall@example.com (redflag with a password)");
    expect(row.textContent).not.toContain("hunter2");
  });

  it("sends a test message and shows how it went in the server's words, then in the delivery log", async () => {
    const server = notificationServer({ channels: [slack()] });
    renderWithApi(Notifications, server.routes);
    const row = await screen.findByTestId("channel");
    await screen.findByText(/Nothing sent yet/);

    await fireEvent.click(within(row).getByRole("button", { name: "Send a test message to ops-slack" }));
    const outcome = await screen.findByTestId("test-outcome");
    expect(outcome.dataset.delivered).toBe("true");
    expect(outcome.textContent).toContain("Test message delivered to ops-slack.");
    const sent = await screen.findByTestId("delivery");
    expect(sent.dataset.status).toBe("sent");
    expect(sent.textContent).toContain("Test message");

    server.receiver.error = "the receiver answered 404: no_such_hook";
    await fireEvent.click(within(row).getByRole("button", { name: "Send a test message to ops-slack" }));
    await waitFor(() => expect(screen.getByTestId("test-outcome").dataset.delivered).toBe("false"));
    expect(screen.getByTestId("test-outcome").textContent).toContain("Test message to ops-slack not delivered: the receiver answered 404: no_such_hook");
    await waitFor(() => expect(screen.getAllByTestId("delivery")).toHaveLength(2));
    const failed = screen.getAllByTestId("delivery")[0]!;
    expect(failed.dataset.status).toBe("failed");
    expect(failed.textContent).toContain("the receiver answered 404: no_such_hook");
  });

  it("adds a rule with events, severity, groups, channels, quiet hours and a group window, and refuses what the server refuses", async () => {
    const server = notificationServer({ channels: [slack()] });
    renderWithApi(Notifications, server.routes);
    await screen.findByText(/No rules yet/);
    await fill("Name", "failures", ruleForm());
    await fireEvent.click(screen.getByRole("button", { name: "Add rule" }));
    expect((await within(ruleForm()).findByRole("alert")).textContent).toBe(
      "events must name at least one of install_failed, install_succeeded, security_event, agent_upgrade_failed, critical_updates, agent_offline, agent_back, reboot_required, reboot_done, rollout_halted, rollout_finished",
    );

    const form = ruleForm();
    await fireEvent.click(within(form).getByLabelText("Install failed"));
    await fireEvent.click(within(form).getByLabelText("Agent upgrade failed"));
    await fireEvent.change(within(form).getByLabelText("Minimum severity"), { target: { value: "warning" } });
    await fireEvent.input(within(form).getByLabelText("Agent groups", { exact: false }), { target: { value: "web, DB" } });
    await fireEvent.click(within(form).getByLabelText("ops-slack"));
    await fireEvent.click(within(form).getByLabelText("Hold messages back during quiet hours"));
    await fireEvent.input(within(form).getByLabelText("Time zone"), { target: { value: "Mars/Olympus" } });
    await fireEvent.input(within(form).getByLabelText("Group window"), { target: { value: "5m" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add rule" }));
    expect((await within(ruleForm()).findByRole("alert")).textContent).toBe('quiet_hours.time_zone "Mars/Olympus" is not an IANA time zone (for example Europe/Berlin)');
    expect(server.rules).toEqual([]);

    await fireEvent.input(within(form).getByLabelText("Time zone"), { target: { value: "Europe/Berlin" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add rule" }));
    const row = await screen.findByTestId("rule");
    expect(server.ruleCreates.at(-1)!.rule).toMatchObject({
      name: "failures",
      events: ["install_failed", "agent_upgrade_failed"],
      minSeverity: "warning",
      groups: ["web", "DB"],
      channelIds: [SLACK_ID],
      quietHours: { start: "22:00", end: "07:00", timeZone: "Europe/Berlin" },
      groupWindow: { seconds: 300n },
    });
    const cells = within(row).getAllByRole("cell").map((c) => c.textContent?.trim());
    expect(cells.slice(0, 7)).toEqual(["failures", "Install failed, Agent upgrade failed", "warning", "web, db", "ops-slack", "22:00–07:00 Europe/Berlin", "5 min"]);
    expect(notices.list.at(-1)?.text).toBe("Rule failures added.");
  });

  it("says how to write a group window that is not a duration", async () => {
    const server = notificationServer({ channels: [slack()] });
    renderWithApi(Notifications, server.routes);
    await screen.findByText(/No rules yet/);
    await fireEvent.input(within(ruleForm()).getByLabelText("Group window"), { target: { value: "soon" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add rule" }));
    expect((await within(ruleForm()).findByRole("alert")).textContent).toBe('Write the group window as a duration such as "60s", "5m" or "1h".');
    expect(server.calls).not.toContain("createRule");
  });

  it("asks before deleting; a channel a rule uses stays, with the server's reason, until the rule goes", async () => {
    const server = notificationServer({ channels: [slack()] });
    renderWithApi(Notifications, server.routes);
    await screen.findByTestId("channel");
    await fill("Name", "on call", ruleForm());
    await fireEvent.click(within(ruleForm()).getByLabelText("Security event"));
    await fireEvent.click(within(ruleForm()).getByLabelText("ops-slack"));
    await fireEvent.click(screen.getByRole("button", { name: "Add rule" }));
    await screen.findByTestId("rule");

    await fireEvent.click(screen.getByRole("button", { name: "Delete channel ops-slack" }));
    const dialog = screen.getByRole("dialog", { name: "Delete channel ops-slack?" });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(server.calls).not.toContain("deleteChannel");
    await fireEvent.click(screen.getByRole("button", { name: "Delete channel ops-slack" }));
    await fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete channel" }));
    expect((await screen.findByRole("alert")).textContent).toBe('Could not delete ops-slack: the channel is used by rule "on call": remove it from them first');
    expect(screen.getByTestId("channel")).toBeTruthy();

    await fireEvent.click(screen.getByRole("button", { name: "Delete rule on call" }));
    await fireEvent.click(within(screen.getByRole("dialog", { name: "Delete rule on call?" })).getByRole("button", { name: "Delete rule" }));
    await waitFor(() => expect(screen.queryByTestId("rule")).toBeNull());
    await fireEvent.click(screen.getByRole("button", { name: "Delete channel ops-slack" }));
    await fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete channel" }));
    await waitFor(() => expect(screen.queryByTestId("channel")).toBeNull());
    expect(server.channels).toEqual([]);
    expect(notices.list.at(-1)?.text).toBe("Channel ops-slack deleted.");
  });

  it("pages the delivery log, with status, attempts and the last error", async () => {
    const many = Array.from({ length: 60 }, (_, i) => delivery(i));
    many[0] = create(NotificationDeliverySchema, { ...delivery(0), status: "waiting", attempts: 3, lastError: "the receiver answered 503", nextAttemptTime: timestampFromDate(new Date(Date.now() + 120_000)) });
    renderWithApi(Notifications, notificationServer({ channels: [slack()], deliveries: many }).routes);
    await waitFor(() => expect(screen.getAllByTestId("delivery")).toHaveLength(50));
    const first = screen.getAllByTestId("delivery")[0]!;
    expect(first.dataset.status).toBe("waiting");
    const cells = within(first).getAllByRole("cell").map((c) => c.textContent?.trim());
    expect(cells.slice(1)).toEqual(["ops-slack", "Install failed", "Install failed: host-0", "waiting due in 2 min", "3", "the receiver answered 503"]);
    await fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(screen.getAllByTestId("delivery")).toHaveLength(60));
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
  });
});

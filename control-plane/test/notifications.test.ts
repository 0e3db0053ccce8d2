import { toJson } from "@bufbuild/protobuf";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ChannelKind, ListChannelsResponseSchema, NotificationService } from "@redflag/gen/notification_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runNotifications, type NotifierDeps } from "../src/domain/notifications.ts";
import { DeliveryError, sendToChannel } from "../src/domain/notification-senders.ts";
import { loadMasterKey } from "../src/signing/master-key.ts";
import { recordResults } from "../src/store/commands.ts";
import { recordSecurityEvent } from "../src/store/security-events.ts";
import { insertAgent } from "./support/medium.ts";
import { runInProcess } from "./support/cli.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { startHttpReceiver, startSmtpReceiver, type HttpReceiver, type SmtpReceiver } from "./support/receivers.ts";

// NotificationService end to end: a real control plane, a real HTTP receiver and a real SMTP
// server; the outbox run by the leader's job with a clock the test sets.

type Verify = (secret: string, timestamp: unknown, signature: unknown, rawBody: string, nowMs?: number) => boolean;

let cp: TestControlPlane;
let api: Client<typeof NotificationService>;
let receiver: HttpReceiver;
let smtp: SmtpReceiver;
let deps: NotifierDeps;
let verify: Verify;
let scratch: string;

beforeAll(async () => {
  // The scheduler's own timer stays out of the way: the test runs the job with its clock.
  cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
  api = createClient(NotificationService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
  receiver = await startHttpReceiver();
  smtp = await startSmtpReceiver();
  deps = { db: cp.app.db.prisma, masterKey: await loadMasterKey(undefined, cp.dataDir) };
  // The receiver-side check exactly as docs/notifications.md gives it to people.
  const doc = await readFile(path.join(import.meta.dirname, "../../docs/notifications.md"), "utf8");
  const snippet = /```js\n([\s\S]*?)```/.exec(doc)![1]!;
  scratch = await mkdtemp(path.join(tmpdir(), "redflag-notify-"));
  await writeFile(path.join(scratch, "verify.mjs"), snippet);
  verify = ((await import(pathToFileURL(path.join(scratch, "verify.mjs")).href)) as { verifyRedFlagSignature: Verify }).verifyRedFlagSignature;
});
afterAll(async () => {
  await receiver?.close();
  await smtp?.close();
  await cp?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const SIGNING = "whsec-SECRET-0123456789";
const last = (p: string) => receiver.requests.filter((r) => r.path === p).at(-1)!;

describe("NotificationService", () => {
  it("creates a channel of every kind, keeps its secrets sealed and never returns them, and sends each a test message in its own format", async () => {
    const r = receiver.url;
    const made = {
      webhook: await api.createChannel({ name: "hook", kind: ChannelKind.WEBHOOK, secrets: { url: `${r}/hook?t=SECRET1`, signingSecret: SIGNING } }),
      slack: await api.createChannel({ name: "slack", kind: ChannelKind.SLACK, secrets: { url: `${r}/slack/T0/B0/SECRET2` } }),
      discord: await api.createChannel({ name: "discord", kind: ChannelKind.DISCORD, secrets: { url: `${r}/discord/1/SECRET3` } }),
      teams: await api.createChannel({ name: "teams", kind: ChannelKind.TEAMS, secrets: { url: `${r}/teams/SECRET4` } }),
      ntfy: await api.createChannel({ name: "ntfy", kind: ChannelKind.NTFY, secrets: { url: `${r}/ntfy-SECRET5`, token: "tk_SECRET6" }, ntfyPriority: 4 }),
      gotify: await api.createChannel({ name: "gotify", kind: ChannelKind.GOTIFY, secrets: { url: `${r}/gotify/`, token: "ASECRET7" } }),
      email: await api.createChannel({
        name: "mail",
        kind: ChannelKind.EMAIL,
        secrets: { smtpPassword: "pw-SECRET8" },
        email: { smtpHost: "127.0.0.1", smtpPort: smtp.port, smtpSecurity: "none", smtpUsername: "redflag", from: "redflag@example.com", to: ["ops@example.com", "oncall@example.com"] },
      }),
    };
    expect(made.slack.channel).toMatchObject({ name: "slack", kind: ChannelKind.SLACK, enabled: true, secretHint: expect.stringMatching(/^127\.0\.0\.1:\d+\/…RET2$/) });
    expect(made.email.channel).toMatchObject({ secretHint: "redflag with a password", email: { smtpHost: "127.0.0.1", to: ["ops@example.com", "oncall@example.com"] } });

    // No RPC answer, no row outside the sealed column and no audit entry holds a secret.
    const listed = JSON.stringify(toJson(ListChannelsResponseSchema, await api.listChannels({})));
    expect(listed).not.toMatch(/SECRET/);
    const rows = await deps.db.notificationChannel.findMany();
    expect(rows).toHaveLength(7);
    for (const row of rows) {
      expect(Buffer.from(row.secrets).toString("latin1")).not.toMatch(/SECRET/);
      expect(JSON.stringify({ ...row, secrets: undefined })).not.toMatch(/SECRET/);
    }
    const audits = await deps.db.auditEntry.findMany({ where: { action: "redflag.v1.NotificationService/CreateChannel" } });
    expect(audits).toHaveLength(7);
    expect(JSON.stringify(audits, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toMatch(/SECRET/);

    for (const res of Object.values(made)) {
      const sent = await api.sendTestMessage({ channelId: res.channel!.id });
      expect({ name: res.channel!.name, delivered: sent.delivered, error: sent.error }).toEqual({ name: res.channel!.name, delivered: true, error: "" });
      expect(sent.delivery).toMatchObject({ status: "sent", attempts: 1, event: "test", channelName: res.channel!.name });
    }

    const hook = last("/hook?t=SECRET1");
    expect(hook.headers["content-type"]).toBe("application/json");
    expect(verify(SIGNING, hook.headers["x-redflag-timestamp"], hook.headers["x-redflag-signature"], hook.body)).toBe(true);
    expect(verify(SIGNING, hook.headers["x-redflag-timestamp"], hook.headers["x-redflag-signature"], hook.body.replace("test", "tost"))).toBe(false);
    expect(verify("another secret", hook.headers["x-redflag-timestamp"], hook.headers["x-redflag-signature"], hook.body)).toBe(false);
    // An old timestamp is refused: a captured request cannot be replayed later.
    expect(verify(SIGNING, hook.headers["x-redflag-timestamp"], hook.headers["x-redflag-signature"], hook.body, Date.now() + 600_000)).toBe(false);
    expect(JSON.parse(hook.body)).toMatchObject({ event: "test", severity: "info", title: "Test message: RedFlag", event_count: 1 });

    expect(JSON.parse(last("/slack/T0/B0/SECRET2").body)).toEqual({ text: expect.stringMatching(/^\*Test message: RedFlag\*\nRedFlag: a test message sent by /) });
    expect(JSON.parse(last("/discord/1/SECRET3").body)).toMatchObject({ content: expect.stringMatching(/^\*\*Test message: RedFlag\*\*\n/), allowed_mentions: { parse: [] } });
    expect(JSON.parse(last("/teams/SECRET4").body)).toMatchObject({ type: "message", attachments: [{ contentType: "application/vnd.microsoft.card.adaptive", content: { type: "AdaptiveCard" } }] });
    const ntfy = last("/ntfy-SECRET5");
    expect(ntfy.headers).toMatchObject({ title: "Test message: RedFlag", priority: "4", authorization: "Bearer tk_SECRET6" });
    expect(ntfy.body).toMatch(/^RedFlag: a test message/);
    const gotify = last("/gotify/message");
    expect(gotify.headers["x-gotify-key"]).toBe("ASECRET7");
    expect(JSON.parse(gotify.body)).toMatchObject({ title: "Test message: RedFlag", priority: 2 });
    const mail = smtp.mails.at(-1)!;
    expect(mail).toMatchObject({ from: "redflag@example.com", to: ["ops@example.com", "oncall@example.com"], user: "redflag", password: "pw-SECRET8" });
    expect(mail.data).toMatch(/Subject: \[RedFlag\] Test message: RedFlag/);

    const log = await api.listDeliveries({});
    expect(log.deliveries).toHaveLength(7);
    expect(new Set(log.deliveries.map((d) => d.status))).toEqual(new Set(["sent"]));
    const page = await api.listDeliveries({ pageSize: 5 });
    const rest = await api.listDeliveries({ pageSize: 5, pageToken: page.nextPageToken });
    expect([...page.deliveries, ...rest.deliveries].map((d) => d.id).sort()).toEqual(log.deliveries.map((d) => d.id).sort());

    // New secrets replace the old ones; the hint follows, the audit records only that they changed.
    const updated = await api.updateChannel({ id: made.slack.channel!.id, secrets: { url: `${r}/slack/T0/B0/SECRET9` }, enabled: false });
    expect(updated.channel).toMatchObject({ enabled: false, secretHint: expect.stringMatching(/…RET9$/) });
    const changes = await deps.db.auditEntry.findMany({ where: { action: "redflag.v1.NotificationService/UpdateChannel" } });
    expect(changes.map((a) => a.after)).toEqual([expect.objectContaining({ enabled: false, secretsReplaced: true })]);
    expect(JSON.stringify(changes.map((a) => [a.before, a.after]))).not.toMatch(/SECRET/);
    // A test may be sent to a disabled channel, to try it before enabling it.
    expect((await api.sendTestMessage({ channelId: made.slack.channel!.id })).delivered).toBe(true);
    expect(last("/slack/T0/B0/SECRET9").body).toMatch(/Test message/);
  });

  it("refuses bad input with a clear message and the right code, and changes nothing", async () => {
    const before = await deps.db.notificationChannel.count();
    const refused = async (p: Promise<unknown>, code: Code, message: RegExp) => {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code, rawMessage: expect.stringMatching(message) });
    };
    await refused(api.createChannel({ name: "x", secrets: { url: "https://example.com" } }), Code.InvalidArgument, /kind is required/);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.SLACK }), Code.InvalidArgument, /a slack channel needs secrets.url/);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.SLACK, secrets: { url: "ftp://example.com/x" } }), Code.InvalidArgument, /http:\/\/ or https:\/\//);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.SLACK, secrets: { url: "https://e.com/x", signingSecret: "0123456789abcdef" } }), Code.InvalidArgument, /takes no secrets.signing_secret/);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.WEBHOOK, secrets: { url: "https://e.com/x", signingSecret: "short" } }), Code.InvalidArgument, /16 to 256/);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.EMAIL, email: { smtpHost: "mail", from: "a@b", to: [] } }), Code.InvalidArgument, /1 to 20 addresses/);
    await refused(api.createChannel({ name: "x", kind: ChannelKind.NTFY, secrets: { url: "https://ntfy.sh/t" }, ntfyPriority: 9 }), Code.InvalidArgument, /ntfy_priority/);
    await refused(api.createChannel({ name: "hook", kind: ChannelKind.SLACK, secrets: { url: "https://e.com/x" } }), Code.AlreadyExists, /"hook" already exists/);
    await refused(api.updateChannel({ id: "00000000-0000-4000-8000-000000000000", enabled: true }), Code.NotFound, /no notification channel/);
    await refused(api.updateChannel({ id: "nope" }), Code.InvalidArgument, /id must be a UUID/);
    expect(await deps.db.notificationChannel.count()).toBe(before);

    const hook = (await api.listChannels({})).channels.find((c) => c.name === "hook")!;
    const rule = (more: object) => ({ rule: { name: "r", enabled: true, events: ["install_failed"], channelIds: [hook.id], ...more } });
    await refused(api.createRule(rule({ events: ["everything"] })), Code.InvalidArgument, /"everything" is not an event/);
    await refused(api.createRule(rule({ minSeverity: "loud" })), Code.InvalidArgument, /min_severity/);
    await refused(api.createRule(rule({ quietHours: { start: "22:00", end: "07:00", timeZone: "Mars/Olympus" } })), Code.InvalidArgument, /not an IANA time zone/);
    await refused(api.createRule(rule({ quietHours: { start: "25:00", end: "07:00", timeZone: "UTC" } })), Code.InvalidArgument, /HH:MM/);
    await refused(api.createRule(rule({ channelIds: ["00000000-0000-4000-8000-000000000000"] })), Code.NotFound, /no notification channel/);
    await refused(api.createRule(rule({ groupWindow: { seconds: 1n } })), Code.InvalidArgument, /group_window/);
    expect(await deps.db.notificationRule.count()).toBe(0);

    const made = await api.createRule(rule({}));
    await refused(api.deleteChannel({ id: hook.id }), Code.FailedPrecondition, /used by rule "r"/);
    await api.deleteRule({ id: made.rule!.id });
    expect(await deps.db.auditEntry.count({ where: { action: { in: ["redflag.v1.NotificationService/CreateRule", "redflag.v1.NotificationService/DeleteRule"] } } })).toBe(2);
  });

  it("says why a test message was not delivered; requests are bounded in time, size and redirects", async () => {
    const { channel } = await api.createChannel({ name: "bounded", kind: ChannelKind.SLACK, secrets: { url: `${receiver.url}/bounded` } });
    receiver.answers.push((res) => res.writeHead(404).end("no_such_hook"));
    expect(await api.sendTestMessage({ channelId: channel!.id })).toMatchObject({ delivered: false, error: "the receiver answered 404: no_such_hook", delivery: { status: "failed", attempts: 1 } });

    // Another host (localhost is not 127.0.0.1): refused, not followed.
    receiver.answers.push((res) => res.writeHead(307, { location: receiver.url.replace("127.0.0.1", "localhost") + "/elsewhere" }).end());
    expect((await api.sendTestMessage({ channelId: channel!.id })).error).toMatch(/redirected \(307\) to another host \(localhost:\d+\)/);
    // The same host, keeping the POST: followed.
    receiver.answers.push((res) => res.writeHead(308, { location: "/moved" }).end());
    expect(await api.sendTestMessage({ channelId: channel!.id })).toMatchObject({ delivered: true });
    expect(last("/moved").body).toMatch(/Test message/);

    const config = { kind: "slack" as const, secrets: { url: `${receiver.url}/slow`, token: "", signingSecret: "", smtpPassword: "" }, email: undefined, ntfyPriority: 3 };
    const message = { id: "m", event: "test", severity: "info" as const, title: "t", text: "x", eventCount: 1, hostCount: 0, items: [], time: new Date() };
    receiver.answers.push(() => {});
    await expect(sendToChannel(config, message, { timeoutMs: 300, maxResponseBytes: 1024 })).rejects.toThrow(new DeliveryError(`no answer from ${new URL(receiver.url).host} within 0.3 s`));
    const closed = await startHttpReceiver();
    await closed.close();
    await expect(sendToChannel({ ...config, secrets: { ...config.secrets, url: `${closed.url}/gone` } }, message)).rejects.toThrow(/cannot reach 127\.0\.0\.1:\d+: ECONNREFUSED/);
  });

  it("queues events where they happen (a key rotation, a failed install, a security event) and the leader's job delivers them", async () => {
    const { channel } = await api.createChannel({ name: "events", kind: ChannelKind.WEBHOOK, secrets: { url: `${receiver.url}/events`, signingSecret: SIGNING } });
    await api.createRule({ rule: { name: "all", enabled: true, events: ["security_event", "install_failed"], channelIds: [channel!.id] } });
    const security = createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    await security.rotateSigningKey({});

    const db = deps.db;
    const agent = await insertAgent(db, "web-7");
    // A security event recorded outside a transaction, and one inside: both are queued with it.
    await recordSecurityEvent(db, { type: "machine_id_mismatch", severity: "critical", message: "another machine used this agent's credentials", agentId: agent.id });
    await db.$transaction((tx) => recordSecurityEvent(tx, { type: "refresh_token_reuse", severity: "critical", message: "a rotated refresh token was used again", agentId: agent.id }));
    // Not notified: anyone can cause it.
    await recordSecurityEvent(db, { type: "login_failed", severity: "warning", message: "sign-in failed" });
    // A failed install, reported as an agent reports it.
    const commandId = "11111111-1111-4111-8111-111111111111";
    await db.command.create({ data: { id: commandId, agentId: agent.id, type: "install_updates", state: "sent", action: Buffer.alloc(0), createdBy: "oscar", sentAt: new Date() } });
    const outcome = await recordResults(
      db,
      cp.app.db.statements,
      agent.id,
      [{ commandId, outcome: "failed", message: "dpkg was interrupted", startedAt: null, finishedAt: null, bytes: new Uint8Array(), scan: undefined, metrics: undefined, packages: [{ kind: "failed", source: "apt", name: "nginx", architecture: "amd64", version: "1.2" }] }],
      new Date(),
      "192.0.2.1",
      { rows: 1000 },
    );
    expect(outcome.acknowledged).toEqual([commandId]);
    expect((await db.notificationEvent.findMany({ orderBy: { id: "asc" } })).map((e) => [e.kind, e.text.split(":")[0]])).toEqual([
      ["security_event", "signing_key_rotated"],
      ["security_event", "machine_id_mismatch"],
      ["security_event", "refresh_token_reuse"],
      ["install_failed", "nginx failed"],
    ]);

    const now = new Date(Date.now() + 3_600_000);
    await runNotifications(deps, now);
    await runNotifications(deps, new Date(now.getTime() + 60_000));
    const bodies = receiver.requests.filter((q) => q.path === "/events").map((q) => JSON.parse(q.body) as { event: string; title: string; text: string; severity: string });
    expect(bodies.map((b) => [b.event, b.severity, b.title])).toEqual(
      expect.arrayContaining([
        ["security_event", "critical", "Security event: 3 events on 1 host"],
        ["install_failed", "warning", "Install failed: web-7"],
      ]),
    );
    expect(bodies.find((b) => b.event === "install_failed")!.text).toBe("web-7: nginx failed: dpkg was interrupted");
    expect(bodies.find((b) => b.event === "security_event")!.text).toMatch(/^control plane: signing_key_rotated: .*\nweb-7: machine_id_mismatch: .*\nweb-7: refresh_token_reuse: /);
    expect(await db.notificationEvent.count()).toBe(0);
  });
});

describe("redflag notifications", () => {
  const cli = (...args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args]);

  it("creates, lists, tests and deletes channels and rules, and shows the delivery log", async () => {
    const secretFile = path.join(scratch, "signing-secret");
    await writeFile(secretFile, "cli-SECRET-signing-key\n");
    const created = await cli("notifications", "channels", "create", "cli-hook", "--kind", "webhook", "--url", `${receiver.url}/cli`, "--signing-secret-file", secretFile);
    expect(created).toMatchObject({ code: 0, stdout: expect.stringMatching(/^created webhook channel cli-hook \(/) });
    const list = await cli("notifications", "channels", "list");
    expect(list.stdout).toMatch(/cli-hook\s+webhook\s+yes\s+127\.0\.0\.1:\d+\/…\/cli, signing secret set/);
    expect(list.stdout).not.toMatch(/SECRET-/);

    expect(await cli("notifications", "channels", "test", "cli-hook")).toMatchObject({ code: 0, stdout: "test message delivered to cli-hook\n" });
    const req = last("/cli");
    expect(verify("cli-SECRET-signing-key", req.headers["x-redflag-timestamp"], req.headers["x-redflag-signature"], req.body)).toBe(true);
    receiver.answers.push((res) => res.writeHead(500).end());
    expect(await cli("notifications", "channels", "test", "cli-hook")).toMatchObject({ code: 1, stderr: "redflag: the test message to cli-hook was not delivered: the receiver answered 500\n" });

    const rule = await cli("notifications", "rules", "create", "nightly", "--event", "install_failed", "--event", "critical_updates", "--channel", "cli-hook", "--quiet-hours", "22:00-07:00", "--time-zone", "Europe/Berlin", "--group", "Prod", "--group-window", "5m");
    expect(rule).toMatchObject({ code: 0, stdout: expect.stringMatching(/^created rule nightly/) });
    expect((await cli("notifications", "rules", "list")).stdout).toMatch(/nightly\s+yes\s+install_failed,critical_updates\s+info\s+prod\s+cli-hook\s+22:00-07:00 Europe\/Berlin/);
    expect(await cli("notifications", "rules", "create", "bad", "--event", "install_failed", "--channel", "cli-hook", "--quiet-hours", "22:00")).toMatchObject({ code: 1, stderr: expect.stringMatching(/--time-zone/) });

    const log = await cli("notifications", "deliveries", "--channel", "cli-hook");
    expect(log.stdout.split("\n").filter((l) => l.includes("cli-hook"))).toHaveLength(2);
    expect(log.stdout).toMatch(/failed\s+1\s+Test message: RedFlag\s+the receiver answered 500/);
    expect((await cli("notifications", "deliveries", "--status", "failed", "--json")).stdout).toMatch(/"status": "failed"/);

    expect(await cli("notifications", "channels", "delete", "cli-hook")).toMatchObject({ code: 1, stderr: expect.stringMatching(/used by rule "nightly"/) });
    expect(await cli("notifications", "rules", "delete", "nightly")).toMatchObject({ code: 0, stdout: "deleted rule nightly\n" });
    expect(await cli("notifications", "channels", "delete", "cli-hook")).toMatchObject({ code: 0, stdout: "deleted channel cli-hook\n" });
    expect(await cli("notifications", "channels", "test", "cli-hook")).toMatchObject({ code: 1, stderr: expect.stringMatching(/no notification channel is called "cli-hook"/) });
  });
});

import { NotificationService } from "@redflag/gen/notification_service_pb";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addChannel, addRule, afterQuietHours, inQuietHours, noticeAgentHealth, noticeReboots, RETRY, retryDelayMs, runNotifications, type RuleInput } from "../../src/domain/notifications.ts";
import { webhookSignature } from "../../src/domain/notification-senders.ts";
import { enqueueNotification } from "../../src/store/notifications.ts";
import { recordResults } from "../../src/store/commands.ts";
import { newId } from "../../src/ids.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, insertAgent, mediumDatabase } from "../support/medium.ts";
import { startHttpReceiver, type HttpReceiver } from "../support/receivers.ts";

const masterKey = randomBytes(32);
const SECRET = "a-webhook-signing-secret";
const at = (iso: string) => new Date(iso);

let receiver: HttpReceiver;
beforeAll(async () => {
  receiver = await startHttpReceiver();
});
afterAll(async () => {
  await receiver.close();
});

describe("quiet hours", () => {
  const berlin = { start: "22:00", end: "07:00", timeZone: "Europe/Berlin" };
  it("span midnight in the rule's zone, and end at the local end time across daylight-saving changes", () => {
    expect(inQuietHours(berlin, at("2026-06-01T20:30:00Z"))).toBe(true); // 22:30 CEST
    expect(inQuietHours(berlin, at("2026-06-01T19:59:00Z"))).toBe(false); // 21:59 CEST
    expect(afterQuietHours(berlin, at("2026-06-01T20:30:00Z"))).toEqual(at("2026-06-02T05:00:00Z")); // 07:00 CEST
    expect(afterQuietHours(berlin, at("2026-06-01T12:00:00Z"))).toEqual(at("2026-06-01T12:00:00Z"));
    // The night clocks go forward (29 March 2026): 07:00 local is then 05:00 UTC, not 06:00.
    expect(afterQuietHours(berlin, at("2026-03-28T22:00:00Z"))).toEqual(at("2026-03-29T05:00:00Z"));
    // And back (25 October 2026): 07:00 CET is 06:00 UTC.
    expect(afterQuietHours(berlin, at("2026-10-24T21:00:00Z"))).toEqual(at("2026-10-25T06:00:00Z"));
    const ny = { start: "09:00", end: "17:00", timeZone: "America/New_York" };
    expect(inQuietHours(ny, at("2026-07-01T14:00:00Z"))).toBe(true); // 10:00 EDT
    expect(afterQuietHours(ny, at("2026-07-01T14:00:00Z"))).toEqual(at("2026-07-01T21:00:00Z"));
  });

  it("retries back off exponentially up to the cap", () => {
    expect([1, 2, 3, 4].map(retryDelayMs)).toEqual([30_000, 60_000, 120_000, 240_000]);
    expect(retryDelayMs(20)).toBe(RETRY.capMs);
  });
});

describe.each(availableBackends)("notifications on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);
  const deps = () => ({ db: m.db, masterKey, limits: { timeoutMs: 2000, maxResponseBytes: 1024 } });

  async function webhookChannel(name: string) {
    const view = await addChannel(
      m.db,
      masterKey,
      { name, kind: "webhook", enabled: true, secrets: { url: `${receiver.url}/${backend}/${name}`, token: "", signingSecret: SECRET, smtpPassword: "" }, email: undefined, ntfyPriority: 3 },
      auditAs("CreateChannel", NotificationService, "channel"),
    );
    return view.row.id;
  }
  const rule = (name: string, channelId: string, more: Partial<RuleInput> = {}): RuleInput => ({
    name,
    enabled: true,
    events: ["install_failed"],
    minSeverity: "info",
    groups: [],
    channelIds: [channelId],
    quiet: undefined,
    groupWindowSeconds: 60,
    ...more,
  });
  const requestsTo = (path: string) => receiver.requests.filter((r) => r.path === `/${backend}${path}`);
  const bodies = (path: string) => requestsTo(path).map((r) => JSON.parse(r.body) as { title: string; text: string; event_count: number; host_count: number; items: unknown[] });

  it("groups 200 failures into one message with counts and the first hosts, signed, after the group window", async () => {
    const channelId = await webhookChannel("grouped");
    await addRule(m.db, rule("failures", channelId), auditAs("CreateRule", NotificationService, "rule"));
    const agents = [];
    for (let i = 0; i < 200; i++) agents.push(await insertAgent(m.db, `web-${String(i).padStart(3, "0")}`));
    for (const a of agents) await enqueueNotification(m.db, { kind: "install_failed", severity: "warning", agentId: a.id, text: "nginx failed: dpkg error" });
    // Not of this rule's kind: no message.
    await enqueueNotification(m.db, { kind: "install_succeeded", severity: "info", agentId: agents[0]!.id, text: "installed curl" });

    const t0 = at("2026-06-01T12:00:00Z");
    expect(await runNotifications(deps(), t0)).toEqual({ routed: 201, sent: 0, failed: 0 });
    expect(await m.db.notificationEvent.count()).toBe(0);
    // Within the window: still gathering; a late failure joins the same message.
    await enqueueNotification(m.db, { kind: "install_failed", severity: "critical", agentId: agents[0]!.id, text: "openssl failed" });
    expect(await runNotifications(deps(), new Date(t0.getTime() + 30_000))).toEqual({ routed: 1, sent: 0, failed: 0 });
    expect(requestsTo("/grouped")).toHaveLength(0);

    expect(await runNotifications(deps(), new Date(t0.getTime() + 60_000))).toMatchObject({ sent: 1 });
    const [req] = requestsTo("/grouped");
    const [body] = bodies("/grouped");
    expect(body).toMatchObject({ title: "Install failed: 201 events on 200 hosts", event_count: 201, host_count: 200, severity: "critical" });
    expect(body!.items).toHaveLength(10);
    expect(body!.text.split("\n")).toHaveLength(11);
    expect(body!.text).toContain("web-000: nginx failed: dpkg error");
    expect(body!.text.endsWith("… and 191 more")).toBe(true);
    expect(req!.headers["x-redflag-signature"]).toBe(webhookSignature(SECRET, req!.headers["x-redflag-timestamp"] as string, req!.body));
    expect(req!.headers["x-redflag-timestamp"]).toBe(String(t0.getTime() / 1000 + 60));

    const [delivery] = await m.db.notificationDelivery.findMany({ where: { channelId } });
    expect(delivery).toMatchObject({ status: "sent", attempts: 1, eventCount: 201, lastError: "" });
    // Sent once: the next run sends nothing.
    expect(await runNotifications(deps(), new Date(t0.getTime() + 120_000))).toEqual({ routed: 0, sent: 0, failed: 0 });
  });

  it("retries a receiver that fails twice with backoff, then records it sent", async () => {
    const channelId = await webhookChannel("flaky");
    await addRule(m.db, rule("flaky", channelId, { events: ["agent_upgrade_failed"] }), auditAs("CreateRule", NotificationService, "rule"));
    const agent = await insertAgent(m.db, "db-1");
    await enqueueNotification(m.db, { kind: "agent_upgrade_failed", severity: "warning", agentId: agent.id, text: "the upgrade to 0.2.0 failed" });
    const t0 = at("2026-06-02T12:00:00Z");
    await runNotifications(deps(), t0);
    receiver.answers.push((res) => res.writeHead(503).end("busy"), (res) => res.writeHead(500).end("x".repeat(5000)));

    let now = new Date(t0.getTime() + 60_000);
    expect(await runNotifications(deps(), now)).toMatchObject({ sent: 0, failed: 1 });
    let row = await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } });
    expect(row).toMatchObject({ status: "waiting", attempts: 1, lastError: "the receiver answered 503: busy" });
    expect(row.dueAt).toEqual(new Date(now.getTime() + 30_000));
    // Not due yet: nothing is tried.
    expect(await runNotifications(deps(), new Date(now.getTime() + 29_000))).toMatchObject({ sent: 0, failed: 0 });

    now = new Date(now.getTime() + 30_000);
    expect(await runNotifications(deps(), now)).toMatchObject({ failed: 1 });
    row = await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } });
    expect(row.attempts).toBe(2);
    // The answer is read only up to the limit and clipped in the log.
    expect(row.lastError).toMatch(/^the receiver answered 500: x{199}…$/);
    expect(row.dueAt).toEqual(new Date(now.getTime() + 60_000));

    now = new Date(now.getTime() + 60_000);
    expect(await runNotifications(deps(), now)).toMatchObject({ sent: 1 });
    row = await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } });
    expect(row).toMatchObject({ status: "sent", attempts: 3, lastError: "", sentAt: now });
    const sent = requestsTo("/flaky");
    expect(sent).toHaveLength(3);
    // Each attempt is the same message: the same delivery ID.
    expect(new Set(sent.map((r) => r.headers["x-redflag-delivery"])).size).toBe(1);
    expect(bodies("/flaky")[2]).toMatchObject({ title: "Agent upgrade failed: db-1", text: "db-1: the upgrade to 0.2.0 failed" });
  });

  it("gives up after the last attempt", async () => {
    const channelId = await webhookChannel("down");
    await addRule(m.db, rule("down", channelId, { events: ["critical_updates"] }), auditAs("CreateRule", NotificationService, "rule"));
    await enqueueNotification(m.db, { kind: "critical_updates", severity: "critical", text: "2 new critical or security updates: openssl, sudo" });
    let now = at("2026-06-03T12:00:00Z");
    await runNotifications(deps(), now);
    for (let i = 0; i < RETRY.maxAttempts; i++) {
      receiver.answers.push((res) => res.writeHead(502).end());
      now = (await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } })).dueAt;
      await runNotifications(deps(), now);
    }
    expect(await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } })).toMatchObject({ status: "failed", attempts: RETRY.maxAttempts, lastError: "the receiver answered 502" });
    expect(requestsTo("/down")).toHaveLength(RETRY.maxAttempts);
  });

  it("holds messages over quiet hours and sends what arrived meanwhile as one, at their end", async () => {
    const channelId = await webhookChannel("night");
    const quiet = { start: "22:00", end: "07:00", timeZone: "Europe/Berlin" };
    await addRule(m.db, rule("night", channelId, { events: ["security_event"], quiet }), auditAs("CreateRule", NotificationService, "rule"));
    const agent = await insertAgent(m.db, "gw-1");
    const night = at("2026-06-04T21:00:00Z"); // 23:00 in Berlin
    await enqueueNotification(m.db, { kind: "security_event", severity: "critical", agentId: agent.id, text: "machine_id_mismatch: …" });
    await runNotifications(deps(), night);
    await enqueueNotification(m.db, { kind: "security_event", severity: "critical", agentId: agent.id, text: "refresh_token_reuse: …" });
    await runNotifications(deps(), new Date(night.getTime() + 3 * 3_600_000));
    expect(requestsTo("/night")).toHaveLength(0);
    const row = await m.db.notificationDelivery.findFirstOrThrow({ where: { channelId } });
    expect(row.dueAt).toEqual(at("2026-06-05T05:00:00Z")); // 07:00 CEST
    await runNotifications(deps(), at("2026-06-05T04:59:00Z"));
    expect(requestsTo("/night")).toHaveLength(0);
    await runNotifications(deps(), at("2026-06-05T05:00:00Z"));
    expect(bodies("/night")).toEqual([expect.objectContaining({ title: "Security event: 2 events on 1 host", event_count: 2 })]);
  });

  it("sends only events of the rule's groups and at least its severity; events without an agent match every group", async () => {
    const channelId = await webhookChannel("filtered");
    await addRule(m.db, rule("prod only", channelId, { events: ["install_succeeded", "security_event"], minSeverity: "warning", groups: ["prod"] }), auditAs("CreateRule", NotificationService, "rule"));
    const prod = await insertAgent(m.db, "prod-1");
    const lab = await insertAgent(m.db, "lab-1");
    await m.db.agent.update({ where: { id: prod.id }, data: { group: "prod" } });
    await enqueueNotification(m.db, { kind: "security_event", severity: "critical", agentId: prod.id, text: "in prod" });
    await enqueueNotification(m.db, { kind: "security_event", severity: "critical", agentId: lab.id, text: "in the lab" });
    await enqueueNotification(m.db, { kind: "install_succeeded", severity: "info", agentId: prod.id, text: "below the severity" });
    await enqueueNotification(m.db, { kind: "security_event", severity: "warning", text: "no agent" });
    const now = at("2026-06-06T12:00:00Z");
    await runNotifications(deps(), now);
    await runNotifications(deps(), new Date(now.getTime() + 60_000));
    expect(bodies("/filtered").map((b) => b.text)).toEqual(["prod-1: in prod\ncontrol plane: no agent"]);
  });

  it("a scan that finds critical or security updates not offered before queues one event; the same scan again queues none", async () => {
    const agent = await insertAgent(m.db, "scan-1");
    const update = (name: string, severity: string, security: boolean, version = "1.1") => ({
      source: "apt", name, architecture: "amd64", currentVersion: "1.0", availableVersion: version, repository: "debian", severity, security, sizeBytes: 10n, rebootRequired: false,
    });
    const scan = async (updates: ReturnType<typeof update>[]) => {
      const id = newId();
      await m.db.command.create({ data: { id, agentId: agent.id, type: "scan_updates", state: "sent", action: Buffer.alloc(0), createdBy: "oscar", sentAt: new Date() } });
      const result = { commandId: id, outcome: "succeeded" as const, message: "", startedAt: null, finishedAt: null, bytes: new Uint8Array(), scan: { updates, parts: 0, sources: ["apt"] }, metrics: undefined, packages: [] };
      expect((await recordResults(m.db, m.sql, agent.id, [result], new Date(), "192.0.2.1", { rows: 10_000 })).acknowledged).toEqual([id]);
    };
    const queued = () => m.db.notificationEvent.findMany({ where: { agentId: agent.id } });
    await scan([update("curl", "low", false), update("openssl", "important", true), update("sudo", "critical", false)]);
    expect((await queued()).map((e) => [e.kind, e.severity, e.text])).toEqual([["critical_updates", "critical", "2 new critical or security updates: openssl, sudo"]]);
    await m.db.notificationEvent.deleteMany({});
    await scan([update("curl", "low", false), update("openssl", "important", true), update("sudo", "critical", false)]);
    expect(await queued()).toEqual([]);
    // A new version of one of them is news again.
    await scan([update("curl", "low", false), update("openssl", "important", true, "1.2"), update("sudo", "critical", false)]);
    expect((await queued()).map((e) => e.text)).toEqual(["1 new critical or security update: openssl"]);
    await m.db.notificationEvent.deleteMany({});
  });

  it("tells an agent going offline once, and again when it polls, but nothing about what happened before it watched", async () => {
    const agent = await insertAgent(m.db, "quiet-1");
    const queued = () => m.db.notificationEvent.findMany({ where: { agentId: agent.id }, orderBy: { id: "asc" } });
    const heard = (iso: string) => m.db.agent.update({ where: { id: agent.id }, data: { lastSeenAt: at(iso) } });
    const poll = 60;
    // Silent for 3 poll intervals and 1 second: offline. But the control plane started 2 minutes
    // ago: it has not watched long enough to tell.
    await heard("2026-06-01T11:56:59Z");
    expect(await noticeAgentHealth(m.db, at("2026-06-01T12:00:00Z"), poll, at("2026-06-01T11:58:00Z"))).toEqual({ offline: 0, back: 0 });
    // Watching for 10 minutes: told once, however often it looks.
    expect(await noticeAgentHealth(m.db, at("2026-06-01T12:00:00Z"), poll, at("2026-06-01T11:50:00Z"))).toEqual({ offline: 1, back: 0 });
    expect(await noticeAgentHealth(m.db, at("2026-06-01T12:01:00Z"), poll, at("2026-06-01T11:50:00Z"))).toEqual({ offline: 0, back: 0 });
    // It polls again: back, once.
    await heard("2026-06-01T12:05:00Z");
    expect(await noticeAgentHealth(m.db, at("2026-06-01T12:05:30Z"), poll, at("2026-06-01T11:50:00Z"))).toEqual({ offline: 0, back: 1 });
    expect(await noticeAgentHealth(m.db, at("2026-06-01T12:06:00Z"), poll, at("2026-06-01T11:50:00Z"))).toEqual({ offline: 0, back: 0 });
    expect((await queued()).map((e) => [e.kind, e.severity, e.text])).toEqual([
      ["agent_offline", "warning", "stopped polling: last heard from at 2026-06-01T11:56:59.000Z"],
      ["agent_back", "info", "polls again (reported offline at 2026-06-01T12:00:00.000Z)"],
    ]);
    // A decommissioned agent is never told as offline, nor as back.
    await m.db.agent.update({ where: { id: agent.id }, data: { decommissionedAt: at("2026-06-01T12:10:00Z") } });
    expect(await noticeAgentHealth(m.db, at("2026-06-02T12:00:00Z"), poll, at("2026-06-01T11:50:00Z"))).toEqual({ offline: 0, back: 0 });
    await m.db.notificationEvent.deleteMany({});
  });

  it("tells an agent that needs a reboot once, and again once it no longer does", async () => {
    const agent = await insertAgent(m.db, "reboot-1");
    const queued = () => m.db.notificationEvent.findMany({ where: { agentId: agent.id }, orderBy: { id: "asc" } });
    const needs = (rebootRequired: boolean) => m.db.agent.update({ where: { id: agent.id }, data: { rebootRequired } });
    expect(await noticeReboots(m.db, at("2026-06-01T12:00:00Z"))).toEqual({ required: 0, done: 0 });
    await needs(true);
    expect(await noticeReboots(m.db, at("2026-06-01T12:01:00Z"))).toEqual({ required: 1, done: 0 });
    expect(await noticeReboots(m.db, at("2026-06-01T12:02:00Z"))).toEqual({ required: 0, done: 0 });
    await needs(false);
    expect(await noticeReboots(m.db, at("2026-06-01T12:30:00Z"))).toEqual({ required: 0, done: 1 });
    expect(await noticeReboots(m.db, at("2026-06-01T12:31:00Z"))).toEqual({ required: 0, done: 0 });
    expect((await queued()).map((e) => [e.kind, e.severity, e.text])).toEqual([
      ["reboot_required", "warning", "needs a reboot to finish its updates"],
      ["reboot_done", "info", "no longer needs a reboot (told it did at 2026-06-01T12:01:00.000Z)"],
    ]);
    // A decommissioned agent is not told about.
    await needs(true);
    await m.db.agent.update({ where: { id: agent.id }, data: { decommissionedAt: at("2026-06-01T13:00:00Z") } });
    expect(await noticeReboots(m.db, at("2026-06-01T13:01:00Z"))).toEqual({ required: 0, done: 0 });
    await m.db.notificationEvent.deleteMany({});
  });
});

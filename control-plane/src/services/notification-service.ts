import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ChannelKind,
  NotificationChannelSchema,
  NotificationDeliverySchema,
  NotificationRuleSchema,
  NotificationService,
  type ChannelSecrets as WireSecrets,
  type EmailSettings as WireEmail,
  type NotificationRule as WireRule,
} from "@redflag/gen/notification_service_pb";
import {
  addChannel,
  addRule,
  changeChannel,
  changeRule,
  channelAuditView,
  channels,
  removeChannel,
  removeRule,
  messageOf,
  sendTestMessage,
  type ChannelKindName,
  type ChannelSecrets,
  type ChannelView,
  type EmailSettings,
  type NotifierDeps,
  type RuleInput,
} from "../domain/notifications.ts";
import { getDelivery, listDeliveries, listRules, type RuleRow } from "../store/notifications.ts";
import { audit, callerName } from "./audit.ts";
import { idPageToken, invalid, nextIdPageToken, pageSize, uuid } from "./validate.ts";

const KINDS: Record<Exclude<ChannelKind, ChannelKind.UNSPECIFIED>, ChannelKindName> = {
  [ChannelKind.WEBHOOK]: "webhook",
  [ChannelKind.SLACK]: "slack",
  [ChannelKind.DISCORD]: "discord",
  [ChannelKind.TEAMS]: "teams",
  [ChannelKind.NTFY]: "ntfy",
  [ChannelKind.GOTIFY]: "gotify",
  [ChannelKind.EMAIL]: "email",
};
const kindOf = (name: string) => Number(Object.entries(KINDS).find(([, n]) => n === name)?.[0] ?? 0) as ChannelKind;

const secretsOf = (s: WireSecrets | undefined): ChannelSecrets => ({ url: s?.url ?? "", token: s?.token ?? "", signingSecret: s?.signingSecret ?? "", smtpPassword: s?.smtpPassword ?? "" });

const emailOf = (e: WireEmail | undefined): EmailSettings | undefined =>
  e && { smtpHost: e.smtpHost, smtpPort: e.smtpPort || 587, smtpSecurity: (e.smtpSecurity || "starttls") as EmailSettings["smtpSecurity"], smtpUsername: e.smtpUsername, from: e.from, to: [...e.to] };

const channelMessage = (v: ChannelView) =>
  create(NotificationChannelSchema, {
    id: v.row.id,
    name: v.row.name,
    kind: kindOf(v.row.kind),
    enabled: v.row.enabled,
    secretHint: v.row.secretHint,
    email: v.email,
    ntfyPriority: v.row.kind === "ntfy" ? v.ntfyPriority : 0,
    createTime: timestampFromDate(v.row.createdAt),
    updateTime: timestampFromDate(v.row.updatedAt),
  });

const ruleMessage = (r: RuleRow) =>
  create(NotificationRuleSchema, {
    id: r.id,
    name: r.name,
    enabled: r.enabled,
    events: r.events,
    minSeverity: r.minSeverity,
    groups: r.groups,
    channelIds: r.channelIds,
    quietHours: r.quietStart && r.quietEnd && r.quietTimeZone ? { start: r.quietStart, end: r.quietEnd, timeZone: r.quietTimeZone } : undefined,
    groupWindow: durationFromMs(r.groupWindowSeconds * 1000),
    createTime: timestampFromDate(r.createdAt),
    updateTime: timestampFromDate(r.updatedAt),
  });

function ruleInput(rule: WireRule | undefined): RuleInput {
  if (!rule) throw invalid("rule is required");
  const window = rule.groupWindow;
  if (window && (window.nanos !== 0 || window.seconds < 0n || window.seconds > 86_400n)) throw invalid("group_window must be whole seconds from 10 seconds to 1 hour");
  return {
    name: rule.name,
    enabled: rule.enabled,
    events: rule.events,
    minSeverity: rule.minSeverity,
    groups: rule.groups,
    channelIds: rule.channelIds,
    quiet: rule.quietHours ? { start: rule.quietHours.start, end: rule.quietHours.end, timeZone: rule.quietHours.timeZone } : undefined,
    groupWindowSeconds: window ? Number(window.seconds) : 60,
  };
}

const deliveryMessage = (d: Awaited<ReturnType<typeof getDelivery>>) =>
  create(NotificationDeliverySchema, {
    id: d.id,
    channelId: d.channelId,
    channelName: d.channel.name,
    ruleId: d.ruleId ?? "",
    event: d.event,
    status: d.status,
    attempts: d.attempts,
    lastError: d.lastError,
    title: messageOf(d, d.createdAt).title,
    eventCount: d.eventCount,
    createTime: timestampFromDate(d.createdAt),
    nextAttemptTime: d.status === "waiting" ? timestampFromDate(d.dueAt) : undefined,
    sentTime: d.sentAt ? timestampFromDate(d.sentAt) : undefined,
  });

const STATUSES = ["waiting", "sent", "failed"];

export function createNotificationService(deps: NotifierDeps): ServiceImpl<typeof NotificationService> {
  const { db, masterKey } = deps;
  return {
    async createChannel(req, ctx) {
      if (req.kind === ChannelKind.UNSPECIFIED || !(req.kind in KINDS)) throw invalid("kind is required (webhook, slack, discord, teams, ntfy, gotify or email)");
      const kind = KINDS[req.kind as keyof typeof KINDS];
      const view = await addChannel(
        db,
        masterKey,
        { name: req.name, kind, enabled: !req.disabled, secrets: secretsOf(req.secrets), email: emailOf(req.email), ntfyPriority: req.ntfyPriority || 3 },
        (tx, done) => audit(tx, ctx, { target: `notification-channel:${done.row.id}`, after: channelAuditView(done) }),
      );
      return { channel: channelMessage(view) };
    },

    async updateChannel(req, ctx) {
      const id = uuid("id", req.id);
      const view = await changeChannel(
        db,
        masterKey,
        id,
        { name: req.name, enabled: req.enabled, secrets: req.secrets ? secretsOf(req.secrets) : undefined, email: emailOf(req.email), ntfyPriority: req.ntfyPriority },
        // Whether the secrets changed is recorded; never the secrets.
        (tx, { before, after }) =>
          audit(tx, ctx, { target: `notification-channel:${id}`, before: channelAuditView(before), after: { ...channelAuditView(after), secretsReplaced: req.secrets !== undefined } }),
      );
      return { channel: channelMessage(view) };
    },

    async deleteChannel(req, ctx) {
      const id = uuid("id", req.id);
      await removeChannel(db, id, (tx, done) => audit(tx, ctx, { target: `notification-channel:${id}`, before: channelAuditView(done) }));
      return {};
    },

    async listChannels() {
      return { channels: (await channels(db)).map(channelMessage) };
    },

    async sendTestMessage(req, ctx) {
      const id = uuid("channel_id", req.channelId);
      const outcome = await sendTestMessage(deps, id, callerName(ctx));
      await audit(db, ctx, { target: `notification-channel:${id}`, after: { deliveryId: outcome.deliveryId, delivered: outcome.delivered }, outcome: outcome.delivered ? "ok" : outcome.error });
      return { delivered: outcome.delivered, error: outcome.error, delivery: deliveryMessage(await getDelivery(db, outcome.deliveryId)) };
    },

    async createRule(req, ctx) {
      const row = await addRule(db, ruleInput(req.rule), (tx, done) => audit(tx, ctx, { target: `notification-rule:${done.id}`, after: done }));
      return { rule: ruleMessage(row) };
    },

    async updateRule(req, ctx) {
      const id = uuid("rule.id", req.rule?.id ?? "");
      const row = await changeRule(db, id, ruleInput(req.rule), (tx, { before, after }) => audit(tx, ctx, { target: `notification-rule:${id}`, before, after }));
      return { rule: ruleMessage(row) };
    },

    async deleteRule(req, ctx) {
      const id = uuid("id", req.id);
      await removeRule(db, id, (tx, done) => audit(tx, ctx, { target: `notification-rule:${id}`, before: done }));
      return {};
    },

    async listRules() {
      return { rules: (await listRules(db)).map(ruleMessage) };
    },

    async listDeliveries(req) {
      const offset = Number(idPageToken(req.pageToken) ?? 0n);
      const size = pageSize(req.pageSize);
      const channelId = req.channelId ? uuid("channel_id", req.channelId) : undefined;
      if (req.status && !STATUSES.includes(req.status)) throw invalid(`status must be ${STATUSES.join(", ")}`);
      const { rows, more } = await listDeliveries(db, { channelId, status: req.status || undefined }, size, offset);
      return { deliveries: rows.map(deliveryMessage), nextPageToken: more ? nextIdPageToken(BigInt(offset + size)) : "" };
    },
  };
}

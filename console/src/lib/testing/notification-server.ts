import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import {
  ChannelKind,
  NotificationChannelSchema,
  NotificationDeliverySchema,
  NotificationRuleSchema,
  NotificationService,
  type CreateChannelRequest,
  type CreateRuleRequest,
  type NotificationChannel,
  type NotificationDelivery,
  type NotificationRule,
  type UpdateChannelRequest,
  type UpdateRuleRequest,
} from "@redflag/gen/notification_service_pb";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";
import { invalid } from "./server-rules.ts";
import { NOTIFICATION_EVENTS } from "@redflag/common/notification-events";

// An in-memory NotificationService for the Notifications page's tests, refusing bad input with
// the control plane's codes and messages (control-plane/src/domain/notifications.ts,
// checkChannel, checkRule, changeChannel and changeRule; services/notification-service.ts). Test messages are delivered
// unless `receiver` says what the receiver answers instead.

const KIND_NAMES: Record<number, string> = {
  [ChannelKind.WEBHOOK]: "webhook",
  [ChannelKind.SLACK]: "slack",
  [ChannelKind.DISCORD]: "discord",
  [ChannelKind.TEAMS]: "teams",
  [ChannelKind.NTFY]: "ntfy",
  [ChannelKind.GOTIFY]: "gotify",
  [ChannelKind.EMAIL]: "email",
};
const EVENTS: readonly string[] = NOTIFICATION_EVENTS;
const ADDRESS = /^[^\s@<>]+@[^\s@<>]+$/;
const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;

type Secrets = { url: string; token: string; signingSecret: string; smtpPassword: string };
type ChannelInput = Pick<CreateChannelRequest, "name" | "kind" | "email" | "ntfyPriority"> & { secrets: Secrets | undefined };

// Checks a channel as domain/notifications.ts checkChannel does and returns its secret hint.
// `secrets` undefined: a channel given to the server at the start, whose secrets it never saw
// (they are taken as valid and its hint kept).
function checkChannel(req: ChannelInput, hint = ""): string {
  const kind = KIND_NAMES[req.kind];
  if (!kind) throw invalid("kind is required (webhook, slack, discord, teams, ntfy, gotify or email)");
  if (!req.name) throw invalid("name is required");
  if (req.name.length > 64) throw invalid("name is longer than 64 characters");
  const known = req.secrets !== undefined;
  const s = { url: req.secrets?.url ?? "", token: req.secrets?.token ?? "", signingSecret: req.secrets?.signingSecret ?? "", smtpPassword: req.secrets?.smtpPassword ?? "" };
  const needs = { url: kind !== "email", token: kind === "gotify", signingSecret: kind === "webhook", smtpPassword: false };
  const allowed = { url: needs.url, token: kind === "gotify" || kind === "ntfy", signingSecret: needs.signingSecret, smtpPassword: kind === "email" };
  const names = { url: "secrets.url", token: "secrets.token", signingSecret: "secrets.signing_secret", smtpPassword: "secrets.smtp_password" } as const;
  for (const key of known ? (Object.keys(names) as (keyof typeof names)[]) : []) {
    if (needs[key] && !s[key]) throw invalid(`a ${kind} channel needs ${names[key]}`);
    if (!allowed[key] && s[key]) throw invalid(`a ${kind} channel takes no ${names[key]}`);
  }
  if (known && needs.url) {
    let url: URL;
    try {
      url = new URL(s.url);
    } catch {
      throw invalid("secrets.url is not a URL");
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") throw invalid("secrets.url must be an http:// or https:// URL");
  }
  if (known && kind === "webhook" && (s.signingSecret.length < 16 || s.signingSecret.length > 256)) throw invalid("secrets.signing_secret must be 16 to 256 characters");
  if (kind === "email") {
    const e = req.email;
    if (!e) throw invalid("an email channel needs email settings (smtp_host, from, to)");
    if (!e.smtpHost) throw invalid("email.smtp_host is required");
    if (s.smtpPassword && !e.smtpUsername) throw invalid("secrets.smtp_password needs email.smtp_username");
    if (!ADDRESS.test(e.from)) throw invalid(`email.from "${e.from.slice(0, 64)}" is not an email address`);
    if (e.to.length < 1 || e.to.length > 20) throw invalid("email.to must list 1 to 20 addresses");
    for (const to of e.to) if (!ADDRESS.test(to)) throw invalid(`email.to "${to.slice(0, 64)}" is not an email address`);
  } else if (req.email) {
    throw invalid(`a ${kind} channel takes no email settings`);
  }
  const priority = req.ntfyPriority || 3;
  if (priority < 1 || priority > 5) throw invalid("ntfy_priority must be from 1 to 5");
  if (!known) return hint;
  // The hint, as secretHint() writes it.
  const tail = (v: string) => (v.length > 8 ? `…${v.slice(-4)}` : "…");
  const parts: string[] = [];
  if (s.url) parts.push(`${new URL(s.url).host}/${tail(s.url)}`);
  if (s.token) parts.push(`token ${tail(s.token)}`);
  if (s.signingSecret) parts.push("signing secret set");
  if (kind === "email") parts.push(s.smtpPassword ? `${req.email?.smtpUsername} with a password` : "no password");
  return parts.join(", ");
}

export function notificationServer(init: { channels?: NotificationChannel[]; rules?: NotificationRule[]; deliveries?: NotificationDelivery[] } = {}) {
  const channels = [...(init.channels ?? [])];
  const rules = [...(init.rules ?? [])];
  const deliveries = [...(init.deliveries ?? [])];
  const calls: string[] = [];
  const creates: CreateChannelRequest[] = [];
  const ruleCreates: CreateRuleRequest[] = [];
  const channelUpdates: UpdateChannelRequest[] = [];
  const ruleUpdates: UpdateRuleRequest[] = [];
  // Each channel's secrets, as the control plane seals them; none for the channels given at the start.
  const sealed = new Map<string, Secrets>();
  const secretsOf = (s: Partial<Secrets> | undefined): Secrets => ({ url: s?.url ?? "", token: s?.token ?? "", signingSecret: s?.signingSecret ?? "", smtpPassword: s?.smtpPassword ?? "" });
  // What the receiver of the next test messages answers: undefined delivers.
  const receiver: { error?: string } = {};
  let n = 0;
  const newId = () => `00000000-0000-4000-8000-${String(++n).padStart(12, "0")}`;
  const nameTaken = (name: string) => new ConnectError(`a channel or rule named "${name}" already exists`, Code.AlreadyExists);
  const channelNotFound = (id: string) => new ConnectError(`no notification channel has ID ${id}`, Code.NotFound);

  // domain/notifications.ts checkRule, with the rule as it would be stored.
  function checkRule(given: NotificationRule | undefined): NotificationRule {
    const rule = given;
    if (!rule) throw invalid("rule is required");
    if (!rule.name) throw invalid("name is required");
    if (rule.events.length === 0) throw invalid(`events must name at least one of ${EVENTS.join(", ")}`);
    for (const e of rule.events) if (!EVENTS.includes(e)) throw invalid(`events: "${e.slice(0, 64)}" is not an event (${EVENTS.join(", ")})`);
    const minSeverity = rule.minSeverity || "info";
    if (!["info", "warning", "critical"].includes(minSeverity)) throw invalid("min_severity must be info, warning or critical");
    const groups = [...new Set(rule.groups.map(normaliseLabel))];
    for (const g of groups) if (!LABEL.test(g)) throw invalid(`group "${g.slice(0, 64)}" is not a label: ${LABEL_RULE}`);
    if (rule.channelIds.length === 0 || rule.channelIds.length > 20) throw invalid("channel_ids must list 1 to 20 channels");
    const missing = rule.channelIds.filter((id) => !channels.some((c) => c.id === id));
    if (missing.length > 0) throw new ConnectError(`no notification channel has ID ${missing.join(", ")}`, Code.NotFound);
    const quiet = rule.quietHours;
    if (quiet) {
      if (!HHMM.test(quiet.start) || !HHMM.test(quiet.end)) throw invalid('quiet_hours.start and quiet_hours.end must be local times "HH:MM"');
      if (quiet.start === quiet.end) throw invalid("quiet_hours.start and quiet_hours.end must differ");
      let zone = quiet.timeZone.length > 0;
      try {
        new Intl.DateTimeFormat("en-US", { timeZone: quiet.timeZone });
      } catch {
        zone = false;
      }
      if (!zone) throw invalid(`quiet_hours.time_zone "${quiet.timeZone.slice(0, 64)}" is not an IANA time zone (for example Europe/Berlin)`);
    }
    const seconds = rule.groupWindow ? Number(rule.groupWindow.seconds) : 60;
    if (seconds < 10 || seconds > 3600) throw invalid("group_window must be from 10 seconds to 1 hour");
    return create(NotificationRuleSchema, {
      id: rule.id,
      name: rule.name,
      enabled: rule.enabled,
      events: [...new Set(rule.events)],
      minSeverity,
      groups,
      channelIds: [...new Set(rule.channelIds)],
      quietHours: quiet && { start: quiet.start, end: quiet.end, timeZone: quiet.timeZone },
      groupWindow: { seconds: BigInt(seconds) },
    });
  }

  const routes = (router: ConnectRouter) =>
    router.service(NotificationService, {
      createChannel(req) {
        calls.push("createChannel");
        creates.push(req);
        const secrets = secretsOf(req.secrets);
        const secretHint = checkChannel({ ...req, secrets });
        if ([...channels, ...rules].some((x) => x.name === req.name)) throw nameTaken(req.name);
        const now = timestampFromDate(new Date());
        const id = newId();
        sealed.set(id, secrets);
        const channel = create(NotificationChannelSchema, {
          id,
          name: req.name,
          kind: req.kind,
          enabled: !req.disabled,
          secretHint,
          email: req.email && { ...req.email, smtpPort: req.email.smtpPort || 587, smtpSecurity: req.email.smtpSecurity || "starttls" },
          ntfyPriority: req.kind === ChannelKind.NTFY ? req.ntfyPriority || 3 : 0,
          createTime: now,
          updateTime: now,
        });
        channels.push(channel);
        channels.sort((a, b) => a.name.localeCompare(b.name));
        return { channel };
      },
      // domain/notifications.ts changeChannel: what is not given is kept; secrets, when given,
      // replace all of the channel's secrets; the whole is checked again.
      updateChannel(req) {
        calls.push("updateChannel");
        channelUpdates.push(req);
        const i = channels.findIndex((c) => c.id === req.id);
        if (i < 0) throw channelNotFound(req.id);
        const c = channels[i]!;
        const secrets = req.secrets ? secretsOf(req.secrets) : sealed.get(c.id);
        const input = {
          name: req.name ?? c.name,
          kind: c.kind,
          secrets,
          email: req.email ?? c.email,
          ntfyPriority: req.ntfyPriority ?? c.ntfyPriority,
        };
        const secretHint = checkChannel(input, c.secretHint);
        if ([...channels, ...rules].some((x) => x.id !== c.id && x.name === input.name)) throw nameTaken(input.name);
        if (secrets) sealed.set(c.id, secrets);
        const channel = create(NotificationChannelSchema, {
          id: c.id,
          name: input.name,
          kind: c.kind,
          enabled: req.enabled ?? c.enabled,
          secretHint,
          email: input.email && { ...input.email, smtpPort: input.email.smtpPort || 587, smtpSecurity: input.email.smtpSecurity || "starttls" },
          ntfyPriority: c.kind === ChannelKind.NTFY ? input.ntfyPriority || 3 : 0,
          createTime: c.createTime,
          updateTime: timestampFromDate(new Date()),
        });
        channels.splice(i, 1, channel);
        channels.sort((a, b) => a.name.localeCompare(b.name));
        return { channel };
      },
      listChannels() {
        calls.push("listChannels");
        return { channels };
      },
      deleteChannel(req) {
        calls.push("deleteChannel");
        const i = channels.findIndex((c) => c.id === req.id);
        if (i < 0) throw channelNotFound(req.id);
        const inUse = rules.filter((r) => r.channelIds.includes(req.id));
        if (inUse.length > 0) {
          throw new ConnectError(`the channel is used by ${inUse.length === 1 ? "rule" : "rules"} ${inUse.map((r) => `"${r.name}"`).join(", ")}: remove it from them first`, Code.FailedPrecondition);
        }
        channels.splice(i, 1);
        return {};
      },
      sendTestMessage(req) {
        calls.push("sendTestMessage");
        const channel = channels.find((c) => c.id === req.channelId);
        if (!channel) throw channelNotFound(req.channelId);
        const error = receiver.error ?? "";
        const now = timestampFromDate(new Date());
        const delivery = create(NotificationDeliverySchema, {
          id: newId(),
          channelId: channel.id,
          channelName: channel.name,
          event: "test",
          status: error ? "failed" : "sent",
          attempts: 1,
          lastError: error,
          title: "Test message: RedFlag",
          eventCount: 1,
          createTime: now,
          sentTime: error ? undefined : now,
        });
        deliveries.unshift(delivery);
        return { delivered: !error, error, delivery };
      },
      createRule(req) {
        calls.push("createRule");
        ruleCreates.push(req);
        const saved = checkRule(req.rule);
        if ([...channels, ...rules].some((x) => x.name === saved.name)) throw nameTaken(saved.name);
        const now = timestampFromDate(new Date());
        saved.id = newId();
        saved.createTime = saved.updateTime = now;
        rules.push(saved);
        return { rule: saved };
      },
      updateRule(req) {
        calls.push("updateRule");
        ruleUpdates.push(req);
        const i = rules.findIndex((r) => r.id === req.rule?.id);
        if (i < 0) throw new ConnectError(`no notification rule has ID ${req.rule?.id ?? ""}`, Code.NotFound);
        const saved = checkRule(req.rule);
        if ([...channels, ...rules].some((x) => x.id !== saved.id && x.name === saved.name)) throw nameTaken(saved.name);
        saved.createTime = rules[i]!.createTime;
        saved.updateTime = timestampFromDate(new Date());
        rules.splice(i, 1, saved);
        return { rule: saved };
      },
      listRules() {
        calls.push("listRules");
        return { rules };
      },
      deleteRule(req) {
        calls.push("deleteRule");
        const i = rules.findIndex((r) => r.id === req.id);
        if (i < 0) throw new ConnectError(`no notification rule has ID ${req.id}`, Code.NotFound);
        rules.splice(i, 1);
        return {};
      },
      listDeliveries(req) {
        calls.push("listDeliveries");
        const offset = req.pageToken ? Number(atob(req.pageToken)) : 0;
        const size = req.pageSize || 50;
        const page = deliveries.slice(offset, offset + size);
        return { deliveries: page, nextPageToken: offset + size < deliveries.length ? btoa(String(offset + size)) : "" };
      },
    });
  return { routes, calls, creates, ruleCreates, channelUpdates, ruleUpdates, sealed, channels, rules, deliveries, receiver };
}

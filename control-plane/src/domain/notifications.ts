import { NOTIFICATION_EVENT_LABELS } from "@redflag/common/notification-events";
import { Code, ConnectError } from "@connectrpc/connect";
import { LABEL, LABEL_RULE, normaliseLabel } from "@redflag/common/labels";
import { isUuid, newId } from "../ids.ts";
import { seal, unseal } from "../signing/keys.ts";
import { isUniqueViolation, inTransaction } from "../store/db.ts";
import {
  countChannels,
  countRules,
  createChannel,
  createDelivery,
  createRule,
  deleteChannel,
  deleteRule,
  dueDeliveries,
  enqueueNotification,
  existingChannelIds,
  enabledChannelIds,
  findChannel,
  findRule,
  gatheringDeliveries,
  growDelivery,
  listChannels,
  NOTIFICATION_EVENTS,
  recordAttempt,
  routeOutbox,
  rulesUsingChannel,
  SEVERITIES,
  updateChannel,
  updateRule,
  type ChannelRow,
  type DeliveryItem,
  type DeliveryRow,
  type EventToRoute,
  type RuleRow,
  type RuleWrite,
  type Severity,
} from "../store/notifications.ts";
import type { Prisma, Tx } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { healthCutoffs } from "./health.ts";
import { markBackOnline, markGoneOffline, markRebootDone, markRebootRequired } from "../store/agents.ts";
import { invalid, text } from "./input.ts";
import {
  CHANNEL_KINDS,
  DEFAULT_SEND_LIMITS,
  DeliveryError,
  sendToChannel,
  type ChannelConfig,
  type ChannelKindName,
  type ChannelSecrets,
  type EmailSettings,
  type NotificationMessage,
  type SendLimits,
} from "./notification-senders.ts";

// Channels, rules and the way from an event to a message: the outbox is routed into
// deliveries (grouped per rule, channel and event kind; held back over quiet hours), which are
// sent with retries and exponential backoff. The leader's scheduler runs runNotifications.

export { CHANNEL_KINDS, type ChannelKindName, type ChannelSecrets, type EmailSettings };

// Retries: 30 s, 1 min, 2 min … at most 1 h apart; given up after 8 attempts (about 4 hours).
export const RETRY = { baseMs: 30_000, capMs: 3_600_000, maxAttempts: 8 };
// A message lists the first events; the rest are counted.
const MAX_ITEMS = 10;
const MAX_AGENT_IDS = 1000;
const MAX_CHANNELS = 100;
const MAX_RULES = 100;

const sealPurpose = (channelId: string) => `redflag.notification-channel.${channelId}`;

// --- channels ---

export interface ChannelInput {
  name: string;
  kind: ChannelKindName;
  enabled: boolean;
  secrets: ChannelSecrets;
  email: EmailSettings | undefined;
  ntfyPriority: number;
}

export interface ChannelView {
  row: ChannelRow;
  email: EmailSettings | undefined;
  ntfyPriority: number;
}

function httpUrl(field: string, value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`${field} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw invalid(`${field} must be an http:// or https:// URL`);
  if (value.length > 2048) throw invalid(`${field} is longer than 2048 characters`);
  return url;
}

const ADDRESS = /^[^\s@<>]+@[^\s@<>]+$/;

// Checks what a kind needs and refuses what it does not use, so a secret is never kept by a
// channel that would not use it.
export function checkChannel(input: ChannelInput): void {
  text("name", input.name, { max: 64, required: true });
  const s = input.secrets;
  const needs = {
    url: input.kind !== "email",
    token: input.kind === "gotify",
    signingSecret: input.kind === "webhook",
    smtpPassword: false,
  };
  const allowed = { url: needs.url, token: input.kind === "gotify" || input.kind === "ntfy", signingSecret: needs.signingSecret, smtpPassword: input.kind === "email" };
  const names = { url: "secrets.url", token: "secrets.token", signingSecret: "secrets.signing_secret", smtpPassword: "secrets.smtp_password" } as const;
  for (const key of Object.keys(names) as (keyof ChannelSecrets)[]) {
    if (needs[key] && !s[key]) throw invalid(`a ${input.kind} channel needs ${names[key]}`);
    if (!allowed[key] && s[key]) throw invalid(`a ${input.kind} channel takes no ${names[key]}`);
    text(names[key], s[key], { max: 2048 });
  }
  if (needs.url) httpUrl(names.url, s.url);
  if (input.kind === "webhook" && (s.signingSecret.length < 16 || s.signingSecret.length > 256)) throw invalid("secrets.signing_secret must be 16 to 256 characters");
  if (input.kind === "email") {
    const e = input.email;
    if (!e) throw invalid("an email channel needs email settings (smtp_host, from, to)");
    text("email.smtp_host", e.smtpHost, { max: 253, required: true });
    if (!/^[A-Za-z0-9.:[\]-]+$/.test(e.smtpHost)) throw invalid("email.smtp_host must be a host name or address");
    if (!Number.isInteger(e.smtpPort) || e.smtpPort < 1 || e.smtpPort > 65535) throw invalid("email.smtp_port must be from 1 to 65535");
    if (!["starttls", "tls", "none"].includes(e.smtpSecurity)) throw invalid('email.smtp_security must be "starttls", "tls" or "none"');
    text("email.smtp_username", e.smtpUsername, { max: 256 });
    if (s.smtpPassword && !e.smtpUsername) throw invalid("secrets.smtp_password needs email.smtp_username");
    if (!ADDRESS.test(e.from) || e.from.length > 320) throw invalid(`email.from "${e.from.slice(0, 64)}" is not an email address`);
    if (e.to.length < 1 || e.to.length > 20) throw invalid("email.to must list 1 to 20 addresses");
    for (const to of e.to) if (!ADDRESS.test(to) || to.length > 320) throw invalid(`email.to "${to.slice(0, 64)}" is not an email address`);
  } else if (input.email) {
    throw invalid(`a ${input.kind} channel takes no email settings`);
  }
  if (!Number.isInteger(input.ntfyPriority) || input.ntfyPriority < 1 || input.ntfyPriority > 5) throw invalid("ntfy_priority must be from 1 to 5");
}

// Enough to recognise the secrets by, never enough to use them.
export function secretHint(kind: ChannelKindName, s: ChannelSecrets, email?: EmailSettings): string {
  const tail = (v: string) => (v.length > 8 ? `…${v.slice(-4)}` : "…");
  const parts: string[] = [];
  if (s.url) parts.push(`${new URL(s.url).host}/${tail(s.url)}`);
  if (s.token) parts.push(`token ${tail(s.token)}`);
  if (s.signingSecret) parts.push("signing secret set");
  if (kind === "email") parts.push(s.smtpPassword ? `${email?.smtpUsername} with a password` : "no password");
  return parts.join(", ");
}

const settingsOf = (input: Pick<ChannelInput, "email" | "ntfyPriority">) => ({ ...(input.email ? { email: input.email } : {}), ntfyPriority: input.ntfyPriority });

export function viewChannel(row: ChannelRow): ChannelView {
  const settings = (row.settings ?? {}) as { email?: EmailSettings; ntfyPriority?: number };
  return { row, email: settings.email, ntfyPriority: settings.ntfyPriority ?? 3 };
}

function channelConfig(masterKey: Buffer, row: ChannelRow): ChannelConfig {
  const view = viewChannel(row);
  const secrets = JSON.parse(Buffer.from(unseal(masterKey, sealPurpose(row.id), row.secrets)).toString("utf8")) as ChannelSecrets;
  return { kind: row.kind as ChannelKindName, secrets, email: view.email, ntfyPriority: view.ntfyPriority };
}

const sealSecrets = (masterKey: Buffer, id: string, s: ChannelSecrets) => seal(masterKey, sealPurpose(id), Buffer.from(JSON.stringify(s)));

const nameTaken = (name: string) => new ConnectError(`a channel or rule named "${name}" already exists`, Code.AlreadyExists);
const channelNotFound = (id: string) => new ConnectError(`no notification channel has ID ${id}`, Code.NotFound);

// What the audit entry keeps of a channel: never a secret.
export const channelAuditView = (v: ChannelView) => ({ id: v.row.id, name: v.row.name, kind: v.row.kind, enabled: v.row.enabled, secretHint: v.row.secretHint, email: v.email, ntfyPriority: v.ntfyPriority });

export async function addChannel(db: Prisma, masterKey: Buffer, input: ChannelInput, record: AuditHook<ChannelView>, now = new Date()): Promise<ChannelView> {
  checkChannel(input);
  const id = newId();
  try {
    return await inTransaction(db, async (tx) => {
      if ((await countChannels(tx)) >= MAX_CHANNELS) throw new ConnectError(`at most ${MAX_CHANNELS} channels`, Code.ResourceExhausted);
      const row = await createChannel(
        tx,
        id,
        { name: input.name, kind: input.kind, enabled: input.enabled, settings: settingsOf(input), secrets: sealSecrets(masterKey, id, input.secrets), secretHint: secretHint(input.kind, input.secrets, input.email) },
        now,
      );
      const view = viewChannel(row);
      await record(tx, view);
      return view;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(input.name);
    throw err;
  }
}

export interface ChannelChange {
  name?: string | undefined;
  enabled?: boolean | undefined;
  secrets?: ChannelSecrets | undefined;
  email?: EmailSettings | undefined;
  ntfyPriority?: number | undefined;
}

export async function changeChannel(
  db: Prisma,
  masterKey: Buffer,
  id: string,
  change: ChannelChange,
  record: AuditHook<{ before: ChannelView; after: ChannelView }>,
  now = new Date(),
): Promise<ChannelView> {
  try {
    return await inTransaction(db, async (tx) => {
      const row = await findChannel(tx, id);
      if (!row) throw channelNotFound(id);
      const before = viewChannel(row);
      const current = channelConfig(masterKey, row);
      const input: ChannelInput = {
        name: change.name ?? row.name,
        kind: current.kind,
        enabled: change.enabled ?? row.enabled,
        secrets: change.secrets ?? current.secrets,
        email: change.email ?? current.email,
        ntfyPriority: change.ntfyPriority ?? current.ntfyPriority,
      };
      checkChannel(input);
      const updated = await updateChannel(
        tx,
        id,
        {
          name: input.name,
          enabled: input.enabled,
          settings: settingsOf(input),
          ...(change.secrets ? { secrets: sealSecrets(masterKey, id, input.secrets) } : {}),
          secretHint: secretHint(input.kind, input.secrets, input.email),
        },
        now,
      );
      const after = viewChannel(updated);
      await record(tx, { before, after });
      return after;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(change.name ?? "");
    throw err;
  }
}

export async function removeChannel(db: Prisma, id: string, record: AuditHook<ChannelView>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await findChannel(tx, id);
    if (!row) throw channelNotFound(id);
    const inUse = await rulesUsingChannel(tx, id);
    if (inUse.length > 0) {
      throw new ConnectError(`the channel is used by ${inUse.length === 1 ? "rule" : "rules"} ${inUse.map((name) => `"${name}"`).join(", ")}: remove it from them first`, Code.FailedPrecondition);
    }
    await deleteChannel(tx, id);
    await record(tx, viewChannel(row));
  });
}

export const channels = async (db: Prisma) => (await listChannels(db)).map(viewChannel);

// --- rules ---

// A rule as stored, with its quiet hours as one value.
export type RuleInput = Omit<RuleWrite, "quietStart" | "quietEnd" | "quietTimeZone"> & { quiet: { start: string; end: string; timeZone: string } | undefined };

const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return zone.length > 0;
  } catch {
    return false;
  }
}

async function checkRule(tx: Tx, input: RuleInput): Promise<RuleWrite> {
  text("name", input.name, { max: 64, required: true });
  const known: readonly string[] = NOTIFICATION_EVENTS;
  if (input.events.length === 0) throw invalid(`events must name at least one of ${NOTIFICATION_EVENTS.join(", ")}`);
  for (const e of input.events) if (!known.includes(e)) throw invalid(`events: "${e.slice(0, 64)}" is not an event (${NOTIFICATION_EVENTS.join(", ")})`);
  const minSeverity = input.minSeverity || "info";
  if (!(SEVERITIES as readonly string[]).includes(minSeverity)) throw invalid("min_severity must be info, warning or critical");
  if (input.groups.length > 50) throw invalid("groups: at most 50");
  const groups = [...new Set(input.groups.map(normaliseLabel))];
  for (const g of groups) if (!LABEL.test(g)) throw invalid(`group "${g.slice(0, 64)}" is not a label: ${LABEL_RULE}`);
  if (input.channelIds.length === 0 || input.channelIds.length > 20) throw invalid("channel_ids must list 1 to 20 channels");
  const channelIds = [...new Set(input.channelIds)];
  for (const id of channelIds) if (!isUuid(id)) throw invalid(`channel_ids: "${id.slice(0, 64)}" is not a channel ID`);
  const found = await existingChannelIds(tx, channelIds);
  const missing = channelIds.filter((id) => !found.has(id));
  if (missing.length > 0) throw new ConnectError(`no notification channel has ID ${missing.join(", ")}`, Code.NotFound);
  if (input.quiet) {
    if (!HHMM.test(input.quiet.start) || !HHMM.test(input.quiet.end)) throw invalid('quiet_hours.start and quiet_hours.end must be local times "HH:MM"');
    if (input.quiet.start === input.quiet.end) throw invalid("quiet_hours.start and quiet_hours.end must differ");
    if (!isTimeZone(input.quiet.timeZone)) throw invalid(`quiet_hours.time_zone "${input.quiet.timeZone.slice(0, 64)}" is not an IANA time zone (for example Europe/Berlin)`);
  }
  if (!Number.isInteger(input.groupWindowSeconds) || input.groupWindowSeconds < 10 || input.groupWindowSeconds > 3600) throw invalid("group_window must be from 10 seconds to 1 hour");
  return {
    name: input.name,
    enabled: input.enabled,
    events: [...new Set(input.events)],
    minSeverity,
    groups,
    channelIds,
    quietStart: input.quiet?.start ?? null,
    quietEnd: input.quiet?.end ?? null,
    quietTimeZone: input.quiet?.timeZone ?? null,
    groupWindowSeconds: input.groupWindowSeconds,
  };
}

const ruleNotFound = (id: string) => new ConnectError(`no notification rule has ID ${id}`, Code.NotFound);

export async function addRule(db: Prisma, input: RuleInput, record: AuditHook<RuleRow>, now = new Date()): Promise<RuleRow> {
  try {
    return await inTransaction(db, async (tx) => {
      if ((await countRules(tx)) >= MAX_RULES) throw new ConnectError(`at most ${MAX_RULES} rules`, Code.ResourceExhausted);
      const row = await createRule(tx, await checkRule(tx, input), now);
      await record(tx, row);
      return row;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(input.name);
    throw err;
  }
}

export async function changeRule(db: Prisma, id: string, input: RuleInput, record: AuditHook<{ before: RuleRow; after: RuleRow }>, now = new Date()): Promise<RuleRow> {
  try {
    return await inTransaction(db, async (tx) => {
      const before = await findRule(tx, id);
      if (!before) throw ruleNotFound(id);
      const after = await updateRule(tx, id, await checkRule(tx, input), now);
      await record(tx, { before, after });
      return after;
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw nameTaken(input.name);
    throw err;
  }
}

export async function removeRule(db: Prisma, id: string, record: AuditHook<RuleRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await findRule(tx, id);
    if (!row) throw ruleNotFound(id);
    await deleteRule(tx, id);
    await record(tx, row);
  });
}

// --- quiet hours ---

const minuteFormats = new Map<string, Intl.DateTimeFormat>();

// Minutes since local midnight in the zone.
function localMinutes(t: Date, zone: string): number {
  let f = minuteFormats.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    minuteFormats.set(zone, f);
  }
  const parts = f.formatToParts(t);
  const get = (type: string) => Number(parts.find((p) => p.type === type)!.value);
  return get("hour") * 60 + get("minute");
}

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

export function inQuietHours(quiet: { start: string; end: string; timeZone: string }, t: Date): boolean {
  const m = localMinutes(t, quiet.timeZone);
  const s = minutesOf(quiet.start);
  const e = minutesOf(quiet.end);
  return s < e ? m >= s && m < e : m >= s || m < e;
}

// The first moment at or after t outside the quiet hours. Steps a minute at a time (at most a
// day's worth), so daylight-saving jumps land where the wall clock says.
export function afterQuietHours(quiet: { start: string; end: string; timeZone: string } | undefined, t: Date): Date {
  if (!quiet || !inQuietHours(quiet, t)) return t;
  let x = new Date(Math.floor(t.getTime() / 60_000) * 60_000 + 60_000);
  for (let i = 0; i < 1500 && inQuietHours(quiet, x); i++) x = new Date(x.getTime() + 60_000);
  return x;
}

const quietOf = (rule: Pick<RuleRow, "quietStart" | "quietEnd" | "quietTimeZone">) =>
  rule.quietStart && rule.quietEnd && rule.quietTimeZone ? { start: rule.quietStart, end: rule.quietEnd, timeZone: rule.quietTimeZone } : undefined;

// --- routing and sending ---

const rank = (s: string) => (SEVERITIES as readonly string[]).indexOf(s);

export function ruleMatches(rule: Pick<RuleRow, "events" | "minSeverity" | "groups">, event: Pick<EventToRoute, "kind" | "severity" | "agentId" | "group">): boolean {
  if (!rule.events.includes(event.kind)) return false;
  if (rank(event.severity) < rank(rule.minSeverity)) return false;
  // An event without an agent (a key rotation) concerns every group.
  return rule.groups.length === 0 || event.agentId === null || rule.groups.includes(event.group ?? "");
}

interface Gathering {
  id: string | undefined;
  write: { channelId: string; ruleId: string; event: string; severity: string; eventCount: number; agentIds: string[]; items: DeliveryItem[]; dueAt: Date };
}

// Turns the outbox's events into deliveries: one per rule, channel and event kind that is still
// gathering (never tried), so a burst becomes one message.
async function routeEvents(tx: Tx, events: EventToRoute[], rules: RuleRow[], now: Date): Promise<void> {
  const channelIds = await enabledChannelIds(tx, [...new Set(rules.flatMap((r) => r.channelIds))]);
  const key = (ruleId: string, channelId: string, event: string) => `${ruleId} ${channelId} ${event}`;
  const open = new Map<string, Gathering>();
  for (const d of await gatheringDeliveries(tx, rules.map((r) => r.id))) {
    open.set(key(d.ruleId!, d.channelId, d.event), { id: d.id, write: { ...d, ruleId: d.ruleId!, items: d.items as unknown as DeliveryItem[] } });
  }
  const touched = new Set<Gathering>();
  for (const event of events) {
    const item: DeliveryItem = { host: event.hostname ?? (event.agentId ? `agent ${event.agentId.slice(0, 8)}` : "control plane"), text: event.text, time: event.createdAt.toISOString() };
    for (const rule of rules) {
      if (!ruleMatches(rule, event)) continue;
      for (const channelId of rule.channelIds) {
        if (!channelIds.has(channelId)) continue;
        const k = key(rule.id, channelId, event.kind);
        let g = open.get(k);
        if (!g) {
          const dueAt = afterQuietHours(quietOf(rule), new Date(now.getTime() + rule.groupWindowSeconds * 1000));
          g = { id: undefined, write: { channelId, ruleId: rule.id, event: event.kind, severity: event.severity, eventCount: 0, agentIds: [], items: [], dueAt } };
          open.set(k, g);
        }
        const w = g.write;
        w.eventCount++;
        if (rank(event.severity) > rank(w.severity)) w.severity = event.severity;
        if (event.agentId && w.agentIds.length < MAX_AGENT_IDS && !w.agentIds.includes(event.agentId)) w.agentIds.push(event.agentId);
        if (w.items.length < MAX_ITEMS) w.items.push(item);
        touched.add(g);
      }
    }
  }
  for (const g of touched) {
    if (g.id) await growDelivery(tx, g.id, g.write);
    else await createDelivery(tx, g.write, now);
  }
}

// Every event's words come from the one list the console shows too (a kind missing there would
// be titled by its key).
const EVENT_LABELS: Record<string, string> = { ...NOTIFICATION_EVENT_LABELS, test: "Test message" };

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

// What a delivery says: one event as itself; several as counts and the first few.
export function messageOf(d: Pick<DeliveryRow, "id" | "event" | "severity" | "eventCount" | "agentIds" | "items">, now: Date): NotificationMessage {
  const items = d.items as unknown as DeliveryItem[];
  const label = EVENT_LABELS[d.event] ?? d.event;
  const hosts = d.agentIds.length >= MAX_AGENT_IDS ? `${MAX_AGENT_IDS}+ hosts` : plural(d.agentIds.length, "host");
  const title =
    d.eventCount === 1 && items[0] ? `${label}: ${items[0].host}` : d.agentIds.length > 0 ? `${label}: ${plural(d.eventCount, "event")} on ${hosts}` : `${label}: ${plural(d.eventCount, "event")}`;
  const lines = items.map((i) => `${i.host}: ${i.text}`);
  if (d.eventCount > items.length) lines.push(`… and ${d.eventCount - items.length} more`);
  return {
    id: d.id,
    event: d.event,
    severity: d.severity as Severity,
    title,
    text: lines.join("\n"),
    eventCount: d.eventCount,
    hostCount: d.agentIds.length,
    items,
    time: now,
  };
}

export const retryDelayMs = (attempts: number) => Math.min(RETRY.baseMs * 2 ** (attempts - 1), RETRY.capMs);

export interface NotifierDeps {
  db: Prisma;
  masterKey: Buffer;
  limits?: SendLimits | undefined;
}

type DueDelivery = Awaited<ReturnType<typeof dueDeliveries>>[number];

// One attempt at a delivery; records the outcome (sent, a retry later, or given up).
// A test is tried once, also on a disabled channel (to try it before enabling it).
async function attempt(deps: NotifierDeps, d: DueDelivery, now: Date, test = false): Promise<{ delivered: boolean; error: string }> {
  let error = "";
  const disabled = !d.channel.enabled && !test;
  if (disabled) error = "the channel is disabled";
  else {
    try {
      await sendToChannel(channelConfig(deps.masterKey, d.channel), messageOf(d, now), deps.limits ?? DEFAULT_SEND_LIMITS);
    } catch (err) {
      error = err instanceof DeliveryError ? err.message : "internal error while sending (see the control plane's log)";
      if (!(err instanceof DeliveryError)) throw Object.assign(err as Error, { deliveryId: d.id });
    }
  }
  const attempts = d.attempts + 1;
  const delivered = error === "";
  const giveUp = !delivered && (test || disabled || attempts >= RETRY.maxAttempts);
  await recordAttempt(deps.db, d.id, {
    status: delivered ? "sent" : giveUp ? "failed" : "waiting",
    attempts,
    lastError: error,
    dueAt: delivered || giveUp ? d.dueAt : new Date(now.getTime() + retryDelayMs(attempts)),
    sentAt: delivered ? now : null,
  });
  return { delivered, error };
}

// Agents that stopped polling, and agents that came back, as notification events: an agent is
// offline once it has been silent for longer than it may be online (three poll intervals,
// domain/health.ts), told once, and told again when it polls. Nothing is told as offline until
// the control plane has watched for that long itself (`watchingSince`: its start), so a
// restart after a long outage does not report every agent as gone.
export async function noticeAgentHealth(db: Prisma, now: Date, pollIntervalSeconds: number, watchingSince: Date): Promise<{ offline: number; back: number }> {
  const { online } = healthCutoffs(now, pollIntervalSeconds);
  return inTransaction(db, async (tx) => {
    const back = await markBackOnline(tx, online, 1000);
    for (const a of back) {
      await enqueueNotification(tx, { kind: "agent_back", severity: "info", agentId: a.id, text: `polls again (reported offline at ${a.offlineSince.toISOString()})` });
    }
    const gone = online >= watchingSince ? await markGoneOffline(tx, online, now, 1000) : [];
    for (const a of gone) {
      await enqueueNotification(tx, { kind: "agent_offline", severity: "warning", agentId: a.id, text: `stopped polling: last heard from at ${a.lastSeenAt.toISOString()}` });
    }
    return { offline: gone.length, back: back.length };
  });
}

// Agents that report needing a reboot (any source, from their poll status), told
// once, and told again once they no longer need one.
export async function noticeReboots(db: Prisma, now: Date): Promise<{ required: number; done: number }> {
  return inTransaction(db, async (tx) => {
    const done = await markRebootDone(tx, 1000);
    for (const a of done) {
      await enqueueNotification(tx, { kind: "reboot_done", severity: "info", agentId: a.id, text: `no longer needs a reboot (told it did at ${a.requiredSince.toISOString()})` });
    }
    const required = await markRebootRequired(tx, now, 1000);
    for (const a of required) await enqueueNotification(tx, { kind: "reboot_required", severity: "warning", agentId: a.id, text: "needs a reboot to finish its updates" });
    return { required: required.length, done: done.length };
  });
}

// The leader's notification job: route the outbox, then send what is due.
export async function runNotifications(deps: NotifierDeps, now: Date): Promise<{ routed: number; sent: number; failed: number }> {
  let routed = 0;
  for (let batch = 0; batch < 20; batch++) {
    const n = await routeOutbox(deps.db, 500, (tx, events, rules) => routeEvents(tx, events, rules, now));
    routed += n;
    if (n < 500) break;
  }
  let sent = 0;
  let failed = 0;
  // Sent one after another: a slow receiver delays the others by at most its time limit.
  for (const d of await dueDeliveries(deps.db, now, 50)) {
    const outcome = await attempt(deps, d, now);
    if (outcome.delivered) sent++;
    else failed++;
  }
  return { routed, sent, failed };
}

// A test message to one channel, now, kept in the delivery log (not retried).
export async function sendTestMessage(deps: NotifierDeps, channelId: string, by: string, now = new Date()) {
  const channel = await findChannel(deps.db, channelId);
  if (!channel) throw channelNotFound(channelId);
  const row = await createDelivery(
    deps.db,
    { channelId, ruleId: null, event: "test", severity: "info", eventCount: 1, agentIds: [], items: [{ host: "RedFlag", text: `a test message sent by ${by}; this channel works`, time: now.toISOString() }], dueAt: now },
    now,
  );
  // One attempt only: a test that fails is reported now, not retried for hours.
  const outcome = await attempt(deps, { ...row, channel }, now, true);
  return { ...outcome, deliveryId: row.id };
}

import { newId } from "../ids.ts";
import type { Prisma, Tx } from "./types.ts";
import { bytes } from "./types.ts";

// Notifications: channels (secrets sealed by the caller), rules, the event outbox and the
// delivery log. The rules about them are in domain/notifications.ts.

import type { NotificationEventKind } from "@redflag/common/notification-events";
export { NOTIFICATION_EVENTS, type NotificationEventKind } from "@redflag/common/notification-events";
export const SEVERITIES = ["info", "warning", "critical"] as const;
export type Severity = (typeof SEVERITIES)[number];

export interface OutboxEvent {
  kind: NotificationEventKind;
  severity: Severity;
  agentId?: string | undefined;
  // One line: what happened ("install of 3 packages failed: …"); the host is added when sent.
  text: string;
}

// The outbox: call it with the transaction that records what happened, so the event is kept
// exactly when the change is. Delivery happens later, on the leader (nothing is sent here).
export async function enqueueNotification(db: Prisma | Tx, event: OutboxEvent): Promise<void> {
  await db.notificationEvent.create({ data: { kind: event.kind, severity: event.severity, agentId: event.agentId ?? null, text: event.text.slice(0, 500) } });
}

// --- channels ---

export interface ChannelWrite {
  name: string;
  kind: string;
  enabled: boolean;
  settings: Record<string, unknown>;
  secrets: Uint8Array;
  secretHint: string;
}

export const listChannels = (db: Prisma | Tx) => db.notificationChannel.findMany({ orderBy: { name: "asc" } });
export const findChannel = (db: Prisma | Tx, id: string) => db.notificationChannel.findUnique({ where: { id } });
export type ChannelRow = NonNullable<Awaited<ReturnType<typeof findChannel>>>;

export async function createChannel(tx: Tx, id: string, input: ChannelWrite, now: Date): Promise<ChannelRow> {
  return tx.notificationChannel.create({ data: { id, ...input, settings: input.settings as object, secrets: bytes(input.secrets), createdAt: now, updatedAt: now } });
}

export async function updateChannel(tx: Tx, id: string, input: Partial<ChannelWrite>, now: Date): Promise<ChannelRow> {
  const { secrets, settings, ...rest } = input;
  return tx.notificationChannel.update({
    where: { id },
    data: { ...rest, ...(settings ? { settings: settings as object } : {}), ...(secrets ? { secrets: bytes(secrets) } : {}), updatedAt: now },
  });
}

export async function deleteChannel(tx: Tx, id: string): Promise<void> {
  await tx.notificationChannel.delete({ where: { id } });
}

// --- rules ---

export interface RuleWrite {
  name: string;
  enabled: boolean;
  events: string[];
  minSeverity: string;
  groups: string[];
  channelIds: string[];
  quietStart: string | null;
  quietEnd: string | null;
  quietTimeZone: string | null;
  groupWindowSeconds: number;
}

export const listRules = (db: Prisma | Tx) => db.notificationRule.findMany({ orderBy: { name: "asc" } });
export const findRule = (db: Prisma | Tx, id: string) => db.notificationRule.findUnique({ where: { id } });
export type RuleRow = NonNullable<Awaited<ReturnType<typeof findRule>>>;

export const createRule = (tx: Tx, input: RuleWrite, now: Date): Promise<RuleRow> =>
  tx.notificationRule.create({ data: { id: newId(), ...input, createdAt: now, updatedAt: now } });

export const updateRule = (tx: Tx, id: string, input: RuleWrite, now: Date): Promise<RuleRow> =>
  tx.notificationRule.update({ where: { id }, data: { ...input, updatedAt: now } });

export async function deleteRule(tx: Tx, id: string): Promise<void> {
  await tx.notificationRule.delete({ where: { id } });
}

// --- routing: outbox events into deliveries ---

export interface EventToRoute {
  id: bigint;
  kind: string;
  severity: string;
  agentId: string | null;
  text: string;
  createdAt: Date;
  hostname: string | null;
  group: string | null;
}

export interface DeliveryItem {
  host: string;
  text: string;
  time: string;
}

export type DeliveryRow = Awaited<ReturnType<Tx["notificationDelivery"]["create"]>>;

// One batch of the outbox, locked (a second leader for a moment skips it), with each event's
// agent; `route` turns them into deliveries in the same transaction and the batch is removed,
// so each event is routed exactly once and a crash part-way routes it again.
export async function routeOutbox(
  db: Prisma,
  limit: number,
  route: (tx: Tx, events: EventToRoute[], rules: RuleRow[]) => Promise<void>,
): Promise<number> {
  return db.$transaction(async (tx) => {
    const events = await tx.$queryRaw<EventToRoute[]>`
      SELECT e.id, e.kind, e.severity, e.agent_id AS "agentId", e.text, e.created_at AS "createdAt", a.hostname, a."group"
        FROM notification_events e LEFT JOIN agents a ON a.id = e.agent_id
       ORDER BY e.id
       LIMIT ${limit}
       FOR UPDATE OF e SKIP LOCKED`;
    if (events.length === 0) return 0;
    const rules = await tx.notificationRule.findMany({ where: { enabled: true } });
    await route(tx, events, rules);
    await tx.notificationEvent.deleteMany({ where: { id: { in: events.map((e) => e.id) } } });
    return events.length;
  });
}

// The deliveries still gathering events (waiting, never tried) of these rules.
export const gatheringDeliveries = (tx: Tx, ruleIds: string[]) =>
  tx.notificationDelivery.findMany({ where: { status: "waiting", attempts: 0, ruleId: { in: ruleIds } } });

export const enabledChannelIds = async (tx: Tx, ids: string[]) =>
  new Set((await tx.notificationChannel.findMany({ where: { id: { in: ids }, enabled: true }, select: { id: true } })).map((c) => c.id));

export interface DeliveryWrite {
  channelId: string;
  ruleId: string | null;
  event: string;
  severity: string;
  eventCount: number;
  agentIds: string[];
  items: DeliveryItem[];
  dueAt: Date;
}

export const createDelivery = (db: Prisma | Tx, input: DeliveryWrite, now: Date) =>
  db.notificationDelivery.create({ data: { id: newId(), ...input, items: input.items as object[], createdAt: now } });

export async function growDelivery(tx: Tx, id: string, grown: Pick<DeliveryWrite, "severity" | "eventCount" | "agentIds" | "items">): Promise<void> {
  await tx.notificationDelivery.update({ where: { id }, data: { ...grown, items: grown.items as object[] } });
}

// --- sending ---

export const dueDeliveries = (db: Prisma, now: Date, limit: number) =>
  db.notificationDelivery.findMany({ where: { status: "waiting", dueAt: { lte: now } }, orderBy: { dueAt: "asc" }, take: limit, include: { channel: true } });

export async function recordAttempt(
  db: Prisma,
  id: string,
  outcome: { status: "waiting" | "sent" | "failed"; attempts: number; lastError: string; dueAt: Date; sentAt: Date | null },
): Promise<void> {
  await db.notificationDelivery.update({ where: { id }, data: outcome });
}

// Newest first; the page token is the last row's ID (UUIDs are random, so created_at breaks ties).
export async function listDeliveries(db: Prisma, filter: { channelId?: string | undefined; status?: string | undefined }, pageSize: number, offset: number) {
  const rows = await db.notificationDelivery.findMany({
    where: { ...(filter.channelId ? { channelId: filter.channelId } : {}), ...(filter.status ? { status: filter.status } : {}) },
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    skip: offset,
    take: pageSize + 1,
    include: { channel: { select: { name: true } } },
  });
  return { rows: rows.slice(0, pageSize), more: rows.length > pageSize };
}

export async function getDelivery(db: Prisma, id: string) {
  return db.notificationDelivery.findUniqueOrThrow({ where: { id }, include: { channel: { select: { name: true } } } });
}

export async function pruneDeliveries(db: Prisma, before: Date): Promise<number> {
  return (await db.notificationDelivery.deleteMany({ where: { createdAt: { lt: before }, status: { not: "waiting" } } })).count;
}

// --- counts and references the rules check ---

export const countChannels = (db: Prisma | Tx) => db.notificationChannel.count();
export const countRules = (db: Prisma | Tx) => db.notificationRule.count();
// The rules that send to this channel, by name.
export const rulesUsingChannel = async (db: Prisma | Tx, channelId: string) =>
  (await db.notificationRule.findMany({ where: { channelIds: { has: channelId } }, select: { name: true } })).map((r) => r.name);
// Which of these channel IDs exist.
export const existingChannelIds = async (db: Prisma | Tx, ids: readonly string[]) =>
  new Set((await db.notificationChannel.findMany({ where: { id: { in: [...ids] } }, select: { id: true } })).map((c) => c.id));

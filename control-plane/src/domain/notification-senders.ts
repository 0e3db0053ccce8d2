import { createHmac } from "node:crypto";
import nodemailer from "nodemailer";

// How each kind of channel is spoken to. Every request is bounded: a time limit for the whole
// exchange, a cap on how much of the answer is read, and redirects followed only on the same
// host (a receiver cannot send the message, and its secrets, elsewhere).

export const CHANNEL_KINDS = ["webhook", "slack", "discord", "teams", "ntfy", "gotify", "email"] as const;
export type ChannelKindName = (typeof CHANNEL_KINDS)[number];

export interface ChannelSecrets {
  url: string;
  token: string;
  signingSecret: string;
  smtpPassword: string;
}

export interface EmailSettings {
  smtpHost: string;
  smtpPort: number;
  smtpSecurity: "starttls" | "tls" | "none";
  smtpUsername: string;
  from: string;
  to: string[];
}

export interface ChannelConfig {
  kind: ChannelKindName;
  secrets: ChannelSecrets;
  email: EmailSettings | undefined;
  ntfyPriority: number;
}

export interface NotificationMessage {
  // The delivery's ID: receivers can use it to drop a message they already have.
  id: string;
  event: string;
  severity: "info" | "warning" | "critical";
  title: string;
  // Plain text: the events, one a line.
  text: string;
  eventCount: number;
  hostCount: number;
  items: { host: string; text: string; time: string }[];
  time: Date;
}

export interface SendLimits {
  timeoutMs: number;
  maxResponseBytes: number;
}

export const DEFAULT_SEND_LIMITS: SendLimits = { timeoutMs: 10_000, maxResponseBytes: 64 * 1024 };

// A delivery that did not go through; the message is for the delivery log (never a secret).
export class DeliveryError extends Error {}

// The signature a webhook receiver checks: HMAC-SHA256 over "<timestamp>.<body>" (see
// docs/notifications.md).
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

export async function sendToChannel(channel: ChannelConfig, message: NotificationMessage, limits: SendLimits = DEFAULT_SEND_LIMITS): Promise<void> {
  const { secrets } = channel;
  const heading = message.title;
  switch (channel.kind) {
    case "webhook": {
      const body = JSON.stringify({
        id: message.id,
        event: message.event,
        severity: message.severity,
        title: message.title,
        text: message.text,
        event_count: message.eventCount,
        host_count: message.hostCount,
        items: message.items,
        time: message.time.toISOString(),
      });
      const timestamp = String(Math.floor(message.time.getTime() / 1000));
      return post(secrets.url, body, limits, {
        "content-type": "application/json",
        "x-redflag-event": message.event,
        "x-redflag-delivery": message.id,
        "x-redflag-timestamp": timestamp,
        "x-redflag-signature": webhookSignature(secrets.signingSecret, timestamp, body),
      });
    }
    case "slack":
      return postJson(secrets.url, { text: `*${escapeSlack(heading)}*\n${escapeSlack(message.text)}` }, limits);
    case "discord":
      // No mentions: a hostname or package message must not ping @everyone.
      return postJson(secrets.url, { content: clip(`**${heading}**\n${message.text}`, 2000), allowed_mentions: { parse: [] } }, limits);
    case "teams":
      // An Adaptive Card in a message: what Teams workflows ("post to a channel when a webhook
      // request is received") and the older incoming webhooks both accept.
      return postJson(
        secrets.url,
        {
          type: "message",
          attachments: [
            {
              contentType: "application/vnd.microsoft.card.adaptive",
              content: {
                $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
                type: "AdaptiveCard",
                version: "1.4",
                body: [
                  { type: "TextBlock", text: heading, weight: "Bolder", size: "Medium", wrap: true },
                  { type: "TextBlock", text: message.text, wrap: true },
                ],
              },
            },
          ],
        },
        limits,
      );
    case "ntfy":
      return post(secrets.url, message.text, limits, {
        "content-type": "text/plain; charset=utf-8",
        title: headerText(heading),
        priority: String(message.severity === "critical" ? Math.max(channel.ntfyPriority, 4) : channel.ntfyPriority),
        tags: message.severity === "critical" ? "rotating_light" : message.severity === "warning" ? "warning" : "information_source",
        ...(secrets.token ? { authorization: `Bearer ${secrets.token}` } : {}),
      });
    case "gotify":
      // The token goes in Gotify's header rather than ?token=, so it stays out of access logs.
      return post(`${secrets.url.replace(/\/+$/, "")}/message`, JSON.stringify({ title: heading, message: message.text, priority: GOTIFY_PRIORITY[message.severity] }), limits, {
        "content-type": "application/json",
        "x-gotify-key": secrets.token,
      });
    case "email":
      return sendMail(channel.email!, secrets.smtpPassword, message, limits);
  }
}

const GOTIFY_PRIORITY = { info: 2, warning: 5, critical: 8 } as const;

const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);
const escapeSlack = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
// HTTP header values are Latin-1; anything else becomes "?".
const headerText = (text: string) => clip(text.replace(/[^\x20-\x7e\xa0-\xff]/g, "?"), 250);

const postJson = (url: string, body: unknown, limits: SendLimits) => post(url, JSON.stringify(body), limits, { "content-type": "application/json" });

const MAX_REDIRECTS = 3;

async function post(url: string, body: string, limits: SendLimits, headers: Record<string, string>): Promise<void> {
  const signal = AbortSignal.timeout(limits.timeoutMs);
  let target = new URL(url);
  try {
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await fetch(target, { method: "POST", body, headers: { "user-agent": "RedFlag", ...headers }, redirect: "manual", signal });
      const answer = await readBounded(res, limits.maxResponseBytes);
      if (res.status >= 300 && res.status < 400) {
        const location = res.headers.get("location");
        const next = location ? new URL(location, target) : undefined;
        if (!next || next.origin !== target.origin) {
          throw new DeliveryError(`the receiver redirected (${res.status}) to ${next ? `another host (${next.host})` : "nowhere"}; redirects are followed only on the same host`);
        }
        // 301, 302 and 303 would turn the POST into a GET without the message.
        if (res.status !== 307 && res.status !== 308) throw new DeliveryError(`the receiver answered ${res.status} (a redirect that drops the message); give the final URL`);
        target = next;
        continue;
      }
      if (res.status < 200 || res.status > 299) {
        throw new DeliveryError(`the receiver answered ${res.status}${answer.trim() ? `: ${clip(answer.trim().replace(/\s+/g, " "), 200)}` : ""}`);
      }
      return;
    }
    throw new DeliveryError(`more than ${MAX_REDIRECTS} redirects`);
  } catch (err) {
    throw asDeliveryError(err, target.host, limits);
  }
}

// Reads at most `max` bytes of the answer and drops the rest.
async function readBounded(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
    if (size >= max) {
      await reader.cancel();
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, max).toString("utf8");
}

function asDeliveryError(err: unknown, host: string, limits: SendLimits): DeliveryError {
  if (err instanceof DeliveryError) return err;
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === "TimeoutError" || e.name === "AbortError") return new DeliveryError(`no answer from ${host} within ${limits.timeoutMs / 1000} s`);
  const cause = e.cause?.code ?? e.cause?.message ?? e.message ?? "unknown error";
  return new DeliveryError(`cannot reach ${host}: ${cause}`);
}

async function sendMail(settings: EmailSettings, password: string, message: NotificationMessage, limits: SendLimits): Promise<void> {
  const transport = nodemailer.createTransport({
    host: settings.smtpHost,
    port: settings.smtpPort,
    secure: settings.smtpSecurity === "tls",
    requireTLS: settings.smtpSecurity === "starttls",
    ignoreTLS: settings.smtpSecurity === "none",
    ...(settings.smtpUsername ? { auth: { user: settings.smtpUsername, pass: password } } : {}),
    connectionTimeout: limits.timeoutMs,
    greetingTimeout: limits.timeoutMs,
    socketTimeout: limits.timeoutMs,
  });
  try {
    await transport.sendMail({
      from: settings.from,
      to: settings.to,
      subject: `[RedFlag] ${message.title}`,
      text: message.text,
      headers: { "X-RedFlag-Event": message.event, "X-RedFlag-Delivery": message.id },
    });
  } catch (err) {
    const e = err as { code?: string; responseCode?: number; response?: string; message?: string };
    const what = e.responseCode ? `the mail server answered ${e.responseCode}${e.response ? `: ${clip(e.response, 200)}` : ""}` : (e.code ?? e.message ?? "unknown error");
    throw new DeliveryError(`cannot send mail through ${settings.smtpHost}:${settings.smtpPort}: ${what}`);
  } finally {
    transport.close();
  }
}

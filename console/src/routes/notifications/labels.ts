import { NOTIFICATION_EVENT_LABELS, NOTIFICATION_EVENTS } from "@redflag/common/notification-events";
import { ChannelKind } from "@redflag/gen/notification_service_pb";

// Words for what NotificationService names by enum or by key.
export const KIND_LABELS: Record<number, string> = {
  [ChannelKind.WEBHOOK]: "Webhook",
  [ChannelKind.SLACK]: "Slack",
  [ChannelKind.DISCORD]: "Discord",
  [ChannelKind.TEAMS]: "Microsoft Teams",
  [ChannelKind.NTFY]: "ntfy",
  [ChannelKind.GOTIFY]: "Gotify",
  [ChannelKind.EMAIL]: "Email",
};

// The event kinds a rule can choose, defined once with the control plane's list.
export const EVENTS = NOTIFICATION_EVENTS.map((key) => ({ key, label: NOTIFICATION_EVENT_LABELS[key] }));

export const eventLabel = (key: string) => (key === "test" ? "Test message" : (EVENTS.find((e) => e.key === key)?.label ?? key));

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

// The event kinds a rule can choose (notification_service.proto, NotificationRule.events).
export const EVENTS = [
  { key: "install_failed", label: "Install failed" },
  { key: "install_succeeded", label: "Install succeeded" },
  { key: "security_event", label: "Security event" },
  { key: "agent_upgrade_failed", label: "Agent upgrade failed" },
  { key: "critical_updates", label: "New critical or security updates" },
];

export const eventLabel = (key: string) => (key === "test" ? "Test message" : (EVENTS.find((e) => e.key === key)?.label ?? key));

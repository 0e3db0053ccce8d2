// The events a notification rule can choose (notification_service.proto, NotificationRule.events):
// the control plane refuses any other, and the console lists these, with their words.
export const NOTIFICATION_EVENTS = ["install_failed", "install_succeeded", "security_event", "agent_upgrade_failed", "critical_updates", "agent_offline", "agent_back", "reboot_required", "reboot_done", "rollout_halted", "rollout_finished"] as const;
export type NotificationEventKind = (typeof NOTIFICATION_EVENTS)[number];

export const NOTIFICATION_EVENT_LABELS: Record<NotificationEventKind, string> = {
  install_failed: "Install failed",
  install_succeeded: "Install succeeded",
  security_event: "Security event",
  agent_upgrade_failed: "Agent upgrade failed",
  critical_updates: "New critical or security updates",
  agent_offline: "Agent offline",
  agent_back: "Agent back online",
  reboot_required: "Reboot required",
  reboot_done: "Reboot done",
  rollout_halted: "Rollout halted",
  rollout_finished: "Rollout finished",
};

import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import type { AgentRow } from "../store/agents.ts";

// An agent's health, one rule for the fleet list, the overview, the metrics and the filters.

// Online while silent for at most this many poll intervals; offline up to a day; stale after.
const ONLINE_POLL_INTERVALS = 3;
const OFFLINE_SECONDS = 86_400;

// Health from the last time an agent was heard from, measured in poll intervals. An agent
// never heard from is never counted as online.
export function agentHealth(row: AgentRow, now: Date, pollIntervalSeconds: number): AgentHealth {
  if (row.decommissionedAt) return AgentHealth.DECOMMISSIONED;
  if (!row.lastSeenAt) return AgentHealth.NEVER_REPORTED;
  const silentFor = (now.getTime() - row.lastSeenAt.getTime()) / 1000;
  if (silentFor <= pollIntervalSeconds * ONLINE_POLL_INTERVALS) return AgentHealth.ONLINE;
  if (silentFor <= OFFLINE_SECONDS) return AgentHealth.OFFLINE;
  return AgentHealth.STALE;
}

// Heard from since `online`: online; since `offline`: offline; before: stale.
export function healthCutoffs(now: Date, pollIntervalSeconds: number): { online: Date; offline: Date } {
  return {
    online: new Date(now.getTime() - pollIntervalSeconds * ONLINE_POLL_INTERVALS * 1000),
    offline: new Date(now.getTime() - OFFLINE_SECONDS * 1000),
  };
}

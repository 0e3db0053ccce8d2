import { create, toBinary } from "@bufbuild/protobuf";
import { type AgentConfig, AgentConfigSchema } from "@redflag/gen/common_pb";
import { createHash } from "node:crypto";
import type { Config } from "../config.ts";

// Package sources the agent knows, then the host metrics; each is a subsystem the operator can tune.
export const SUBSYSTEMS = [
  "apt", "dnf", "zypper", "pacman", "snap", "flatpak", "brew", "winget", "windows_update", "docker",
  "system", "storage",
] as const;

const METRIC_INTERVALS: Partial<Record<string, number>> = { system: 15 * 60, storage: 3600 };

// The effective config for agents. Its revision is derived from its content, so any change
// (here or, later, per-agent overrides) is delivered without bookkeeping.
export function buildAgentConfig(config: Config): AgentConfig {
  const body = create(AgentConfigSchema, {
    pollIntervalSeconds: config.pollIntervalSeconds,
    pollJitterPercent: config.pollJitterPercent,
    commandTimeoutSeconds: config.commandTimeoutSeconds,
    subsystems: SUBSYSTEMS.map((name) => ({
      name,
      enabled: true,
      // Every source is scanned on its own schedule; metrics more often than packages.
      autoRun: true,
      intervalSeconds: METRIC_INTERVALS[name] ?? 6 * 3600,
      timeoutSeconds: 15 * 60,
      circuitBreaker: { failureThreshold: 3, windowSeconds: 3600, cooldownSeconds: 30 * 60 },
    })),
  });
  const digest = createHash("sha256").update(toBinary(AgentConfigSchema, body)).digest();
  // 53 bits keeps the revision exact in JSON clients too.
  body.revision = digest.readBigUInt64BE(0) & 0x1f_ffff_ffff_ffffn;
  return body;
}

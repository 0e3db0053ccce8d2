import { fromBinary } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { type AgentConfig, AgentConfigSchema, type SignedAgentConfig } from "@redflag/gen/common_pb";
import { AGENT_CONFIG_TYPE } from "@redflag/common/signing/envelope";
import { printable, verifyEnvelope, type PinnedKeys } from "./envelope.ts";
import { ISSUE_TIME_SKEW_MS } from "./verify.ts";

// `unchanged`: the very config applied now, sent again (harmless; nothing to apply).
export type ConfigCheck = { ok: true; config: AgentConfig; unchanged: boolean } | { ok: false; reason: string };

export interface ConfigContext {
  // The agent the config must name.
  agentId: string;
  // The config applied now: a new one must have been issued after it. Undefined when nothing
  // before counts (an operator's explicit `register`, or no config yet).
  current: AgentConfig | undefined;
  now: Date;
}

// A delivered config (holds, schedules, timeouts) is checked like a command before any of it is
// used: a pinned key and its signature over the exact bytes received, and only then decoding;
// then it must name this agent, must not claim to come from the future (beyond the clock skew a
// command may have), and must have been issued after the config applied now, so a captured
// older config cannot be replayed. The issue time is when the control plane read the holds the
// config was built from, so a replica with a stale view, or a restarted control plane with the
// same content, never makes an agent go back or flap.
export function openSignedConfig(signed: SignedAgentConfig, pins: PinnedKeys, ctx: ConfigContext): ConfigCheck {
  const verification = verifyEnvelope(pins, signed.keyId, AGENT_CONFIG_TYPE, signed.config, signed.signature);
  if (!verification.ok) return verification;
  let config: AgentConfig;
  try {
    config = fromBinary(AgentConfigSchema, signed.config);
  } catch {
    return { ok: false, reason: "signed bytes are not a redflag.v1.AgentConfig" };
  }
  if (config.agentId !== ctx.agentId) return { ok: false, reason: `config is for agent ${printable(config.agentId)}, not this one` };
  const issueTime = config.issueTime;
  const issued = issueTime && issueTime.nanos >= 0 && issueTime.nanos < 1e9 ? timestampDate(issueTime) : undefined;
  if (!issueTime || !issued || Number.isNaN(issued.getTime())) return { ok: false, reason: "config has no valid issue time" };
  if (issued.getTime() > ctx.now.getTime() + ISSUE_TIME_SKEW_MS) {
    return { ok: false, reason: `config issued in the future at ${issued.toISOString()}; check this host's clock` };
  }
  const applied = ctx.current?.issueTime;
  if (applied && nanos(issueTime) === nanos(applied) && config.revision === ctx.current!.revision) {
    return { ok: true, config: ctx.current!, unchanged: true };
  }
  // Compared to the nanosecond: two reads on one control plane are microseconds apart at least.
  if (applied && nanos(issueTime) <= nanos(applied)) {
    return {
      ok: false,
      reason: `config revision ${config.revision} issued at ${issued.toISOString()} is not newer than the one applied (revision ${ctx.current!.revision}, issued at ${iso(applied)})`,
    };
  }
  return { ok: true, config, unchanged: false };
}

// When the control plane issued a config; undefined for one saved before configs were signed.
export function configIssueTime(config: AgentConfig | undefined): Date | undefined {
  return config?.issueTime ? timestampDate(config.issueTime) : undefined;
}

const nanos = (t: Timestamp): bigint => t.seconds * 1_000_000_000n + BigInt(t.nanos);

function iso(t: Timestamp): string {
  const date = timestampDate(t);
  return Number.isNaN(date.getTime()) ? `${t.seconds}s` : date.toISOString();
}

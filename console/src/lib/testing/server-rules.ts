import { Code, ConnectError } from "@connectrpc/connect";
import { CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import type { UpdateSelection } from "@redflag/gen/update_service_pb";
import { HOLD_NAME } from "@redflag/common/holds";
import { LABEL, LABEL_RULE, normaliseTags } from "@redflag/common/labels";

// The control plane's refusals that the component tests' in-memory servers imitate: the same
// codes and messages as control-plane/src/services, written once here so that a change there has
// one place to follow in the console's tests. The console itself never imports this file.

export const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

// "agent <id> does not exist", "command <id> does not exist", ...
export const notFound = (kind: string, id: string) => new ConnectError(`${kind} ${id} does not exist`, Code.NotFound);

// fleet-service.ts: commands are refused for a decommissioned agent.
export const agentDecommissioned = (agentId: string) => new ConnectError(`agent ${agentId} is decommissioned`, Code.FailedPrecondition);

// fleet-service.ts (SetAgentLabels): tags are trimmed, lower-cased and de-duplicated, then each
// must be a label.
export function checkTags(tags: readonly string[]): string[] {
  const clean = normaliseTags(tags);
  for (const tag of clean) if (!LABEL.test(tag)) throw invalid(`tag "${tag.slice(0, 64)}" must be ${LABEL_RULE}`);
  return clean;
}

// command-service.ts names a state as the database spells it, "_" read as a space ("timed out").
const stateWords = (state: CommandState) => (CommandState[state] ?? "unspecified").toLowerCase().replace("_", " ");

export function checkCancellable(c: CommandInfo): void {
  if (c.state !== CommandState.PENDING) throw new ConnectError(`command ${c.id} is ${stateWords(c.state)}; only a pending command can be cancelled`, Code.FailedPrecondition);
}

const RETRYABLE = [CommandState.FAILED, CommandState.TIMED_OUT, CommandState.REJECTED, CommandState.CANCELLED];
export function checkRetryable(c: CommandInfo): void {
  if (!RETRYABLE.includes(c.state)) {
    throw new ConnectError(`command ${c.id} is ${stateWords(c.state)}; only a failed, timed-out, rejected or cancelled command can be retried`, Code.FailedPrecondition);
  }
}

// update-service.ts: a selection that changes updates must name something, or say `all`.
export function checkSelection(sel: UpdateSelection | undefined): asserts sel is UpdateSelection {
  const named = sel && (sel.keys.length || sel.agentIds.length || sel.severities.length || sel.securityOnly || sel.packageName || sel.source || sel.group || sel.tag);
  if (!named && !sel?.all) throw invalid("the selection is empty: name keys, agents, severities, a package or a source (or set all to mean every update)");
}

// domain/policies.ts: each pattern list of a policy holds at most 50 package-name patterns.
export function checkPolicyPatterns(field: string, values: readonly string[]): void {
  if (values.length > 50) throw invalid(`${field} has ${values.length} entries; at most 50 are allowed`);
  values.forEach((v, i) => {
    if (!HOLD_NAME.test(v)) {
      throw invalid(`${field}[${i}] "${v.slice(0, 64)}${v.length > 64 ? "…" : ""}" is not a package name pattern (a package name in which "*" stands for any run of characters, at most 255 characters)`);
    }
  });
}

// maintenance-service.ts and domain/recurrence.ts: a window's time zone must be one the server
// knows, and its targets must name some agents.
export function checkWindowSpec(spec: { timeZone: string; targets?: { allAgents: boolean; groups: string[]; tags: string[]; agentIds: string[] } | undefined }): void {
  if (spec.timeZone !== "UTC" && !Intl.supportedValuesOf("timeZone").includes(spec.timeZone)) {
    throw invalid(`time_zone "${spec.timeZone.slice(0, 64)}" is not an IANA time zone this server knows (for example Europe/Berlin, America/New_York or UTC)`);
  }
  const t = spec.targets;
  if (!t?.allAgents && !t?.groups.length && !t?.tags.length && !t?.agentIds.length) {
    throw invalid("window.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
}

// rollout-service.ts and domain/rollouts.ts: what a rollout's state allows, said with its name.
export const rolloutNameTaken = (name: string) => new ConnectError(`a rollout named "${name}" already exists; pick another name`, Code.AlreadyExists);
export const rolloutStateRefused = (name: string, state: string, allowed: string, verb: string) =>
  new ConnectError(`rollout "${name}" is ${state}; only a ${allowed} rollout can be ${verb}`, Code.FailedPrecondition);

// A rollout's definition, as domain/rollouts.ts refuses it before placing any agent.
export function checkRolloutSpec(spec: {
  name: string;
  targets?: { allAgents: boolean; groups: string[]; tags: string[]; agentIds: string[] } | undefined;
  updates: { case: string | undefined };
  rings: { name: string; size: { case: string | undefined; value?: unknown }; successThresholdPercent: number; soak?: { seconds: bigint } | undefined }[];
}): void {
  if (spec.name.length < 1 || spec.name.length > 64) throw invalid("spec.name must be 1 to 64 characters");
  const t = spec.targets;
  if (!t?.allAgents && !t?.groups.length && !t?.tags.length && !t?.agentIds.length) {
    throw invalid("spec.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
  if (!spec.updates.case) throw invalid("spec.updates is missing: give update_keys or all_approved");
  if (spec.rings.length < 1 || spec.rings.length > 10) throw invalid(`spec.rings has ${spec.rings.length} rings; a rollout has 1 to 10`);
  const names = new Set<string>();
  spec.rings.forEach((r, i) => {
    const at = `spec.rings[${i}]`;
    if (r.name.length < 1 || r.name.length > 64) throw invalid(`${at}.name must be 1 to 64 characters`);
    if (names.has(r.name)) throw invalid(`${at}.name "${r.name}" is used by an earlier ring; ring names are unique`);
    names.add(r.name);
    if (!r.size.case) throw invalid(`${at}.size is missing: give agents, percent or rest`);
    if (r.size.case === "percent" && ((r.size.value as number) < 1 || (r.size.value as number) > 100)) throw invalid(`${at}.percent must be 1 to 100`);
    if (r.size.case === "rest" && i !== spec.rings.length - 1) throw invalid(`${at} is "rest" but is not the last ring; only the last ring may be rest`);
    if (r.successThresholdPercent > 100) throw invalid(`${at}.success_threshold_percent must be 1 to 100 (0 means 100)`);
    if ((r.soak?.seconds ?? 0n) > 7n * 86_400n || (r.soak?.seconds ?? 0n) < 0n) throw invalid(`${at}.soak must be 0 to 7 days`);
  });
}

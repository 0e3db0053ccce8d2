import { Code, ConnectError } from "@connectrpc/connect";
import { CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import type { UpdateSelection } from "@redflag/gen/update_service_pb";
import { HOLD_NAME } from "@redflag/common/holds";
import { HOOK_NAME, HOOK_NAME_RULE } from "@redflag/common/reboot-hooks";
import { LABEL, LABEL_RULE, normaliseTags } from "@redflag/common/labels";
import { PACKAGE_NAME, PACKAGE_VERSION, sourceNamePattern } from "@redflag/common/package-name";
import type { PackageRef } from "@redflag/gen/command_pb";
import { plural } from "@redflag/common/plural";

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

// domain/windows.ts: names are unique.
export const windowNameTaken = (name: string) => new ConnectError(`a window named "${name}" already exists; pick another name or update that one`, Code.AlreadyExists);

// maintenance-service.ts (rebootPolicyInput): a reboot policy needs a name and targets, its hooks
// are names of executables in the agent's hooks directory, its limits are bounded.
export function checkRebootPolicySpec(spec: {
  name: string;
  preHook: string;
  postHook: string;
  hookTimeout?: { seconds: bigint; nanos: number } | undefined;
  returnTimeout?: { seconds: bigint; nanos: number } | undefined;
  targets?: { allAgents: boolean; groups: string[]; tags: string[]; agentIds: string[] } | undefined;
}): void {
  if (spec.name.trim() === "") throw invalid("policy.name is required");
  if (spec.name.trim().length > 64) throw invalid("policy.name is longer than 64 characters");
  const t = spec.targets;
  if (!t?.allAgents && !t?.groups.length && !t?.tags.length && !t?.agentIds.length) {
    throw invalid("policy.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
  for (const [field, name] of [["pre_hook", spec.preHook], ["post_hook", spec.postHook]] as const) {
    if (name !== "" && !HOOK_NAME.test(name)) throw invalid(`policy.${field} "${name.slice(0, 64)}" is not a hook name (the name of an executable in the agent's hooks directory): ${HOOK_NAME_RULE}`);
  }
  const bounded = (field: string, d: { seconds: bigint } | undefined, min: bigint, max: bigint, words: string) => {
    if (d && (d.seconds < min || d.seconds > max)) throw invalid(`policy.${field} must be from ${words}`);
  };
  bounded("hook_timeout", spec.hookTimeout, 1n, 1800n, "1 second to 30 minutes");
  bounded("return_timeout", spec.returnTimeout, 60n, 86_400n, "1 minute to 24 hours");
}

// domain/reboot-policies.ts: names are unique.
export const rebootPolicyNameTaken = (name: string) => new ConnectError(`a reboot policy named "${name}" already exists; pick another name or update that one`, Code.AlreadyExists);

// domain/policies.ts: names are unique, and a rule must choose something.
export const policyNameTaken = (name: string) => new ConnectError(`a policy named "${name}" already exists`, Code.AlreadyExists);
export function checkPolicyCriteria(c: { severities: unknown[]; securityOnly: boolean; sources: string[]; namePatterns: string[]; groups: string[]; tags: string[] } | undefined): void {
  const criteria = (c?.severities.length ?? 0) + (c?.sources.length ?? 0) + (c?.namePatterns.length ?? 0) + (c?.groups.length ?? 0) + (c?.tags.length ?? 0);
  if (criteria === 0 && !c?.securityOnly) {
    throw invalid(`definition.criteria is empty: a rule needs at least one of severities, security_only, sources, name_patterns, groups or tags (name pattern "*" approves every update)`);
  }
}

// domain/actions.ts: what list_package_versions and rollback_update may name (the messages of
// CreateCommand's refusals; the source hints are left out).
const quoted = (value: string) => JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
function checkPackageRef(field: string, ref: PackageRef | undefined): void {
  if (!ref) throw invalid(`${field} is required`);
  if (!/^[a-z][a-z0-9_]{0,31}$/.test(ref.source)) throw invalid(`${field}.source ${quoted(ref.source)} is not a package source name (apt, dnf, docker …)`);
  if (!PACKAGE_NAME.test(ref.name) || sourceNamePattern(ref.source)?.test(ref.name) === false) throw invalid(`${field}.name ${quoted(ref.name)} is not a valid package name`);
}
export function checkVersionListing(packages: readonly PackageRef[]): void {
  if (packages.length === 0) throw invalid("list_package_versions.packages must name at least one package");
  if (packages.length > 50) throw invalid(`list_package_versions.packages names ${packages.length} packages; at most 50 per command`);
  packages.forEach((p, i) => checkPackageRef(`list_package_versions.packages[${i}]`, p));
}
export function checkRollback(pkg: PackageRef | undefined, targetVersion: string): void {
  checkPackageRef("rollback_update.package", pkg);
  if (!targetVersion) throw invalid("rollback_update.target_version is required");
  if (!PACKAGE_VERSION.test(targetVersion)) throw invalid(`rollback_update.target_version ${quoted(targetVersion)} is not a valid version`);
}

// domain/rollouts.ts: names and states of rollouts.
export const rolloutNameTaken = (name: string) => new ConnectError(`a rollout named "${name}" already exists; pick another name`, Code.AlreadyExists);
// A change the rollout's state does not allow; a halted rollout says how to go on.
export function rolloutStateRefused(r: { name: string; state: string; haltedRing?: string }, what: "pause" | "resume" | "abort"): ConnectError {
  const hint = r.state === "halted" ? ` (resume it to override the halt and go on past ring "${r.haltedRing}", or abort it)` : "";
  return new ConnectError(`rollout "${r.name}" is ${r.state}; nothing to ${what}${hint}`, Code.FailedPrecondition);
}

// rollout-service.ts (rolloutInput): a definition checked field by field on the wire, before
// any agent is placed (the first refusal wins, in this order).
export function checkRolloutSpec(spec: {
  name: string;
  targets?: { allAgents: boolean; groups: string[]; tags: string[]; agentIds: string[] } | undefined;
  updates: { case: "updateKeys"; value: { keys: unknown[] } } | { case: "allApproved"; value: boolean } | { case: undefined; value?: undefined };
  rings: { name: string; size: { case: "agents"; value: { agentIds: string[] } } | { case: "percent"; value: number } | { case: "rest"; value: boolean } | { case: undefined; value?: undefined }; successThresholdPercent: number; soak?: { seconds: bigint } | undefined }[];
}): void {
  const name = spec.name.trim();
  if (!name) throw invalid("spec.name is required");
  if (name.length > 64) throw invalid("spec.name is longer than 64 characters");
  const t = spec.targets;
  if (!t?.allAgents && !t?.groups.length && !t?.tags.length && !t?.agentIds.length) {
    throw invalid("spec.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
  }
  if (spec.updates.case === "updateKeys" && spec.updates.value.keys.length === 0) throw invalid("spec.update_keys is empty: name at least one update, or use all_approved");
  if (spec.updates.case !== "updateKeys" && !(spec.updates.case === "allApproved" && spec.updates.value)) {
    throw invalid("spec.updates is required: name the updates (update_keys) or set all_approved");
  }
  if (spec.rings.length === 0) throw invalid("spec.rings is empty: give 1 to 10 rings, the last one `rest`");
  if (spec.rings.length > 10) throw invalid(`spec.rings has ${spec.rings.length} rings; at most 10 are allowed`);
  const names = new Set<string>();
  spec.rings.forEach((r, i) => {
    const field = `spec.rings[${i}]`;
    const ringName = r.name.trim();
    if (!ringName) throw invalid(`${field}.name is required`);
    if (ringName.length > 64) throw invalid(`${field}.name is longer than 64 characters`);
    if (names.has(ringName)) throw invalid(`${field}.name "${ringName}" is used by an earlier ring; ring names are unique within a rollout`);
    names.add(ringName);
    if (r.successThresholdPercent > 100) throw invalid(`${field}.success_threshold_percent must be from 1 to 100 (0 means 100)`);
    const soak = r.soak?.seconds ?? 0n;
    if (soak < 0n || soak > 7n * 86_400n) throw invalid(`${field}.soak must be from 0 to 7 days`);
    if (r.size.case === "agents" && r.size.value.agentIds.length === 0) throw invalid(`${field}.agents names no agent`);
    if (r.size.case === "percent" && (r.size.value < 1 || r.size.value > 100)) throw invalid(`${field}.percent must be from 1 to 100`);
    if (r.size.case === "rest" && i !== spec.rings.length - 1) throw invalid(`${field} is "rest" but is not the last ring; only the last ring may take the rest`);
    if (!r.size.case) throw invalid(`${field} needs a size: agents (named canaries), percent, or rest`);
  });
}

// domain/rollouts.ts (placeAgents): where the agents go, refused when a named agent is not a
// target, agents would be left out, or a ring would be empty. `left` are hostnames, sorted.
export const ringNamesStranger = (ring: string, agentId: string) => invalid(`ring "${ring}" names agent ${agentId}, which is not among the rollout's targets (or is decommissioned)`);
export function agentsLeftOut(left: string[], lastRing: string): ConnectError {
  const shown = `${left.slice(0, 5).join(", ")}${left.length > 5 ? ` and ${left.length - 5} more` : ""}`;
  return invalid(`${plural(left.length, "target agent")} would be left out (${shown}): the last ring ("${lastRing}") must be "rest", or the rings must cover every target agent`);
}
export const emptyRing = (ring: string, rest: boolean) =>
  invalid(`ring "${ring}" would have no agent: ${rest ? "the earlier rings take every target agent" : "no target agent is left for it"}; remove it or widen the targets`);

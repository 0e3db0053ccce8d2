import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, CommandSchema, type PackageRef } from "@redflag/gen/command_pb";
import { lockAgentQueue, lockPendingCommands, replacePendingAction, type CommandRow, type Placed } from "../store/commands.ts";
import type { CommandType, Tx } from "../store/types.ts";

// A second request of a kind an agent already has pending (undelivered) is merged into the
// pending command or refused, so nothing is queued twice (CreateCommand's comment in
// proto/redflag/v1/command_service.proto and docs/commands.md say which, per kind). A command
// already delivered does not count; the new one is queued after it.

const MAX_PACKAGES = 1000;

// Kinds refused while one is pending: doing them twice is never what was meant (two reboots,
// two upgrades), and two different ones cannot be one command.
const REFUSED: Partial<Record<CommandType, string>> = {
  reboot: "a reboot",
  update_agent: "an agent upgrade",
};

type Action = Command["action"];

// What a merge makes of the pending command: its new action, or why the two cannot be one.
type Merge = { action: Action } | { refused: string };

const refKey = (p: PackageRef) => `${p.source}\u0000${p.name}\u0000${p.architecture}`;

// The packages of both, each once; refused when one package is asked at two versions.
function mergePackages(pending: readonly PackageRef[], requested: readonly PackageRef[]): PackageRef[] | { refused: string } {
  const byKey = new Map(pending.map((p) => [refKey(p), p]));
  for (const p of requested) {
    const seen = byKey.get(refKey(p));
    if (seen && seen.version !== p.version) {
      return { refused: `it asks for ${p.name} (${p.source}) at ${p.version || "the newest version"} and the pending install at ${seen.version || "the newest version"}` };
    }
    if (!seen) byKey.set(refKey(p), p);
  }
  if (byKey.size > MAX_PACKAGES) return { refused: `together they name ${byKey.size} packages; at most ${MAX_PACKAGES} per command` };
  return [...byKey.values()];
}

const union = (a: readonly string[], b: readonly string[]) => [...new Set([...a, ...b])];

function merge(pending: Action, requested: Action): Merge {
  if (pending.case === "scanUpdates" && requested.case === "scanUpdates") {
    // No subsystems means every one.
    const a = pending.value.subsystems;
    const b = requested.value.subsystems;
    const subsystems = a.length === 0 || b.length === 0 ? [] : union(a, b);
    return { action: { case: "scanUpdates", value: { ...pending.value, subsystems } } };
  }
  if (pending.case === "installUpdates" && requested.case === "installUpdates") {
    const a = pending.value;
    const b = requested.value;
    if ((a.packages.length > 0) !== (b.packages.length > 0)) {
      return { refused: a.packages.length > 0 ? "it names sources and the pending install names packages" : "it names packages and the pending install names sources" };
    }
    const packages = mergePackages(a.packages, b.packages);
    if ("refused" in packages) return packages;
    // The merged install goes out under the window open now: the request's bound, which the
    // queue computed a moment ago (the pending one's may have passed while it waited).
    return { action: { case: "installUpdates", value: { ...a, packages, sources: union(a.sources, b.sources), notAfter: b.notAfter } } };
  }
  // The newest request says how long and how often.
  if (pending.case === "enableHeartbeat" && requested.case === "enableHeartbeat") return { action: requested };
  // disable_heartbeat: nothing to add.
  return { action: pending };
}

const sameAction = (a: Action, b: Action) =>
  Buffer.from(toBinary(CommandSchema, create(CommandSchema, { action: a }))).equals(Buffer.from(toBinary(CommandSchema, create(CommandSchema, { action: b }))));

function pendingRefusal(agentId: string, pending: CommandRow, what: string, why?: string): ConnectError {
  const since = pending.createdAt.toISOString();
  return new ConnectError(
    why
      ? `agent ${agentId} already has a pending ${what} (command ${pending.id}, queued ${since}) that this request cannot be merged into: ${why}; cancel it first (redflag commands cancel ${pending.id}) or wait until it is delivered`
      : `agent ${agentId} already has ${what} pending (command ${pending.id}, queued ${since}); cancel it first (redflag commands cancel ${pending.id}) or wait until it is delivered`,
    Code.FailedPrecondition,
  );
}

const samePackage = (a: PackageRef | undefined, b: PackageRef | undefined) => !!a && !!b && refKey(a) === refKey(b);
const packageSet = (refs: readonly PackageRef[]) => refs.map((p) => `${refKey(p)}\u0000${p.version}`).sort().join("\u0001");

// Inside the queue's transaction, before a new command is stored: takes the agent's queue lock
// (held until commit, so two creates at once see each other), then merges the request into a
// pending command of its kind (merged), refuses it (FailedPrecondition), or finds none to
// merge with (undefined: store it as a new command). collect_specs is not checked: it reads
// the host and changes nothing, and is what load tests and benchmarks queue in bulk.
export async function mergeIntoPending(tx: Tx, agentId: string, type: CommandType, action: Action, timeoutSeconds: number): Promise<Placed | undefined> {
  if (type === "collect_specs") return undefined;
  await lockAgentQueue(tx, agentId);
  const pending = await lockPendingCommands(tx, agentId, type);
  if (pending.length === 0) return undefined;
  const actions = pending.map((row) => ({ row, command: fromBinary(CommandSchema, row.action) }));
  // The same upgrade asked again (a fleet upgrade, then the hint a refusal prints): it is the
  // pending one. An upgrade to another version is refused below.
  if (action.case === "updateAgent") {
    const same = actions.find((a) => a.command.action.case === "updateAgent" && a.command.action.value.version === action.value.version);
    if (same) return { row: same.row, merged: true };
  }
  const refusedKind = REFUSED[type];
  if (refusedKind) throw pendingRefusal(agentId, pending[0]!, refusedKind);
  // One per package, and one per dry run confirmed; different ones queue side by side.
  if (action.case === "rollbackUpdate") {
    const same = actions.find((a) => a.command.action.case === "rollbackUpdate" && samePackage(a.command.action.value.package, action.value.package));
    if (same) throw pendingRefusal(agentId, same.row, `a rollback of ${action.value.package!.name}`);
    return undefined;
  }
  if (action.case === "confirmDependencies") {
    const id = action.value.dryRunCommandId;
    const same = actions.find((a) => a.command.action.case === "confirmDependencies" && a.command.action.value.dryRunCommandId === id);
    if (same) throw pendingRefusal(agentId, same.row, `a confirmation of dry run ${id}`);
    return undefined;
  }
  // A dry run answers for its own set of packages: the same set is the same question.
  if (action.case === "dryRunUpdate") {
    const wanted = packageSet(action.value.packages);
    const same = actions.find((a) => a.command.action.case === "dryRunUpdate" && packageSet(a.command.action.value.packages) === wanted);
    return same ? { row: same.row, merged: true } : undefined;
  }
  // So does a version listing (it only reads): asking again while it waits follows the same one.
  if (action.case === "listPackageVersions") {
    const wanted = packageSet(action.value.packages);
    const same = actions.find((a) => a.command.action.case === "listPackageVersions" && packageSet(a.command.action.value.packages) === wanted);
    return same ? { row: same.row, merged: true } : undefined;
  }
  const { row, command: before } = actions[0]!;
  const merged = merge(before.action, action);
  if ("refused" in merged) throw pendingRefusal(agentId, row, "install", merged.refused);
  // 0 is the agent's default, which may be longer than either.
  const timeout = row.timeoutSeconds === 0 || timeoutSeconds === 0 ? 0 : Math.max(row.timeoutSeconds, timeoutSeconds);
  if (sameAction(before.action, merged.action) && timeout === row.timeoutSeconds) return { row, merged: true };
  const bytes = toBinary(CommandSchema, create(CommandSchema, { ...before, action: merged.action, timeoutSeconds: timeout }));
  return { row: await replacePendingAction(tx, row.id, bytes, timeout), merged: true };
}

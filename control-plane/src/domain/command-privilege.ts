import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { plural } from "@redflag/common/plural";
import { type Command, CommandResultSchema, type PackageChange, type PackageRef } from "@redflag/gen/command_pb";
import type { RoleName } from "@redflag/common/roles";
import { commandWithResult, everReported, reportedUpdates } from "../store/command-privilege.ts";
import type { Prisma } from "../store/types.ts";
import { isUuid } from "../ids.ts";

// Who may make an agent run what. Every command runs as root (SYSTEM) on the agent, so the
// question for each kind is whether it lets its sender run code of their choosing there:
//
// - update_agent replaces the agent itself: admins only, and only with a release from the
//   control plane's own registry (the caller names a version, never a URL or a manifest).
// - install_updates, dry_run_update, confirm_dependencies and rollback_update install packages
//   from the host's own configured sources. An operator may name only what the host reported:
//   its pending updates (install, dry run), a dry run it ran (confirm: exactly that set, so new
//   packages come in only as dependencies the host's resolver chose), a package it reported
//   at some time (rollback). "Everything pending" of a source is what the host itself lists.
//   list_package_versions asks which versions a rollback could go to: it installs nothing,
//   but follows rollback's rule (an operator asks about packages the host reported).
//   Admins may name other packages of the host's sources; the agent still refuses any that are
//   not installed (except dependencies a confirmed update pulls in), whoever asks.
// - scan_updates, collect_specs, enable/disable_heartbeat, reboot run no caller-chosen code
//   (reboot costs availability, which operators are trusted with).

const denied = (message: string) => new ConnectError(message, Code.PermissionDenied);
const spec = (ref: Pick<PackageRef, "source" | "name">) => `${ref.source}:${ref.name}`;
const OPERATORS_RULE = "operators install and roll back updates of what a host reported; only an admin may name anything else";

// The roles that may send this kind of command at all; checked before anything else.
export function authorizeKind(role: RoleName | undefined, action: Command["action"]): void {
  if (action.case === "updateAgent" && role !== "admin") {
    throw denied(
      `update_agent needs the admin role${role ? ` (you act as ${role})` : ""}: an agent upgrade replaces the agent, which runs as root, so only admins queue one, and only from the control plane's release registry`,
    );
  }
}

// Checks what a non-admin's command names against what the host reported. Admins pass.
export async function authorizeContent(db: Prisma, role: RoleName | undefined, agentId: string, action: Command["action"]): Promise<void> {
  if (role === "admin") return;
  switch (action.case) {
    case "installUpdates":
      return requireReported(db, agentId, "install_updates.packages", action.value.packages);
    case "dryRunUpdate":
      return requireReported(db, agentId, "dry_run_update.packages", action.value.packages);
    case "confirmDependencies":
      return requireOwnDryRun(db, agentId, action.value.dryRunCommandId, action.value.changes);
    case "rollbackUpdate": {
      const pkg = action.value.package!;
      if (!(await everReported(db, agentId, pkg.source, pkg.name))) {
        throw denied(`rollback_update.package ${spec(pkg)} is a package this agent never reported; ${OPERATORS_RULE}`);
      }
      return;
    }
    case "listPackageVersions": {
      for (const [i, pkg] of action.value.packages.entries()) {
        if (!(await everReported(db, agentId, pkg.source, pkg.name))) {
          throw denied(`list_package_versions.packages[${i}] ${spec(pkg)} is a package this agent never reported; ${OPERATORS_RULE}`);
        }
      }
      return;
    }
    default:
      return;
  }
}

async function requireReported(db: Prisma, agentId: string, field: string, refs: readonly PackageRef[]): Promise<void> {
  if (refs.length === 0) return;
  const reported = await reportedUpdates(db, agentId, refs.map((r) => r.name));
  refs.forEach((ref, i) => {
    const arches = reported.get(`${ref.source}\0${ref.name}`);
    if (!arches || (ref.architecture && !arches.has(ref.architecture))) {
      const what = ref.architecture ? `${spec(ref)} (${ref.architecture})` : spec(ref);
      throw denied(`${field}[${i}] ${what} is not a pending update this agent reported; ${OPERATORS_RULE}`);
    }
  });
}

const changeKey = (c: Pick<PackageChange, "kind" | "source" | "name" | "architecture" | "fromVersion" | "toVersion">) =>
  [c.kind, c.source, c.name, c.architecture, c.fromVersion, c.toVersion].join("\0");

// A confirmation must be the exact set a successful dry run of this agent reported.
async function requireOwnDryRun(db: Prisma, agentId: string, dryRunId: string, changes: readonly PackageChange[]): Promise<void> {
  const field = "confirm_dependencies.dry_run_command_id";
  if (!isUuid(dryRunId)) throw denied(`${field} must name the dry run being confirmed; ${OPERATORS_RULE}`);
  const dryRun = await commandWithResult(db, dryRunId);
  if (!dryRun || dryRun.agentId !== agentId || dryRun.type !== "dry_run_update") {
    throw denied(`${field} ${dryRunId} is not a dry run of this agent; ${OPERATORS_RULE}`);
  }
  if (dryRun.state !== "succeeded" || !dryRun.result) {
    throw new ConnectError(`dry run ${dryRunId} did not succeed; only the changes of a successful dry run can be confirmed`, Code.FailedPrecondition);
  }
  const result = fromBinary(CommandResultSchema, dryRun.result.result);
  const reported = result.detail.case === "dryRunUpdate" ? result.detail.value.changes : [];
  const want = reported.map(changeKey).sort();
  const got = changes.map(changeKey).sort();
  if (want.length !== got.length || want.some((k, i) => k !== got[i])) {
    throw denied(`confirm_dependencies.changes are not the ${plural(reported.length, "change")} dry run ${dryRunId} reported; confirm exactly what it found (${OPERATORS_RULE})`);
  }
}

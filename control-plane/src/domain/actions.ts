import { HOOK_NAME, HOOK_NAME_RULE, MAX_HOOK_TIMEOUT_SECONDS } from "@redflag/common/reboot-hooks";
import { create } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { type Command, ListPackageVersionsSchema, PackageChangeKind, type PackageRef, PackageRefSchema, type UpdateAgent, UpdateAgentSchema } from "@redflag/gen/command_pb";
import { isReleaseVersion } from "./releases.ts";
import { invalid, text } from "./input.ts";
import { PACKAGE_ARCH, PACKAGE_NAME, PACKAGE_VERSION, PLAIN_NAME_SOURCES, sourceNamePattern } from "@redflag/common/package-name";

// What an operator may put in a command, checked before it is stored so a mistake is a clear
// InvalidArgument now rather than a failed command later. The agent checks again: it trusts
// the signature, not the input.

const SOURCE = /^[a-z][a-z0-9_]{0,31}$/;
// Why a name broke its source's stricter rule (sourceNamePattern in common/src/package-name.ts).
const SOURCE_HINTS: Record<string, string> = {
  ...Object.fromEntries(PLAIN_NAME_SOURCES.map((s) => [s, `${s} package names are plain names: letters, digits and . _ + - (no paths, URLs, groups or repositories)`])),
  brew: 'Homebrew names are a formula or cask, optionally "user/tap/" before it',
};
const MAX_PACKAGES = 1000;
// list_package_versions answers up to 50 versions per package; 50 packages keep one answer small.
export const MAX_VERSION_PACKAGES = 50;

const quoted = (value: string) => JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);

function packageRef(field: string, ref: PackageRef | undefined): void {
  if (!ref) throw invalid(`${field} is required`);
  if (!SOURCE.test(ref.source)) throw invalid(`${field}.source ${quoted(ref.source)} is not a package source name (apt, dnf, docker …)`);
  if (!PACKAGE_NAME.test(ref.name)) throw invalid(`${field}.name ${quoted(ref.name)} is not a valid package name`);
  if (sourceNamePattern(ref.source)?.test(ref.name) === false) {
    throw invalid(`${field}.name ${quoted(ref.name)} is not a valid package name: ${SOURCE_HINTS[ref.source]}`);
  }
  if (ref.version && !PACKAGE_VERSION.test(ref.version)) throw invalid(`${field}.version ${quoted(ref.version)} is not a valid version`);
  if (!PACKAGE_ARCH.test(ref.architecture)) throw invalid(`${field}.architecture ${quoted(ref.architecture)} is not a valid architecture`);
}

function packageList(field: string, refs: readonly PackageRef[], required: boolean): void {
  if (required && refs.length === 0) throw invalid(`${field} must name at least one package`);
  if (refs.length > MAX_PACKAGES) throw invalid(`${field} names ${refs.length} packages; at most ${MAX_PACKAGES} per command`);
  refs.forEach((ref, i) => packageRef(`${field}[${i}]`, ref));
}

// Checks the action and returns it ready for the privilege rules (domain/command-privilege.ts);
// update_agent comes back as its version only, filled in from the registry when queued.
export function prepareAction(action: Command["action"]): Command["action"] {
  switch (action.case) {
    case "scanUpdates": {
      const subs = action.value.subsystems;
      if (subs.length > 32) throw invalid("scan_updates.subsystems names more than 32 subsystems");
      subs.forEach((s, i) => {
        if (!SOURCE.test(s)) throw invalid(`scan_updates.subsystems[${i}] ${quoted(s)} is not a subsystem name (apt, docker, system …)`);
      });
      return action;
    }
    case "collectSpecs":
    case "disableHeartbeat":
      return action;
    case "installUpdates": {
      const { packages, sources } = action.value;
      if (packages.length === 0 && sources.length === 0) {
        throw invalid("install_updates needs packages, or sources to install everything pending from");
      }
      if (packages.length > 0 && sources.length > 0) throw invalid("install_updates takes packages or sources, not both");
      packageList("install_updates.packages", packages, false);
      sources.forEach((s, i) => {
        if (!SOURCE.test(s)) throw invalid(`install_updates.sources[${i}] ${quoted(s)} is not a package source name`);
      });
      return action;
    }
    case "dryRunUpdate":
      packageList("dry_run_update.packages", action.value.packages, true);
      return action;
    case "confirmDependencies": {
      const { changes } = action.value;
      if (changes.length === 0) throw invalid("confirm_dependencies.changes is empty; take them from a successful dry run");
      if (changes.length > MAX_PACKAGES) throw invalid(`confirm_dependencies.changes has more than ${MAX_PACKAGES} entries`);
      changes.forEach((c, i) => {
        const field = `confirm_dependencies.changes[${i}]`;
        if (!Object.values(PackageChangeKind).includes(c.kind) || c.kind === PackageChangeKind.UNSPECIFIED) {
          throw invalid(`${field}.kind must be upgrade, install, remove or downgrade`);
        }
        if (c.kind !== PackageChangeKind.REMOVE && !c.toVersion) throw invalid(`${field}.to_version is required (only a removal has none)`);
        packageRef(field, { ...c, version: c.toVersion, $typeName: "redflag.v1.PackageRef" });
        if (c.fromVersion && !PACKAGE_VERSION.test(c.fromVersion)) throw invalid(`${field}.from_version ${quoted(c.fromVersion)} is not a valid version`);
      });
      return action;
    }
    case "rollbackUpdate": {
      const { package: pkg, targetVersion } = action.value;
      packageRef("rollback_update.package", pkg);
      const version = targetVersion || pkg!.version;
      if (!version) throw invalid("rollback_update.target_version is required");
      if (!PACKAGE_VERSION.test(version)) throw invalid(`rollback_update.target_version ${quoted(version)} is not a valid version`);
      return action;
    }
    case "listPackageVersions": {
      const { packages } = action.value;
      if (packages.length === 0) throw invalid("list_package_versions.packages must name at least one package");
      if (packages.length > MAX_VERSION_PACKAGES) {
        throw invalid(`list_package_versions.packages names ${packages.length} packages; at most ${MAX_VERSION_PACKAGES} per command`);
      }
      packageList("list_package_versions.packages", packages, true);
      // The answer is every version there is: a version asked is dropped, not stored.
      const refs = packages.map((p) => create(PackageRefSchema, { source: p.source, name: p.name, architecture: p.architecture }));
      return { case: "listPackageVersions", value: create(ListPackageVersionsSchema, { packages: refs }) };
    }
    case "reboot":
      if (action.value.delaySeconds > 7 * 86_400) throw invalid("reboot.delay_seconds must be at most 604800 (7 days)");
      text("reboot.message", action.value.message, { max: 200 });
      for (const field of ["pre_hook", "post_hook"] as const) {
        const name = field === "pre_hook" ? action.value.preHook : action.value.postHook;
        if (name !== "" && !HOOK_NAME.test(name)) throw invalid(`reboot.${field} "${name.slice(0, 64)}" is not a hook name: ${HOOK_NAME_RULE}`);
      }
      if (action.value.hookTimeoutSeconds > MAX_HOOK_TIMEOUT_SECONDS) throw invalid(`reboot.hook_timeout_seconds must be at most ${MAX_HOOK_TIMEOUT_SECONDS} (30 minutes)`);
      return action;
    case "enableHeartbeat": {
      const { intervalSeconds, duration } = action.value;
      if (intervalSeconds > 300) throw invalid("enable_heartbeat.interval_seconds must be at most 300");
      if (duration && (durationMs(duration) < 0 || durationMs(duration) > 24 * 3_600_000)) {
        throw invalid("enable_heartbeat.duration must be from 0 to 24 hours");
      }
      return action;
    }
    case "updateAgent":
      return { case: "updateAgent", value: upgradeRequest(action.value) };
    case undefined:
      throw invalid("an action is required (for example scan_updates)");
  }
}

// An agent upgrade names a release version, nothing else: the control plane fills in the
// artifact, its download path and the signed manifest from its own registry. A caller's URL,
// manifest or signature is refused rather than ignored, so nobody believes they were used.
function upgradeRequest(value: UpdateAgent): UpdateAgent {
  if (value.downloadUrl) {
    throw invalid(`update_agent.download_url is set (${quoted(value.downloadUrl)}); agent upgrades come only from the control plane's release registry: name a published version (redflag releases list) and leave download_url empty`);
  }
  if (value.manifest.length > 0 || value.manifestSignature.length > 0 || value.keyId) {
    throw invalid("update_agent.manifest, manifest_signature and key_id are set; the control plane signs the manifest of the release it picks from its registry: name only the version");
  }
  if (value.version && !isReleaseVersion(value.version)) {
    throw invalid(`update_agent.version ${quoted(value.version)} is not a release version: semantic versioning like "0.2.0", or empty for the newest published release`);
  }
  return create(UpdateAgentSchema, { version: value.version });
}

import { fromBinary } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  type ArtifactManifest,
  ArtifactManifestSchema,
  type Command,
  PackageChangeKind,
  type PackageRef,
} from "@redflag/gen/command_pb";
import type { CommandSigner } from "../signing/signer.ts";
import { invalid, text } from "./validate.ts";

// What an operator may put in a command, checked before it is stored so a mistake is a clear
// InvalidArgument now rather than a failed command later. The agent checks again: it trusts
// the signature, not the input.

const SOURCE = /^[a-z][a-z0-9_]{0,31}$/;
// Package names of every source: Debian/RPM names, brew formulae and taps, snap/flatpak and
// winget IDs, Docker references. Never a leading "-" (an option to the tool) or shell syntax.
const NAME = /^[A-Za-z0-9_@][A-Za-z0-9_@.+:/=-]{0,254}$/;
const VERSION = /^[A-Za-z0-9_][A-Za-z0-9_.+~:-]{0,127}$/;
const ARCH = /^[A-Za-z0-9_-]{0,32}$/;
const RELEASE_VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
const PLATFORM = /^(any|[a-z0-9]+-[a-z0-9]+)$/;
const MAX_PACKAGES = 1000;
const MAX_ARTIFACT_BYTES = 512n * 1024n * 1024n;

const quoted = (value: string) => JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);

function packageRef(field: string, ref: PackageRef | undefined): void {
  if (!ref) throw invalid(`${field} is required`);
  if (!SOURCE.test(ref.source)) throw invalid(`${field}.source ${quoted(ref.source)} is not a package source name (apt, dnf, docker …)`);
  if (!NAME.test(ref.name)) throw invalid(`${field}.name ${quoted(ref.name)} is not a valid package name`);
  if (ref.version && !VERSION.test(ref.version)) throw invalid(`${field}.version ${quoted(ref.version)} is not a valid version`);
  if (!ARCH.test(ref.architecture)) throw invalid(`${field}.architecture ${quoted(ref.architecture)} is not a valid architecture`);
}

function packageList(field: string, refs: readonly PackageRef[], required: boolean): void {
  if (required && refs.length === 0) throw invalid(`${field} must name at least one package`);
  if (refs.length > MAX_PACKAGES) throw invalid(`${field} names ${refs.length} packages; at most ${MAX_PACKAGES} per command`);
  refs.forEach((ref, i) => packageRef(`${field}[${i}]`, ref));
}

// Checks the action and returns it ready to store; update_agent's manifest is signed here.
export function prepareAction(action: Command["action"], signer: CommandSigner): Command["action"] {
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
        if (c.fromVersion && !VERSION.test(c.fromVersion)) throw invalid(`${field}.from_version ${quoted(c.fromVersion)} is not a valid version`);
      });
      return action;
    }
    case "rollbackUpdate": {
      const { package: pkg, targetVersion } = action.value;
      packageRef("rollback_update.package", pkg);
      const version = targetVersion || pkg!.version;
      if (!version) throw invalid("rollback_update.target_version is required");
      if (!VERSION.test(version)) throw invalid(`rollback_update.target_version ${quoted(version)} is not a valid version`);
      return action;
    }
    case "reboot":
      if (action.value.delaySeconds > 7 * 86_400) throw invalid("reboot.delay_seconds must be at most 604800 (7 days)");
      text("reboot.message", action.value.message, { max: 200 });
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
      return { case: "updateAgent", value: { ...action.value, ...signedManifest(action.value, signer) } };
    case undefined:
      throw invalid("an action is required (for example scan_updates)");
  }
}

function signedManifest(
  value: Extract<Command["action"], { case: "updateAgent" }>["value"],
  signer: CommandSigner,
): { manifestSignature: Uint8Array; keyId: string } {
  if (!RELEASE_VERSION.test(value.version)) throw invalid(`update_agent.version ${quoted(value.version)} is not a release version`);
  let url: URL;
  try {
    url = new URL(value.downloadUrl);
  } catch {
    throw invalid(`update_agent.download_url ${quoted(value.downloadUrl)} is not an absolute URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw invalid("update_agent.download_url must be http(s)");
  let manifest: ArtifactManifest;
  try {
    manifest = fromBinary(ArtifactManifestSchema, value.manifest);
  } catch {
    throw invalid("update_agent.manifest is not a serialized redflag.v1.ArtifactManifest");
  }
  if (manifest.version !== value.version) {
    throw invalid(`update_agent.manifest is for version ${quoted(manifest.version)}, the command for ${quoted(value.version)}`);
  }
  if (!PLATFORM.test(manifest.platform)) throw invalid(`update_agent.manifest.platform ${quoted(manifest.platform)} must be "any" or like "linux-x64"`);
  if (manifest.sha256.length !== 32) throw invalid("update_agent.manifest.sha256 must be the 32-byte SHA-256 of the artifact");
  if (manifest.sizeBytes === 0n || manifest.sizeBytes > MAX_ARTIFACT_BYTES) {
    throw invalid(`update_agent.manifest.size_bytes must be from 1 to ${MAX_ARTIFACT_BYTES}`);
  }
  // Whatever signature the caller sent is replaced: only the control plane's key vouches for
  // an artifact, and agents accept only keys they pinned.
  return signer.signManifest(value.manifest);
}

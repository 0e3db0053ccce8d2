import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { CommandOutcome, PackageRefSchema, type PackageVersions, PackageVersionsResultSchema, PackageVersionsSchema, type ToolOutput } from "@redflag/gen/command_pb";
import { validateRef } from "../sources/install-common.ts";
import { INSTALLERS } from "../sources/index.ts";
import type { Installer } from "../sources/types.ts";
import { holdMatcher } from "./install.ts";
import type { Executor } from "./types.ts";

// list_package_versions: for each package, the earlier versions a rollback_update can go to,
// as the source's own tool sees them now. It reads only (no install, no metadata refresh), with
// the source's lock held so it never reads a half-finished transaction.

export const MAX_VERSION_PACKAGES = 50;

// Sources that cannot go back at all, in words an operator can act on.
const NO_ROLLBACK: Record<string, string> = {
  brew: "Homebrew installs only the current version of a formula or cask; it cannot go back to an earlier one",
  windows_update: "Windows Update cannot install an earlier revision of an update; uninstall the update in Windows instead",
};
const noRollback = (source: string) => NO_ROLLBACK[source] ?? `rollback is not supported for ${source}: it cannot install an earlier version`;

export interface PackageVersionsDeps {
  installers?: ReadonlyMap<string, Installer>;
}

export const createListPackageVersions = (deps: PackageVersionsDeps = {}): Executor => async (ctx) => {
  if (ctx.command.action.case !== "listPackageVersions") throw new Error("not a list_package_versions command");
  const installers = deps.installers ?? INSTALLERS;
  const { packages } = ctx.command.action.value;
  if (packages.length === 0) return { outcome: CommandOutcome.FAILED, message: "list_package_versions names no packages" };
  if (packages.length > MAX_VERSION_PACKAGES) {
    return { outcome: CommandOutcome.FAILED, message: `list_package_versions names ${packages.length} packages; at most ${MAX_VERSION_PACKAGES}` };
  }
  const holds = holdMatcher(ctx.agentConfig?.holds ?? []);
  const output: ToolOutput[] = [];
  const answers: PackageVersions[] = [];
  const failures: string[] = [];
  const present = new Map<string, boolean>();

  for (const asked of packages) {
    // The version asked is not used: the answer is every version there is.
    const ref = create(PackageRefSchema, { source: asked.source, name: asked.name, architecture: asked.architecture });
    const answer = (fields: { installed?: string; versions?: PackageVersions["versions"]; supported?: boolean; reason?: string }) =>
      create(PackageVersionsSchema, {
        package: ref,
        installedVersion: fields.installed ?? "",
        versions: fields.versions ?? [],
        rollbackSupported: fields.supported ?? false,
        reason: fields.reason ?? "",
      });
    const invalid = (ref.source ? undefined : "the package source is empty") ?? validateRef(ref);
    if (invalid) {
      failures.push(`${ref.source}/${ref.name}: ${invalid}`);
      answers.push(answer({ reason: invalid }));
      continue;
    }
    const installer = installers.get(ref.source);
    if (!installer) {
      const reason = `${ref.source} is not a package source this agent knows`;
      failures.push(`${ref.source}/${ref.name}: ${reason}`);
      answers.push(answer({ reason }));
      continue;
    }
    if (!installer.rollback) {
      answers.push(answer({ reason: noRollback(ref.source) }));
      continue;
    }
    if (!present.has(ref.source)) present.set(ref.source, await installer.present(ctx.env));
    if (!present.get(ref.source)) {
      answers.push(answer({ reason: `${ref.source} is not installed on this host` }));
      continue;
    }
    // A held package is never rolled back, so there is nothing to offer.
    const held = holds.reason(ref.source, ref.name);
    if (held) {
      answers.push(answer({ supported: true, reason: `${held}; a held package is not rolled back` }));
      continue;
    }
    if (!installer.versions) {
      answers.push(answer({ supported: true, reason: `this agent cannot list the earlier versions of ${ref.source} packages; name the version to go back to yourself` }));
      continue;
    }
    const found = await ctx.locks.run(ref.source, () =>
      installer.versions!(ref, {
        timeoutMs: Math.max(1000, ctx.deadline - Date.now()),
        signal: ctx.signal,
        env: ctx.env,
        isRoot: process.getuid?.() === 0,
        holds: holds.exactNames(ref.source),
      }),
    );
    output.push(...found.output);
    if (found.error) {
      failures.push(`${ref.source}/${ref.name}: ${found.error}`);
      answers.push(answer({ supported: true, reason: found.error }));
    } else if (!found.installed) {
      answers.push(answer({ supported: true, reason: "not installed on this host" }));
    } else if (found.versions.length === 0) {
      answers.push(answer({ installed: found.installed, supported: true, reason: `no earlier version of ${ref.name} is available to go back to` }));
    } else {
      answers.push(answer({ installed: found.installed, versions: found.versions, supported: true }));
    }
    if (ctx.signal.aborted) break;
  }

  const detail = { case: "listPackageVersions" as const, value: create(PackageVersionsResultSchema, { packages: answers, output }) };
  return { outcome: failures.length === 0 ? CommandOutcome.SUCCEEDED : CommandOutcome.FAILED, message: summary(answers, failures), detail };
};

// "curl: 2 earlier versions (newest 7.88.1-10+deb12u5); hello: not installed on this host".
function summary(answers: readonly PackageVersions[], failures: readonly string[]): string {
  const parts = answers.slice(0, 10).map((a) => {
    const name = a.package!.name;
    if (a.versions.length === 0) return `${name}: ${a.reason}`;
    return `${name}: ${plural(a.versions.length, "earlier version", "earlier versions")} (newest ${a.versions[0]!.version})`;
  });
  if (answers.length > 10) parts.push(`and ${plural(answers.length - 10, "more package", "more packages")}`);
  if (failures.length > 0 && answers.length === 0) return failures.join("; ");
  return parts.join("; ");
}

export const listPackageVersions = createListPackageVersions();

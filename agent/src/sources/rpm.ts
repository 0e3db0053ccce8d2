import type { PackageRef } from "@redflag/gen/command_pb";
import { which, type ProcessResult } from "../run-process.ts";

// What dnf (and yum) and zypper share: both install RPMs, and both ask rpm what is installed.

export const RPM_ARCHES = new Set(["x86_64", "noarch", "i686", "i386", "aarch64", "ppc64le", "ppc64", "s390x", "armv7hl", "armhfp", "riscv64", "src"]);

// "name.arch" as rpm and dnf print it; undefined when the suffix is not an RPM architecture.
export function nameArch(token: string): { name: string; arch: string } | undefined {
  const dot = token.lastIndexOf(".");
  if (dot <= 0) return undefined;
  const arch = token.slice(dot + 1);
  if (!RPM_ARCHES.has(arch)) return undefined;
  return { name: token.slice(0, dot), arch };
}

// Installed versions from `rpm -q --qf "%{NAME}.%{ARCH} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n"`.
export const RPM_QUERY_FORMAT = "%{NAME}.%{ARCH} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n";
export function parseRpmQuery(text: string): Map<string, string> {
  const versions = new Map<string, string>();
  for (const line of text.split("\n")) {
    const match = /^(\S+) (\S+)$/.exec(line.trim());
    if (!match) continue;
    const na = nameArch(match[1]!);
    if (!na) continue;
    // Several installed versions (kernels, installonly packages): the newest listed last wins.
    versions.set(`${na.name}.${na.arch}`, match[2]!);
    versions.set(na.name, match[2]!);
  }
  return versions;
}

// The installed versions of `names` (as parseRpmQuery keys them), asked of rpm through the
// caller's session `run`; empty when nothing is asked or rpm is missing.
export async function queryRpm(env: NodeJS.ProcessEnv, names: readonly string[], run: (argv: string[]) => Promise<ProcessResult>): Promise<Map<string, string>> {
  if (names.length === 0) return new Map();
  const rpm = await which("rpm", env.PATH ?? "");
  if (!rpm) return new Map();
  return parseRpmQuery((await run([rpm, "-q", "--qf", RPM_QUERY_FORMAT, "--", ...new Set(names)])).stdout);
}

// Kernel, firmware, microcode and the libraries every process maps need a restart.
export const RPM_REBOOT_PACKAGES = /^(kernel(-core|-modules.*|-rt.*)?|kernel-uek.*|linux-firmware|glibc|systemd|dbus(-broker|-daemon)?|.*-microcode|microcode_ctl)$/;

// How parseRpmQuery keys a ref: "name.arch", or "name" when the ref names no architecture.
export const rpmKey = (ref: Pick<PackageRef, "name" | "architecture">) => (ref.architecture ? `${ref.name}.${ref.architecture}` : ref.name);

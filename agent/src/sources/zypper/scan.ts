import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { type PackageUpdate, PackageUpdateSchema, UpdateSeverity } from "@redflag/gen/command_pb";
import { describeFailure, which, type ProcessResult } from "../../run-process.ts";
import { C_LOCALE, scanSession, severityFromWord, severityRank } from "../scan-common.ts";
import { queryRpm, RPM_REBOOT_PACKAGES } from "../rpm.ts";
import type { Scanner, ScanOptions, ScanResult } from "../types.ts";

export const ZYPPER = "zypper";

// zypper's exit codes that are information, not failure.
// 100 updates needed, 101 security updates needed, 102 reboot needed, 103 restart zypper,
// 106 some repositories could not be refreshed (the rest were used).
export const ZYPPER_OK = new Set([0, 100, 101, 102, 103, 106]);

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
const decode = (text: string) =>
  text.replace(/&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) =>
    e.startsWith("#x") ? String.fromCodePoint(parseInt(e.slice(2), 16)) : e.startsWith("#") ? String.fromCodePoint(Number(e.slice(1))) : ENTITIES[e.toLowerCase()]!,
  );

export function xmlAttributes(text: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const m of text.matchAll(/([A-Za-z_][\w.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) attrs[m[1]!] = decode(m[2] ?? m[3] ?? "");
  return attrs;
}

// Elements named `tag`: their attributes and, when not self-closing, their inner text.
// zypper's XML is flat and machine-written; this reads exactly what it writes.
export function xmlElements(xml: string, tag: string): { attrs: Record<string, string>; inner: string }[] {
  const out: { attrs: Record<string, string>; inner: string }[] = [];
  const re = new RegExp(`<${tag}(\\s[^>]*?)?(/>|>([\\s\\S]*?)</${tag}>)`, "g");
  for (const m of xml.matchAll(re)) out.push({ attrs: xmlAttributes(m[1] ?? ""), inner: m[3] ?? "" });
  return out;
}

export const xmlText = (inner: string, tag: string) => {
  const m = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`).exec(inner);
  return m ? decode(m[1]!).trim() : "";
};

// The error and warning messages zypper puts in its XML stream.
export function zypperMessages(xml: string, type: "error" | "warning"): string[] {
  return xmlElements(xml, "message")
    .filter((m) => m.attrs.type === type)
    .map((m) => decode(m.inner).trim())
    .filter(Boolean);
}

export interface ZypperPackage {
  name: string;
  architecture: string;
  availableVersion: string;
  currentVersion: string;
  repository: string;
}

export function parseListUpdates(xml: string): ZypperPackage[] {
  return xmlElements(xml, "update")
    .filter((u) => (u.attrs.kind ?? "package") === "package" && u.attrs.name && u.attrs.edition)
    .map((u) => ({
      name: u.attrs.name!,
      architecture: u.attrs.arch ?? "",
      availableVersion: u.attrs.edition!,
      currentVersion: u.attrs["edition-old"] ?? "",
      repository: xmlElements(u.inner, "source")[0]?.attrs.alias ?? "",
    }));
}

export interface ZypperPatch {
  name: string;
  category: string;
  severity: string;
  summary: string;
  rebootRequired: boolean;
}

export function parseListPatches(xml: string): ZypperPatch[] {
  return xmlElements(xml, "update")
    .filter((u) => u.attrs.kind === "patch" && (u.attrs.status ?? "needed") === "needed")
    .map((u) => ({
      name: u.attrs.name ?? "",
      category: u.attrs.category ?? "",
      severity: u.attrs.severity ?? "",
      summary: xmlText(u.inner, "summary"),
      rebootRequired: u.attrs.restart === "true" || u.attrs.restart === "1",
    }));
}

// Which packages a patch fixes, from its summary ("Security update for curl", "Recommended
// update for the Linux Kernel"): zypper's patch list does not name packages, and asking per
// patch would be one call each. The source name matches its binary packages ("curl" →
// curl, libcurl4, curl-devel).
export function patchMatcher(summary: string): ((name: string) => boolean) | undefined {
  const m = /update for (.+)$/i.exec(summary.trim());
  if (!m) return undefined;
  const subject = m[1]!.trim();
  if (/linux kernel/i.test(subject)) return (name) => /^kernel-/.test(name);
  const names = subject
    .split(/,\s*|\s+and\s+/)
    .map((s) => s.trim().toLowerCase())
    .filter((s) => /^[a-z0-9][a-z0-9+._-]*$/.test(s));
  if (names.length === 0) return undefined;
  return (name) => names.some((n) => name === n || name.startsWith(`${n}-`) || name === `lib${n}` || new RegExp(`^lib${n.replace(/[.+]/g, "\\$&")}[0-9_-]`).test(name));
}

export function toZypperUpdates(packages: readonly ZypperPackage[], patches: readonly ZypperPatch[]): PackageUpdate[] {
  const matchers = patches.map((p) => ({ patch: p, matches: patchMatcher(p.summary) }));
  return packages.map((pkg) => {
    let security = false;
    let severity = UpdateSeverity.UNKNOWN;
    let reboot = RPM_REBOOT_PACKAGES.test(pkg.name);
    for (const { patch, matches } of matchers) {
      if (!matches?.(pkg.name)) continue;
      reboot ||= patch.rebootRequired;
      if (patch.category !== "security") continue;
      security = true;
      const s = severityFromWord(patch.severity);
      const rated = s === UpdateSeverity.UNKNOWN ? UpdateSeverity.SECURITY : s;
      if (severityRank(rated) > severityRank(severity)) severity = rated;
    }
    return create(PackageUpdateSchema, {
      source: ZYPPER,
      name: pkg.name,
      architecture: pkg.architecture,
      currentVersion: pkg.currentVersion,
      availableVersion: pkg.availableVersion,
      repository: pkg.repository,
      severity,
      security,
      rebootRequired: reboot,
    });
  });
}

export function zypperFailure(what: string, result: ProcessResult): string {
  const errors = zypperMessages(result.stdout, "error");
  if (errors.length > 0 && result.exitCode !== null) return `${what} failed (exit status ${result.exitCode}): ${errors.join(" ").slice(0, 300)}`;
  return describeFailure(what, result);
}

export async function scanZypper(opts: ScanOptions): Promise<ScanResult> {
  const s = scanSession(ZYPPER, opts, C_LOCALE);
  const zypper = await which("zypper", s.env.PATH ?? "");
  if (!zypper) return s.notPresent("zypper is not installed on this host");
  const notes: string[] = [];
  // Without refreshing, zypper must not try the network (-no-refresh).
  const base = [zypper, "--non-interactive", "--xmlout", ...(opts.refresh ? [] : ["--no-refresh"])];

  if (!opts.refresh) notes.push("repositories not refreshed (refresh disabled)");
  else if (!opts.isRoot) notes.push("repositories not refreshed (refreshing needs root)");
  else {
    const refresh = await s.run([zypper, "--non-interactive", "--xmlout", "refresh"], Math.min(5 * 60_000, s.remaining() * 0.6));
    if (opts.signal?.aborted) return s.failed("scan stopped");
    if (!ZYPPER_OK.has(refresh.exitCode ?? -1)) notes.push(`repositories not refreshed: ${zypperFailure("zypper refresh", refresh)}`);
    else if (refresh.exitCode === 106) notes.push("some repositories could not be refreshed");
  }

  const list = await s.run([...base, "list-updates"]);
  if (!ZYPPER_OK.has(list.exitCode ?? -1)) return s.failed([zypperFailure("zypper list-updates", list), ...notes].join("; "));
  const packages = parseListUpdates(list.stdout);
  if (!/<update-status\b/.test(list.stdout) && packages.length === 0) {
    return s.failed(["zypper list-updates printed no update status (unexpected output)", ...notes].join("; "));
  }

  const patchList = await s.run([...base, "list-patches"]);
  const patches = ZYPPER_OK.has(patchList.exitCode ?? -1) ? parseListPatches(patchList.stdout) : [];
  if (!ZYPPER_OK.has(patchList.exitCode ?? -1)) notes.push(`no patch data: ${zypperFailure("zypper list-patches", patchList)}`);
  else if (patches.length > 0) notes.push(`${plural(patches.length, "patch", "patches")} needed, ${patches.filter((p) => p.category === "security").length} security`);

  // list-updates knows the installed edition; rpm fills in what it leaves out.
  const missing = packages.filter((p) => !p.currentVersion).map((p) => p.name);
  if (missing.length > 0) {
    const installed = await queryRpm(s.env, missing, s.run);
    for (const p of packages) if (!p.currentVersion) p.currentVersion = installed.get(`${p.name}.${p.architecture}`) ?? installed.get(p.name) ?? "";
  }
  return s.ran(toZypperUpdates(packages, patches), notes);
}

export const zypperScanner: Scanner = { name: ZYPPER, scan: scanZypper };

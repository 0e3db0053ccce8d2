import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import type { PackageRef } from "@redflag/gen/command_pb";
import { describeFailure, which, type ProcessResult } from "../../run-process.ts";
import { packageResult, PackageResultState, type ToolSession } from "../install-common.ts";
import type { PackageResult } from "../types.ts";
import { findCachedPackage } from "./cache.ts";

// AUR packages. The helpers (paru, yay) and makepkg refuse to run as root, and a PKGBUILD is
// a script anyone on the AUR may have written: so the agent builds as a dedicated unprivileged
// user, and only the finished package is installed as root, by pacman. Building from the AUR
// trusts its maintainers with root on this host, so it is the host owner's choice, not an
// operator's: the user exists only where root ran `redflag-agent install --aur`, and without it
// AUR updates are reported but not installed. Only installed foreign packages are built.
// Dependencies come from the sync databases only; one that is itself in the AUR must be
// installed first.

export const AUR_BUILD_USER = "redflag-aur";
export const AUR_BUILD_HOME = "/var/lib/redflag-aur";
export const AUR_URL = "https://aur.archlinux.org";

// How `redflag-agent install --aur` creates the build user.
export const CREATE_BUILD_USER = `useradd --system --create-home --home-dir ${AUR_BUILD_HOME} --shell /usr/bin/nologin ${AUR_BUILD_USER}`;
// What to type to allow AUR builds on a host: it works as printed on Arch.
export const ENABLE_AUR = "sudo redflag-agent install --aur";

export interface SrcInfo {
  pkgbase: string;
  names: string[];
  // [epoch:]pkgver-pkgrel, as pacman spells it.
  version: string;
  // Runtime, build and check dependencies, with their version constraints.
  depends: string[];
}

// .SRCINFO: "key = value" lines, the pkgbase section first, then one section per pkgname.
// Dependencies of every section count (a split package's own ones included), and the
// architecture-specific ones for `arch`.
export function parseSrcInfo(text: string, arch: string): SrcInfo | undefined {
  const info: SrcInfo = { pkgbase: "", names: [], version: "", depends: [] };
  let pkgver = "";
  let pkgrel = "";
  let epoch = "";
  const dependencyKeys = new Set(["depends", "makedepends", "checkdepends"].flatMap((k) => [k, `${k}_${arch}`]));
  for (const raw of text.split("\n")) {
    const m = /^\s*([a-z0-9_]+) = (.*)$/.exec(raw);
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === "pkgbase") info.pkgbase = value;
    else if (key === "pkgname") info.names.push(value);
    else if (key === "pkgver" && !pkgver) pkgver = value;
    else if (key === "pkgrel" && !pkgrel) pkgrel = value;
    else if (key === "epoch" && !epoch) epoch = value;
    else if (dependencyKeys.has(key)) info.depends.push(value);
  }
  if (!info.pkgbase || !pkgver || !pkgrel || info.names.length === 0) return undefined;
  info.version = `${epoch && epoch !== "0" ? `${epoch}:` : ""}${pkgver}-${pkgrel}`;
  info.depends = [...new Set(info.depends)];
  return info;
}

type Run = (argv: string[]) => Promise<ProcessResult>;

// The build user's home, or undefined when the user does not exist.
async function buildHome(run: Run, path: string): Promise<string | undefined> {
  const getent = await which("getent", path);
  if (!getent) return undefined;
  const res = await run([getent, "passwd", AUR_BUILD_USER]);
  if (res.exitCode !== 0) return undefined;
  return res.stdout.trim().split(":")[5] || undefined;
}

// How AUR work runs here: as the build user when the agent is root (a prefix for argv), as the
// agent itself otherwise; or why it cannot.
export async function aurRunner(run: Run, path: string, isRoot: boolean): Promise<{ prefix: string[]; home: string | undefined } | { problem: string }> {
  if (!isRoot) return { prefix: [], home: undefined };
  const runuser = await which("runuser", path);
  if (!runuser) return { problem: "runuser (util-linux) is not installed" };
  const home = await buildHome(run, path);
  if (!home) return { problem: `AUR builds are not enabled on this host: \`${ENABLE_AUR}\` enables them (it creates ${AUR_BUILD_USER}, the unprivileged user that builds them)` };
  return { prefix: [runuser, "-u", AUR_BUILD_USER, "--"], home };
}

const failed = (ref: PackageRef, reason: string, extra: { from?: string | undefined; to?: string | undefined } = {}) =>
  packageResult(ref, PackageResultState.FAILED, { ...extra, reason });

// A dependency's package name, without its version constraint ("glibc>=2.40" → "glibc").
const dependencyName = (dep: string) => dep.split(/[<>=]/)[0]!;

// Builds one AUR package as the build user and installs it with pacman. `from` is the version
// installed now; the result says what happened, in words a person can act on.
export async function buildAndInstall(
  s: ToolSession,
  pacman: string,
  ref: PackageRef,
  from: string | undefined,
  opts: { arch: string },
): Promise<{ result: PackageResult; ran: boolean }> {
  const runner = await aurRunner((argv) => s.run(argv, false), s.env.PATH ?? "", true);
  if ("problem" in runner) return { result: failed(ref, `cannot build from the AUR: ${runner.problem}`, { from }), ran: false };
  const [git, makepkg] = await Promise.all(["git", "makepkg"].map((t) => which(t, s.env.PATH ?? "")));
  if (!git || !makepkg) return { result: failed(ref, `cannot build from the AUR: ${!git ? "git" : "makepkg"} is not installed`, { from }), ran: false };
  const dir = `${runner.home}/build-${ref.name}-${randomBytes(6).toString("hex")}`;
  const asBuilder = (argv: string[], env?: NodeJS.ProcessEnv) => s.run([...runner.prefix, ...argv], true, env);
  try {
    const clone = await asBuilder([git, "clone", "--depth", "1", "--", `${AUR_URL}/${ref.name}.git`, dir]);
    if (clone.exitCode !== 0) return { result: failed(ref, describeFailure("git clone", clone), { from }), ran: false };
    const srcinfo = await s.run([...runner.prefix, git, "-C", dir, "show", "HEAD:.SRCINFO"], false);
    const info = srcinfo.exitCode === 0 ? parseSrcInfo(srcinfo.stdout, opts.arch) : undefined;
    if (!info) return { result: failed(ref, `${ref.name} is not in the AUR (its repository has no .SRCINFO)`, { from }), ran: false };
    if (!info.names.includes(ref.name)) return { result: failed(ref, `the AUR repository ${ref.name} builds ${info.names.join(", ")}, not ${ref.name}`, { from }), ran: false };
    if (ref.version && ref.version !== info.version) {
      return {
        result: failed(ref, `the AUR now has ${ref.name} ${info.version}, not the approved ${ref.version}: scan again and approve the new version`, { from, to: ref.version }),
        ran: false,
      };
    }
    // Dependencies the host lacks, from the sync databases.
    if (info.depends.length > 0) {
      const missing = await s.run([pacman, "-T", "--", ...info.depends]);
      const wanted = missing.exitCode === 0 ? [] : missing.stdout.split("\n").map((l) => l.trim()).filter(Boolean).map(dependencyName);
      if (wanted.length > 0) {
        const deps = await s.run([pacman, "-S", "--needed", "--asdeps", "--noconfirm", "--", ...wanted]);
        if (deps.exitCode !== 0) {
          const reason = `its dependencies ${wanted.join(", ")} could not be installed from the sync databases (one from the AUR must be installed first): ${describeFailure("pacman -S --asdeps", deps)}`;
          return { result: failed(ref, reason, { from, to: info.version }), ran: true };
        }
      }
    }
    const build = await asBuilder([makepkg, "--dir", dir, "--noconfirm", "--nodeps", "--cleanbuild", "--clean", "--force"], { ...s.env, PKGDEST: dir });
    if (build.exitCode !== 0) return { result: failed(ref, describeFailure("makepkg", build), { from, to: info.version }), ran: true };
    const file = await findCachedPackage([dir], ref.name, info.version);
    if (!file) return { result: failed(ref, `makepkg built no package file for ${ref.name} ${info.version}`, { from, to: info.version }), ran: true };
    const install = await s.run([pacman, "-U", "--noconfirm", "--", file]);
    if (install.exitCode !== 0) return { result: failed(ref, describeFailure("pacman -U", install), { from, to: info.version }), ran: true };
    return { result: packageResult(ref, PackageResultState.INSTALLED, { from, to: info.version }), ran: true };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

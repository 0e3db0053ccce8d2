import { CommandState } from "@redflag/gen/command_service_pb";
import { execFile } from "node:child_process";
import { copyFile, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { buildAgent, type BuiltAgent } from "../scripts/build-agent.ts";
import { root as projectRoot, run } from "./support/processes.ts";

const exec = promisify(execFile);
const SCRIPT = path.join(projectRoot, "control-plane", "install", "install.sh");

type Result = { code: number; stdout: string; stderr: string };
const settle = (p: Promise<{ stdout: string; stderr: string }>): Promise<Result> =>
  p.then(
    (r) => ({ code: 0, ...r }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" }),
  );

it("install.sh passes shellcheck as POSIX sh", async () => {
  const checked = await settle(exec("shellcheck", ["--shell=sh", "--severity=style", SCRIPT]));
  expect(checked.stderr, "shellcheck is needed (Debian: apt-get install shellcheck; .ci/run installs it)").not.toMatch(/ENOENT|not found/);
  expect(checked.stdout + checked.stderr).toBe("");
  expect(checked.code).toBe(0);
});

// A fake systemctl for a root prefix: it keeps a log, and starts and stops the service the way
// systemd would from the unit the installer wrote (its ExecStart and Environment lines, with the
// paths moved under the prefix), so the service that runs is the one the unit describes.
const FAKE_SYSTEMCTL = `
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const root = process.env.REDFLAG_INSTALL_ROOT;
const args = process.argv.slice(2);
fs.appendFileSync(path.join(root, "systemctl.log"), args.join(" ") + "\\n");
const pidFile = path.join(root, "service.pid");
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
function stop() {
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, "utf8"));
  fs.rmSync(pidFile);
  if (!alive(pid)) return;
  process.kill(pid, "SIGTERM");
  const end = Date.now() + 40000;
  while (alive(pid) && Date.now() < end) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
}
function start() {
  const unit = fs.readFileSync(path.join(root, "etc/systemd/system/redflag-agent.service"), "utf8");
  const word = (text) => text.startsWith('"') ? text.slice(1, -1).replace(/\\\\(.)/g, "$1") : text;
  const env = { ...process.env };
  for (const m of unit.matchAll(/^Environment=(.*)$/gm)) {
    const [k, ...v] = word(m[1]).split("=");
    env[k] = path.join(root, v.join("="));
  }
  const exec = /^ExecStart=("[^"]*"|\\S+) (.*)$/m.exec(unit);
  const log = fs.openSync(path.join(root, "service.log"), "a");
  const child = spawn(path.join(root, word(exec[1])), exec[2].split(" "), { env, detached: true, stdio: ["ignore", log, log] });
  fs.writeFileSync(pidFile, String(child.pid));
  child.unref();
}
const t0 = Date.now();
if (args[0] === "restart" || args[0] === "start") { stop(); start(); }
else if (args[0] === "stop" || (args[0] === "disable" && args.includes("--now"))) stop();
fs.appendFileSync(path.join(root, "systemctl.times"), args[0] + " " + (Date.now() - t0) + " ms\\n");
`;

// Issue 14: the one line the Tokens page and `redflag tokens create` print for Linux, pasted as
// it is, against a real control plane serving a real single-file agent; everything lands under
// a temporary root prefix (REDFLAG_INSTALL_ROOT), with fake sudo and systemctl on PATH.
describe.runIf(process.platform === "linux" && process.arch === "x64" && process.getuid?.() === 0)("the Linux one-liner, end to end", () => {
  let work: string;
  let built: BuiltAgent;
  let cp: TestControlPlane;
  let prefix: string;
  let env: NodeJS.ProcessEnv;
  let printed: string;
  let secret: string;
  let agentId: string;

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "rf-install-sh-"));
    built = (await buildAgent({ platforms: ["linux-x64"], out: path.join(work, "dist"), log: () => {} }))[0]!;
    cp = await startTestControlPlane();
    const published = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "releases", "publish", path.dirname(built.tarball)]);
    expect(published.code, published.stderr).toBe(0);

    const bin = path.join(work, "fake-bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "sudo"), '#!/bin/sh\nexec "$@"\n', { mode: 0o755 });
    await writeFile(path.join(bin, "systemctl"), `#!${process.execPath}\n${FAKE_SYSTEMCTL}`, { mode: 0o755 });
    prefix = path.join(work, "root");
    // What systemd's sd_booted() looks for.
    await mkdir(path.join(prefix, "run", "systemd", "system"), { recursive: true });
    env = {
      PATH: `${bin}:/usr/bin:/bin`,
      HOME: work,
      REDFLAG_INSTALL_ROOT: prefix,
      REDFLAG_AGENT_MACHINE_ID_SEED: "one-liner",
      REDFLAG_AGENT_LOG_LEVEL: "info",
    };
    const token = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    secret = token.secret;
    printed = token.installCommands.find((c) => c.platform === "linux")!.command;
  }, 300_000);
  afterAll(async () => {
    if (prefix) await settle(exec(path.join(work, "fake-bin", "systemctl"), ["stop", "redflag-agent.service"], { env }));
    await cp?.close();
    if (work && !process.env.KEEP) await rm(work, { recursive: true, force: true });
  });

  const paste = (line: string, extra: NodeJS.ProcessEnv = {}) => settle(exec("sh", ["-c", line], { env: { ...env, ...extra }, cwd: work, timeout: 120_000 }));
  const servicePid = async () => Number(await readFile(path.join(prefix, "service.pid"), "utf8"));
  const waitFor = async <T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; service log:\n${await readFile(path.join(prefix, "service.log"), "utf8").catch(() => "")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  it("a wrong fingerprint installs nothing and says why", async () => {
    const wrong = printed.replace(/--fingerprint \S+/, `--fingerprint ${"ab:".repeat(31)}ab`);
    const res = await paste(wrong);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/^redflag-install: the control plane's signing key has fingerprint [0-9a-f]{64}, not the (ab){32} you gave: nothing was installed/m);
    expect(await readdir(prefix)).toEqual(["run"]);
  });

  it("installs, registers and starts the agent as a hardened service, as printed", { timeout: 150_000 }, async () => {
    expect(printed).toBe(`curl -fsSL '${cp.url}/install/linux.sh' | sudo sh -s -- --token '${secret}' --fingerprint ${(await cp.admin.tokens.createRegistrationToken({ seats: 1 })).signingKeyFingerprint}`);
    const res = await paste(printed);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stderr).toContain(`redflag-install: agent ${built.version} for linux-x64: SHA-256 and the signature by key`);
    expect(res.stdout).toMatch(new RegExp(`^registered with ${cp.url} as agent [0-9a-f-]{36}\n`));
    expect(res.stdout).toContain("vouched for by the key with the expected fingerprint");
    expect(res.stdout).toContain("service: /etc/systemd/system/redflag-agent.service (enabled, started;");
    expect(res.stdout).toContain("to remove it: sudo redflag-agent uninstall");
    agentId = /as agent ([0-9a-f-]{36})/.exec(res.stdout)![1]!;

    // What landed where.
    expect(await readlink(path.join(prefix, "opt/redflag-agent/current"))).toBe(`releases/${built.version}`);
    expect(await readlink(path.join(prefix, "usr/local/bin/redflag-agent"))).toBe("/opt/redflag-agent/current/bin/redflag-agent");
    const unit = await readFile(path.join(prefix, "etc/systemd/system/redflag-agent.service"), "utf8");
    expect(unit).toContain('ExecStart="/opt/redflag-agent/current/bin/redflag-agent" run');
    for (const line of ["Restart=always", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "ProtectClock=yes", "WantedBy=multi-user.target"]) {
      expect(unit).toContain(`\n${line}\n`);
    }
    // Nothing that would keep a kernel package from writing its modules.
    expect(unit).not.toContain("ProtectKernelModules");
    expect(unit).toMatch(/\nReadWritePaths=.* \/var\/lib\/redflag-agent \/opt\/redflag-agent\n/);
    expect(await readFile(path.join(prefix, "systemctl.log"), "utf8")).toBe("daemon-reload\nenable redflag-agent.service\nrestart redflag-agent.service\n");
    expect((await lstat(path.join(prefix, "var/lib/redflag-agent"))).mode & 0o777).toBe(0o700);

    // The service the unit describes runs, polls, and runs a signed command.
    const pid = await servicePid();
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
    expect(cmdline.split("\0")).toEqual([path.join(prefix, "opt/redflag-agent/current/bin/redflag-agent"), "run", ""]);
    const command = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    await waitFor("the command to succeed", async () => {
      const state = (await cp.admin.commands.getCommand({ id: command.id })).command?.state;
      return state === CommandState.SUCCEEDED ? state : undefined;
    });

    // The token is in no file (the agent keeps none either) and in no process's command line.
    const holders: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) await walk(file);
        else if (entry.isFile() && (await readFile(file)).includes(secret)) holders.push(path.relative(prefix, file));
      }
    };
    await walk(prefix);
    expect(holders).toEqual([]);
    expect(cmdline).not.toContain(secret);
  });

  it("run again, it upgrades in place to the newest release and keeps the identity", { timeout: 150_000 }, async () => {
    // Another release in the registry (the same executable under a newer version).
    const next = path.join(work, "next");
    await mkdir(next);
    await copyFile(built.tarball, path.join(next, "redflag-agent-9.9.9-linux-x64.tgz"));
    const published = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, "releases", "publish", next]);
    expect(published.code, published.stderr).toBe(0);
    const before = await servicePid();

    // The same line: its token is used up, and not needed for a host that is registered.
    const res = await paste(printed);
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toContain(`already registered with ${cp.url} as agent ${agentId}: keeping this identity`);
    expect(await readlink(path.join(prefix, "opt/redflag-agent/current"))).toBe("releases/9.9.9");
    expect(await readdir(path.join(prefix, "opt/redflag-agent/releases"))).toEqual([built.version, "9.9.9"].sort());
    expect(await servicePid()).not.toBe(before);
    expect((await cp.admin.fleet.listAgents({})).agents.map((a) => a.id)).toEqual([agentId]);
  });

  it("a release whose bytes differ from the signed manifest installs nothing", { timeout: 120_000 }, async () => {
    const release = await cp.app.db.prisma.agentRelease.findFirstOrThrow({ where: { version: "9.9.9" } });
    const chunk = await cp.app.db.prisma.agentReleaseChunk.findFirstOrThrow({ where: { releaseId: release.id, seq: 0 } });
    const tampered = Buffer.from(chunk.data);
    tampered[100] = tampered[100]! ^ 0xff;
    await cp.app.db.prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: tampered } });
    try {
      const installed = await readFile(path.join(prefix, "opt/redflag-agent/releases/9.9.9/bin/redflag-agent"));
      const res = await paste(printed);
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/redflag-install: the download's SHA-256 is [0-9a-f]{64}, the signed manifest says [0-9a-f]{64}: nothing was installed/);
      expect(await readdir(path.join(prefix, "opt/redflag-agent/releases"))).toEqual([built.version, "9.9.9"].sort());
      expect((await readFile(path.join(prefix, "opt/redflag-agent/releases/9.9.9/bin/redflag-agent"))).equals(installed)).toBe(true);
    } finally {
      await cp.app.db.prisma.agentReleaseChunk.update({ where: { releaseId_seq: { releaseId: release.id, seq: 0 } }, data: { data: chunk.data } });
    }
  });

  it("redflag-agent uninstall removes everything it made, and the hint it prints works", async () => {
    const pid = await servicePid();
    const res = await settle(exec(path.join(prefix, "opt/redflag-agent/current/bin/redflag-agent"), ["uninstall", "--root", prefix], { env, timeout: 60_000 }));
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toBe(
      [
        "stopped and removed the service /etc/systemd/system/redflag-agent.service",
        "removed /usr/local/bin/redflag-agent",
        "removed the state directory /var/lib/redflag-agent (the agent's key and credentials)",
        "removed /opt/redflag-agent",
        `the control plane still lists agent ${agentId}; an admin removes it from the fleet with: redflag agents decommission ${agentId}`,
        "",
      ].join("\n"),
    );
    expect(() => process.kill(pid, 0)).toThrow();
    expect((await readdir(prefix)).sort()).toEqual(["etc", "opt", "run", "service.log", "systemctl.log", "systemctl.times", "usr", "var"]);
    expect(await readdir(path.join(prefix, "opt"))).toEqual([]);
    expect(await readdir(path.join(prefix, "usr/local/bin"))).toEqual([]);
    expect(await readdir(path.join(prefix, "etc/systemd/system"))).toEqual([]);
    expect(await readdir(path.join(prefix, "var/lib"))).toEqual([]);
    const hint = /with: (redflag agents decommission \S+)$/m.exec(res.stdout)![1]!.split(" ");
    const decommissioned = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...hint.slice(1)]);
    expect(decommissioned.code, decommissioned.stderr).toBe(0);
  });
});

import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ProcessResult } from "../run-process.ts";
import { launchdPlist, systemdUnit, winswXml } from "./definitions.ts";
import { installService, uninstallService, type ServiceHost } from "./install.ts";

// The registration itself is tested with real control planes (test/install-script.test.ts,
// test/enrolment.test.ts); here the host is registered already, and the service managers of
// macOS and Windows, which cannot run here, are recorders that answer as the real ones do.
let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "rf-service-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const ok = (stdout = ""): ProcessResult => ({ exitCode: 0, signal: null, stdout, stderr: "", timedOut: false, aborted: false, truncated: false, spawnError: undefined, durationMs: 1 });
const failed = (code: number, stderr: string): ProcessResult => ({ ...ok(), exitCode: code, stderr });

function host(platform: NodeJS.Platform, answers: (argv: readonly string[]) => ProcessResult = () => ok()) {
  const calls: string[] = [];
  const out: string[] = [];
  const h: ServiceHost = {
    platform,
    root,
    env: { SystemRoot: "C:\\Windows" },
    run: async (argv) => {
      calls.push(argv.join(" "));
      return answers(argv);
    },
    out: (line) => out.push(line),
  };
  return { h, calls, out };
}

// A host registered before, as `register` leaves it.
async function registered(stateDir: string, serverUrl = "https://redflag.lan:8080") {
  await mkdir(stateDir, { recursive: true });
  await writeFile(
    path.join(stateDir, "agent.json"),
    JSON.stringify({
      version: 1,
      serverUrl,
      caFile: null,
      agentId: "6f1c2a57-0b1e-4a57-9a55-3f0f3cb2f1aa",
      registrationToken: "rfreg_x",
      accessToken: "a",
      accessTokenIssueTime: new Date().toISOString(),
      accessTokenExpireTime: new Date(Date.now() + 3600_000).toISOString(),
      refreshToken: "r",
      agentConfig: null,
      registerTime: new Date().toISOString(),
    }),
  );
}

async function release(installDir: string, files: string[]) {
  await mkdir(path.join(installDir, "releases", "0.3.0", "bin"), { recursive: true });
  for (const f of files) await writeFile(path.join(installDir, "releases", "0.3.0", "bin", f), "binary", { mode: 0o755 });
  await symlink("releases/0.3.0", path.join(installDir, "current"));
}

const options = (installDir: string, stateDir: string) => ({
  installDir,
  stateDir,
  serverUrl: "https://redflag.lan:8080",
  token: undefined,
  fingerprint: undefined,
  insecureHttp: undefined,
  caFile: undefined,
  machineIdSeed: undefined,
  start: true,
});

describe("redflag-agent install on macOS", () => {
  it("writes a launchd daemon, reloads it, links the agent onto PATH and records what it made", async () => {
    const installDir = "/usr/local/redflag-agent";
    const stateDir = "/Library/Application Support/RedFlag/agent";
    await release(path.join(root, installDir), ["redflag-agent"]);
    await registered(path.join(root, stateDir));
    // launchctl bootout fails when the daemon was not loaded: that is fine.
    const { h, calls, out } = host("darwin", (argv) => (argv[1] === "bootout" ? failed(3, "Boot-out failed: 3: No such process") : ok()));
    await installService(h, options(installDir, stateDir));
    expect(calls).toEqual(["launchctl bootout system/io.redflag.agent", "launchctl bootstrap system /Library/LaunchDaemons/io.redflag.agent.plist"]);
    const plist = await readFile(path.join(root, "Library/LaunchDaemons/io.redflag.agent.plist"), "utf8");
    expect(plist).toBe(launchdPlist({ installDir, stateDir, join: path.posix.join }));
    expect(plist).toContain("<key>ProgramArguments</key><array><string>/usr/local/redflag-agent/current/bin/redflag-agent</string><string>run</string></array>");
    expect(plist).toContain("<key>REDFLAG_AGENT_STATE_DIR</key><string>/Library/Application Support/RedFlag/agent</string>");
    expect(plist).toContain("<key>KeepAlive</key><true/>");
    expect(out).toEqual([
      "already registered with https://redflag.lan:8080 as agent 6f1c2a57-0b1e-4a57-9a55-3f0f3cb2f1aa: keeping this identity",
      "service: /Library/LaunchDaemons/io.redflag.agent.plist (loaded and started; `sudo launchctl print system/io.redflag.agent`)",
      "installed agent 0.1.0 in /usr/local/redflag-agent; state in /Library/Application Support/RedFlag/agent",
      "to remove it: sudo redflag-agent uninstall",
    ]);
    const record = JSON.parse(await readFile(path.join(root, installDir, "install.json"), "utf8")) as Record<string, unknown>;
    expect(record).toMatchObject({ platform: "darwin", service: { kind: "launchd", file: "/Library/LaunchDaemons/io.redflag.agent.plist" }, binLink: "/usr/local/bin/redflag-agent" });

    const removed = host("darwin");
    await uninstallService(removed.h, { installDir, stateDir, keepState: false });
    expect(removed.calls).toEqual(["launchctl bootout system/io.redflag.agent"]);
    expect(await readdir(path.join(root, "Library/LaunchDaemons"))).toEqual([]);
    expect(await readdir(path.join(root, "usr/local"))).toEqual(["bin"]);
    expect(removed.out.at(-1)).toBe(
      "the control plane still lists agent 6f1c2a57-0b1e-4a57-9a55-3f0f3cb2f1aa; an admin removes it from the fleet with: redflag agents decommission 6f1c2a57-0b1e-4a57-9a55-3f0f3cb2f1aa",
    );
  });

  it("a failing launchctl fails the install with its own words", async () => {
    await release(path.join(root, "/usr/local/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/state"));
    const { h } = host("darwin", (argv) => (argv[1] === "bootstrap" ? failed(5, "Bootstrap failed: 5: Input/output error") : ok()));
    await expect(installService(h, options("/usr/local/redflag-agent", "/state"))).rejects.toThrow(
      "loading the launchd daemon failed (exit status 5): Bootstrap failed: 5: Input/output error (`launchctl bootstrap system /Library/LaunchDaemons/io.redflag.agent.plist`)",
    );
  });
});

describe("redflag-agent install on Windows", () => {
  const installDir = "C:\\Program Files\\RedFlag\\agent";
  const stateDir = "C:\\ProgramData\\RedFlag\\agent";
  const hostDir = (p: string) => path.join(root, p.replace(/^C:/, "C").replace(/\\/g, "/"));

  it("registers WinSW beside the releases with recovery actions, and starts it", async () => {
    await release(hostDir(installDir), ["redflag-agent.exe", "redflag-agent-service.exe", "redflag-agent-service.exe.config"]);
    await registered(hostDir(stateDir));
    // sc.exe query exits 1060 for a service that does not exist.
    const { h, calls, out } = host("win32", (argv) => (argv[1] === "query" ? failed(1060, "[SC] EnumQueryServicesStatus:OpenService FAILED 1060") : ok()));
    await installService(h, options(installDir, stateDir));
    const wrapper = "C:\\Program Files\\RedFlag\\agent\\redflag-agent-service.exe";
    expect(calls).toEqual(["C:\\Windows\\System32\\sc.exe query RedFlagAgent", `${wrapper} install`, `${wrapper} start`]);
    expect(await readdir(hostDir(installDir))).toEqual(["current", "install.json", "redflag-agent-service.exe", "redflag-agent-service.exe.config", "redflag-agent-service.xml", "releases"]);
    const xml = await readFile(path.join(hostDir(installDir), "redflag-agent-service.xml"), "utf8");
    expect(xml).toBe(winswXml({ installDir, stateDir, join: path.win32.join }));
    expect(xml).toContain("<executable>C:\\Program Files\\RedFlag\\agent\\current\\bin\\redflag-agent.exe</executable>");
    expect(xml.match(/<onfailure action="restart"/g)).toHaveLength(3);
    expect(out[1]).toBe("service: RedFlagAgent (automatic start, restarts on failure, started; `Get-Service RedFlagAgent`)");
    expect(out.at(-1)).toBe("to remove it: & 'C:\\Program Files\\RedFlag\\agent\\current\\bin\\redflag-agent.exe' uninstall");

    // Run again (an upgrade in place): the service exists, so it is restarted, not registered twice.
    const again = host("win32");
    await installService(again.h, options(installDir, stateDir));
    expect(again.calls).toEqual(["C:\\Windows\\System32\\sc.exe query RedFlagAgent", `${wrapper} stop`, `${wrapper} start`]);

    const removed = host("win32");
    await uninstallService(removed.h, { installDir, stateDir, keepState: true });
    expect(removed.calls).toEqual([`${wrapper} stop`, `${wrapper} uninstall`]);
    expect(await readdir(hostDir(stateDir))).toEqual(["agent.json"]);
  });

  it("refuses a release that is not a Windows build", async () => {
    await release(hostDir(installDir), ["redflag-agent.exe"]);
    await registered(hostDir(stateDir));
    await expect(installService(host("win32").h, options(installDir, stateDir))).rejects.toThrow(
      "the release has no C:\\Program Files\\RedFlag\\agent\\current\\bin\\redflag-agent-service.exe; it is not a Windows build of the agent",
    );
  });
});

describe("redflag-agent install on Linux", () => {
  it("without systemd says how to start it instead, and with SELinux enforcing leaves NoNewPrivileges off", async () => {
    await release(path.join(root, "/opt/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/var/lib/redflag-agent"));
    const bare = host("linux");
    await installService(bare.h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    expect(bare.calls).toEqual([]);
    expect(bare.out[1]).toBe(
      "no systemd on this host: the agent is installed and registered but not started. Run `/opt/redflag-agent/current/bin/redflag-agent run` from your init system with REDFLAG_AGENT_INSTALL_DIR=/opt/redflag-agent and REDFLAG_AGENT_STATE_DIR=/var/lib/redflag-agent, restarting it whenever it exits (the agent's README has an OpenRC service)",
    );

    await mkdir(path.join(root, "run/systemd/system"), { recursive: true });
    await mkdir(path.join(root, "sys/fs/selinux"), { recursive: true });
    await writeFile(path.join(root, "sys/fs/selinux/enforce"), "1");
    await installService(host("linux").h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    const unit = await readFile(path.join(root, "etc/systemd/system/redflag-agent.service"), "utf8");
    expect(unit).toContain("\nNoNewPrivileges=no\n");
    expect(systemdUnit({ installDir: "/opt/redflag-agent", stateDir: "/var/lib/redflag-agent", join: path.posix.join }, { serverUrl: "https://x", noNewPrivileges: true })).toContain("\nNoNewPrivileges=yes\n");
  });

  it("refuses to move a host registered with another control plane, and needs a token for a new one", async () => {
    await release(path.join(root, "/opt/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/var/lib/redflag-agent"), "https://old.lan:8080");
    await expect(installService(host("linux").h, options("/opt/redflag-agent", "/var/lib/redflag-agent"))).rejects.toThrow(
      "this host is registered with https://old.lan:8080 as agent 6f1c2a57-0b1e-4a57-9a55-3f0f3cb2f1aa, not with https://redflag.lan:8080; to move it, run `redflag-agent uninstall` first and install again",
    );
    await expect(installService(host("linux").h, options("/opt/redflag-agent", "/var/lib/other"))).rejects.toThrow(
      "a registration token is required (--token or --token-file): this host is not registered yet",
    );
    await expect(installService(host("linux").h, options("/opt/nothing", "/var/lib/redflag-agent"))).rejects.toThrow(
      /^there is no release at \/opt\/nothing\/current\/bin\/redflag-agent: the install script/,
    );
  });

  it("leaves a redflag-agent on PATH that it did not make alone", async () => {
    await release(path.join(root, "/opt/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/var/lib/redflag-agent"));
    await mkdir(path.join(root, "usr/local/bin"), { recursive: true });
    await writeFile(path.join(root, "usr/local/bin/redflag-agent"), "someone else's");
    const { h, out } = host("linux");
    await installService(h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    expect(out).toContain("/usr/local/bin/redflag-agent exists and is not a link this installer made: left alone");
    await uninstallService(host("linux").h, { installDir: "/opt/redflag-agent", stateDir: "/var/lib/redflag-agent", keepState: false });
    expect(await readFile(path.join(root, "usr/local/bin/redflag-agent"), "utf8")).toBe("someone else's");
  });

  it("on a host with pacman, only with --aur creates the user AUR packages are built as, once, and uninstall removes only a user it made", async () => {
    await release(path.join(root, "/opt/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/var/lib/redflag-agent"));
    const bin = path.join(root, "arch-bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "pacman"), "#!/bin/sh\n", { mode: 0o755 });
    let userExists = false;
    const arch = () => {
      const made = host("linux", (argv) => {
        if (argv[0] === "getent") return userExists ? ok("redflag-aur:x:970:970::/var/lib/redflag-aur:/usr/bin/nologin\n") : failed(2, "");
        if (argv[0] === "useradd") userExists = true;
        if (argv[0] === "userdel") userExists = false;
        return ok();
      });
      made.h.env = { PATH: bin };
      return made;
    };
    const plain = arch();
    await installService(plain.h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    expect(plain.calls).toEqual(["getent passwd redflag-aur"]);
    expect(plain.out).toContain("AUR updates are reported but not installed here; to build them as an unprivileged user: sudo redflag-agent install --aur");

    const first = arch();
    await installService(first.h, { ...options("/opt/redflag-agent", "/var/lib/redflag-agent"), aur: true });
    expect(first.calls).toEqual([
      "getent passwd redflag-aur",
      "useradd --system --create-home --home-dir /var/lib/redflag-aur --shell /usr/bin/nologin redflag-aur",
    ]);
    expect(first.out).toContain("created the user redflag-aur (home /var/lib/redflag-aur): AUR packages are built as it, never as root");

    // Run again (an upgrade in place): the user exists, and is still this installer's to remove.
    const again = arch();
    await installService(again.h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    expect(again.calls).toEqual(["getent passwd redflag-aur"]);
    const record = JSON.parse(await readFile(path.join(root, "opt/redflag-agent/install.json"), "utf8")) as { buildUser: string | null };
    expect(record.buildUser).toBe("redflag-aur");

    const gone = arch();
    await uninstallService(gone.h, { installDir: "/opt/redflag-agent", stateDir: "/var/lib/redflag-agent", keepState: false });
    expect(gone.calls).toContain("userdel --remove redflag-aur");
    expect(userExists).toBe(false);

    // A user that was there before the install is left alone.
    userExists = true;
    await release(path.join(root, "/opt/redflag-agent"), ["redflag-agent"]);
    await registered(path.join(root, "/var/lib/redflag-agent"));
    await installService(arch().h, options("/opt/redflag-agent", "/var/lib/redflag-agent"));
    const theirs = arch();
    await uninstallService(theirs.h, { installDir: "/opt/redflag-agent", stateDir: "/var/lib/redflag-agent", keepState: false });
    expect(theirs.calls.some((c) => c.startsWith("userdel"))).toBe(false);
  });
});

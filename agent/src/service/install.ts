// `redflag-agent install` and `redflag-agent uninstall`: the agent as a service of the host's
// service manager. The install scripts the control plane serves (/install/linux.sh, macos.sh,
// windows.ps1) download and verify a release, unpack it to <install dir>/releases/<version>,
// point <install dir>/current at it, and then hand over to `install`, which registers the
// agent (or keeps the identity it already has), writes the service definition, and starts it.
// Everything it creates is recorded in <install dir>/install.json, and `uninstall` removes
// exactly that.
import { access, chmod, copyFile, lstat, mkdir, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { spawn } from "node:child_process";
import path from "node:path";
import { AgentError, EXIT_USAGE } from "../errors.ts";
import type { Logger } from "../log.ts";
import { registerAgent } from "../register.ts";
import { describeFailure, runProcess, which, type ProcessResult } from "../run-process.ts";
import { AUR_BUILD_HOME, AUR_BUILD_USER, CREATE_BUILD_USER, ENABLE_AUR } from "../sources/pacman/aur.ts";
import { readIfExists, writeFileAtomic } from "../state/files.ts";
import { registrationFile } from "../state/registration.ts";
import { AGENT_VERSION } from "../version.ts";
import {
  agentExecutable,
  LAUNCHD_LABEL,
  LAUNCHD_PLIST_FILE,
  launchdPlist,
  pathFor,
  SYSTEMD_UNIT_FILE,
  SYSTEMD_UNIT_NAME,
  systemdUnit,
  WINDOWS_SERVICE_ID,
  WINDOWS_WRAPPER,
  WINDOWS_WRAPPER_XML,
  winswXml,
  type ServiceLayout,
} from "./definitions.ts";

export const BIN_LINK = "/usr/local/bin/redflag-agent";
export const INSTALL_RECORD = "install.json";

export function defaultInstallDir(platform: NodeJS.Platform, env: NodeJS.ProcessEnv): string {
  if (platform === "win32") return path.win32.join(env.ProgramFiles ?? "C:\\Program Files", "RedFlag", "agent");
  if (platform === "darwin") return "/usr/local/redflag-agent";
  return "/opt/redflag-agent";
}

type Run = (argv: readonly string[]) => Promise<ProcessResult>;

export interface ServiceHost {
  platform: NodeJS.Platform;
  // Every file is written under this directory instead of "/" (images, tests); the service
  // definitions still name the real paths.
  root: string;
  env: NodeJS.ProcessEnv;
  run?: Run;
  out: (line: string) => void;
  logger?: Logger;
}

export interface InstallOptions {
  installDir: string;
  stateDir: string;
  serverUrl: string | undefined;
  token: string | undefined;
  fingerprint: string | undefined;
  insecureHttp: boolean | undefined;
  caFile: string | undefined;
  machineIdSeed: string | undefined;
  start: boolean;
  // On a host with pacman: create the unprivileged user AUR packages are built as.
  aur?: boolean | undefined;
}

// What install.json records: what `uninstall` removes.
interface InstallRecord {
  version: 1;
  platform: NodeJS.Platform;
  agentVersion: string;
  installDir: string;
  stateDir: string;
  service: { kind: "systemd" | "launchd" | "winsw" | "none"; file: string | null };
  binLink: string | null;
  // The unprivileged user AUR packages are built as, when this install created it (hosts with
  // pacman; sources/pacman/aur.ts).
  buildUser?: string | null;
  agentId: string;
  installTime: string;
}

// Maps a path of the target system to where it is written: itself, or under the root prefix
// (a Windows path loses its drive colon and turns its backslashes around).
function hostPathFor(host: ServiceHost) {
  return (target: string): string => {
    if (host.root === "/" || host.root === "") return target;
    const posix = host.platform === "win32" ? target.replace(/^([A-Za-z]):/, "$1").replace(/\\/g, "/") : target;
    return path.join(host.root, posix);
  };
}

const exists = (file: string) => access(file).then(() => true, () => false);

function runner(host: ServiceHost): Run {
  return host.run ?? ((argv) => runProcess(argv, { timeoutMs: 120_000, env: host.env }));
}

// Runs a service manager command and fails the install with its own words when it fails.
async function must(run: Run, argv: string[], what: string): Promise<void> {
  const result = await run(argv);
  if (result.exitCode !== 0) throw new AgentError(`${describeFailure(what, result)} (\`${argv.join(" ")}\`)`, 1);
}

const sameServer = (a: string, b: string) => a.replace(/\/+$/, "").toLowerCase() === b.replace(/\/+$/, "").toLowerCase();

export async function installService(host: ServiceHost, opts: InstallOptions): Promise<void> {
  const at = hostPathFor(host);
  const join = pathFor(host.platform);
  const windows = host.platform === "win32";
  const layout: ServiceLayout = { installDir: opts.installDir, stateDir: opts.stateDir, join };
  const executable = agentExecutable(layout, windows);
  if (host.platform !== "linux" && host.platform !== "darwin" && !windows) {
    throw new AgentError(`redflag-agent install knows Linux, macOS and Windows, not ${host.platform}`, EXIT_USAGE);
  }
  if (!(await exists(at(executable)))) {
    throw new AgentError(
      `there is no release at ${executable}: the install script the control plane serves (/install/linux.sh, macos.sh, windows.ps1) puts one there before it runs this`,
      EXIT_USAGE,
    );
  }
  const run = runner(host);

  // 1. The identity: kept when this host is registered already (an install run again upgrades
  // in place), made with the token otherwise. Nothing else is touched when this fails.
  const existing = await registrationFile(at(opts.stateDir)).load();
  let agentId: string;
  if (existing) {
    if (opts.serverUrl && !sameServer(existing.serverUrl, opts.serverUrl)) {
      throw new AgentError(
        `this host is registered with ${existing.serverUrl} as agent ${existing.agentId}, not with ${opts.serverUrl}; ` +
          "to move it, run `redflag-agent uninstall` first and install again",
        EXIT_USAGE,
      );
    }
    agentId = existing.agentId;
    host.out(`already registered with ${existing.serverUrl} as agent ${agentId}: keeping this identity`);
  } else {
    if (!opts.serverUrl) throw new AgentError("--server is required: this host is not registered yet", EXIT_USAGE);
    if (!opts.token) throw new AgentError("a registration token is required (--token or --token-file): this host is not registered yet", EXIT_USAGE);
    const outcome = await registerAgent({
      stateDir: at(opts.stateDir),
      serverUrl: opts.serverUrl,
      token: opts.token,
      caFile: opts.caFile,
      fingerprint: opts.fingerprint,
      insecureHttp: opts.insecureHttp,
      machineIdSeed: opts.machineIdSeed,
      // Used once: no token stays on disk (the issue's promise for the one-line install).
      keepToken: false,
      ...(host.logger ? { logger: host.logger } : {}),
    });
    agentId = outcome.agentId;
    host.out(`registered with ${opts.serverUrl} as agent ${agentId}`);
    host.out(
      outcome.fingerprintChecked
        ? `pinned signing keys ${outcome.pinnedKeyIds.join(", ")}, vouched for by the key with the expected fingerprint`
        : `pinned signing keys ${outcome.pinnedKeyIds.join(", ")} on first use (no --fingerprint): compare ${outcome.pinnedKeyFingerprints.join(", ")} with the console's Security page`,
    );
  }

  // 2. The service definition, and the service started (or restarted, when it ran already).
  let service: InstallRecord["service"];
  const serverUrl = opts.serverUrl ?? existing?.serverUrl ?? "";
  if (host.platform === "linux") {
    if (await exists(at("/run/systemd/system"))) {
      const selinuxEnforcing = (await readIfExists(at("/sys/fs/selinux/enforce")))?.toString().trim() === "1";
      await writeDefinition(at(SYSTEMD_UNIT_FILE), systemdUnit(layout, { serverUrl, noNewPrivileges: !selinuxEnforcing }));
      await must(run, ["systemctl", "daemon-reload"], "systemctl daemon-reload");
      await must(run, ["systemctl", "enable", SYSTEMD_UNIT_NAME], "enabling the service");
      if (opts.start) await must(run, ["systemctl", "restart", SYSTEMD_UNIT_NAME], "starting the service");
      service = { kind: "systemd", file: SYSTEMD_UNIT_FILE };
      host.out(`service: ${SYSTEMD_UNIT_FILE} (enabled${opts.start ? ", started" : ""}; \`systemctl status redflag-agent\`, \`journalctl -u redflag-agent\`)`);
    } else {
      service = { kind: "none", file: null };
      host.out(
        `no systemd on this host: the agent is installed and registered but not started. Run \`${executable} run\` from your init system ` +
          `with REDFLAG_AGENT_INSTALL_DIR=${opts.installDir} and REDFLAG_AGENT_STATE_DIR=${opts.stateDir}, restarting it whenever it exits (the agent's README has an OpenRC service)`,
      );
    }
  } else if (host.platform === "darwin") {
    await writeDefinition(at(LAUNCHD_PLIST_FILE), launchdPlist(layout));
    if (opts.start) {
      // Unloaded first when it was loaded, so launchd reads the new definition.
      await run(["launchctl", "bootout", `system/${LAUNCHD_LABEL}`]);
      await must(run, ["launchctl", "bootstrap", "system", LAUNCHD_PLIST_FILE], "loading the launchd daemon");
    }
    service = { kind: "launchd", file: LAUNCHD_PLIST_FILE };
    host.out(`service: ${LAUNCHD_PLIST_FILE} (${opts.start ? "loaded and started" : "not loaded"}; \`sudo launchctl print system/${LAUNCHD_LABEL}\`)`);
  } else {
    // WinSW's executable and XML live beside each other in the install directory, outside the
    // releases, so an upgrade never swaps the wrapper under the Service Control Manager.
    const wrapper = join(opts.installDir, WINDOWS_WRAPPER);
    const shipped = join(opts.installDir, "current", "bin", WINDOWS_WRAPPER);
    if (!(await exists(at(shipped)))) throw new AgentError(`the release has no ${shipped}; it is not a Windows build of the agent`, EXIT_USAGE);
    await copyFile(at(shipped), at(wrapper));
    // WinSW 1.x is a .NET program: its .config lets it run on .NET 4, which Windows 10 has.
    if (await exists(at(`${shipped}.config`))) await copyFile(at(`${shipped}.config`), at(`${wrapper}.config`));
    await writeDefinition(at(join(opts.installDir, WINDOWS_WRAPPER_XML)), winswXml(layout));
    const installed = (await run([scExe(host.env), "query", WINDOWS_SERVICE_ID])).exitCode === 0;
    if (!installed) await must(run, [wrapper, "install"], "registering the Windows service");
    if (opts.start) {
      if (installed) await run([wrapper, "stop"]);
      await must(run, [wrapper, "start"], "starting the Windows service");
    }
    service = { kind: "winsw", file: join(opts.installDir, WINDOWS_WRAPPER_XML) };
    host.out(`service: ${WINDOWS_SERVICE_ID} (automatic start, restarts on failure${opts.start ? ", started" : ""}; \`Get-Service ${WINDOWS_SERVICE_ID}\`)`);
  }

  // 3. On hosts with pacman, with --aur: the unprivileged user AUR packages are built as
  // (makepkg and the AUR helpers refuse root, and a PKGBUILD is anyone's script). Made once;
  // uninstall removes it only when this installer made it.
  const previous = await readIfExists(at(join(opts.installDir, INSTALL_RECORD)));
  let buildUser = previous ? ((JSON.parse(previous.toString("utf8")) as Partial<InstallRecord>).buildUser ?? null) : null;
  if (host.platform === "linux" && (await which("pacman", host.env.PATH ?? ""))) {
    if ((await run(["getent", "passwd", AUR_BUILD_USER])).exitCode === 0) {
      host.out(`AUR packages are built as the user ${AUR_BUILD_USER}, which exists`);
    } else if (!opts.aur) {
      host.out(`AUR updates are reported but not installed here; to build them as an unprivileged user: ${ENABLE_AUR}`);
    } else {
      await must(run, CREATE_BUILD_USER.split(" "), `creating the user ${AUR_BUILD_USER} that builds AUR packages`);
      buildUser = AUR_BUILD_USER;
      host.out(`created the user ${AUR_BUILD_USER} (home ${AUR_BUILD_HOME}): AUR packages are built as it, never as root`);
    }
  }

  // 4. `redflag-agent` on PATH (Linux, macOS), unless something else has that name.
  let binLink: string | null = null;
  if (!windows) {
    const link = at(BIN_LINK);
    const current = await lstat(link).catch(() => undefined);
    if (!current || current.isSymbolicLink()) {
      await mkdir(path.dirname(link), { recursive: true });
      await rm(link, { force: true });
      await symlink(executable, link);
      binLink = BIN_LINK;
    } else {
      host.out(`${BIN_LINK} exists and is not a link this installer made: left alone`);
    }
  }

  const record: InstallRecord = {
    version: 1,
    platform: host.platform,
    agentVersion: AGENT_VERSION,
    installDir: opts.installDir,
    stateDir: opts.stateDir,
    service,
    binLink,
    buildUser,
    agentId,
    installTime: new Date().toISOString(),
  };
  await writeFileAtomic(at(join(opts.installDir, INSTALL_RECORD)), JSON.stringify(record, null, 2) + "\n");
  host.out(`installed agent ${AGENT_VERSION} in ${opts.installDir}; state in ${opts.stateDir}`);
  host.out(`to remove it: ${windows ? `& '${executable}' uninstall` : "sudo redflag-agent uninstall"}`);
}

async function writeDefinition(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text, { mode: 0o644 });
  await chmod(file, 0o644);
}

const scExe = (env: NodeJS.ProcessEnv) => path.win32.join(env.SystemRoot ?? "C:\\Windows", "System32", "sc.exe");

export interface UninstallOptions {
  installDir: string;
  stateDir: string;
  keepState: boolean;
}

// Stops the service and removes what install made: the service definition, the link on PATH,
// the install directory and (unless kept) the state directory. Safe to run twice.
export async function uninstallService(host: ServiceHost, opts: UninstallOptions): Promise<void> {
  const at = hostPathFor(host);
  const join = pathFor(host.platform);
  const run = runner(host);
  const recorded = await readIfExists(at(join(opts.installDir, INSTALL_RECORD)));
  const record = recorded ? (JSON.parse(recorded.toString("utf8")) as Partial<InstallRecord>) : {};
  const stateDir = record.stateDir ?? opts.stateDir;
  const agentId = record.agentId ?? (await registrationFile(at(stateDir)).load().catch(() => undefined))?.agentId;

  const kind = record.service?.kind ?? (host.platform === "linux" ? "systemd" : host.platform === "darwin" ? "launchd" : "winsw");
  if (kind === "systemd") {
    const file = at(record.service?.file ?? SYSTEMD_UNIT_FILE);
    if (await exists(file)) {
      await run(["systemctl", "disable", "--now", SYSTEMD_UNIT_NAME]);
      await rm(file, { force: true });
      await run(["systemctl", "daemon-reload"]);
      host.out(`stopped and removed the service ${SYSTEMD_UNIT_FILE}`);
    }
  } else if (kind === "launchd") {
    const file = at(record.service?.file ?? LAUNCHD_PLIST_FILE);
    if (await exists(file)) {
      await run(["launchctl", "bootout", `system/${LAUNCHD_LABEL}`]);
      await rm(file, { force: true });
      host.out(`stopped and removed the launchd daemon ${LAUNCHD_PLIST_FILE}`);
    }
  } else if (kind === "winsw") {
    const wrapper = join(opts.installDir, WINDOWS_WRAPPER);
    if (await exists(at(wrapper))) {
      await run([wrapper, "stop"]);
      await must(run, [wrapper, "uninstall"], "removing the Windows service");
      host.out(`stopped and removed the service ${WINDOWS_SERVICE_ID}`);
    }
  }

  const link = record.binLink ?? (host.platform === "win32" ? null : BIN_LINK);
  if (link) {
    const target = await readlink(at(link)).catch(() => undefined);
    if (target?.startsWith(opts.installDir)) {
      await rm(at(link), { force: true });
      host.out(`removed ${link}`);
    }
  }

  if (record.buildUser) {
    const removed = await run(["userdel", "--remove", record.buildUser]);
    host.out(
      removed.exitCode === 0
        ? `removed the user ${record.buildUser} that built AUR packages`
        : `${describeFailure(`userdel --remove ${record.buildUser}`, removed)}: remove the user yourself`,
    );
  }

  if (!opts.keepState && (await exists(at(stateDir)))) {
    await rm(at(stateDir), { recursive: true, force: true });
    host.out(`removed the state directory ${stateDir} (the agent's key and credentials)`);
  }
  if (await exists(at(opts.installDir))) {
    if (host.platform === "win32" && host.root === "/") {
      // A running executable cannot be deleted on Windows: a detached shell removes the
      // directory once this process has exited.
      spawn(join(host.env.SystemRoot ?? "C:\\Windows", "System32", "cmd.exe"), ["/d", "/c", `timeout /t 3 /nobreak >nul & rmdir /s /q "${opts.installDir}"`], {
        detached: true,
        stdio: "ignore",
        windowsHide: true,
      }).unref();
      host.out(`removing ${opts.installDir} in a few seconds`);
    } else {
      await rm(at(opts.installDir), { recursive: true, force: true });
      host.out(`removed ${opts.installDir}`);
    }
  }
  if (agentId) {
    host.out(`the control plane still lists agent ${agentId}; an admin removes it from the fleet with: redflag agents decommission ${agentId}`);
  }
}

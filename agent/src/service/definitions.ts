// The service definitions `redflag-agent install` writes: a systemd unit on Linux, a launchd
// daemon on macOS, a WinSW service on Windows. Each runs <install dir>/current/bin/redflag-agent
// run, restarts it whenever it exits (update_agent exits 3 so the new release starts), and gives
// a running command time to finish on stop (the agent's stop grace is 30 s).
import path from "node:path";

export interface ServiceLayout {
  installDir: string;
  stateDir: string;
  // Path joining for the target OS (posix on Linux and macOS, win32 on Windows).
  join: (...parts: string[]) => string;
}

export const SYSTEMD_UNIT_NAME = "redflag-agent.service";
export const SYSTEMD_UNIT_FILE = "/etc/systemd/system/redflag-agent.service";
export const LAUNCHD_LABEL = "io.redflag.agent";
export const LAUNCHD_PLIST_FILE = `/Library/LaunchDaemons/${LAUNCHD_LABEL}.plist`;
export const LAUNCHD_LOG_FILE = "/var/log/redflag-agent.log";
export const WINDOWS_SERVICE_ID = "RedFlagAgent";
// WinSW reads its configuration from the XML file beside it with the same base name.
export const WINDOWS_WRAPPER = "redflag-agent-service.exe";
export const WINDOWS_WRAPPER_XML = "redflag-agent-service.xml";

export const agentExecutable = (layout: ServiceLayout, windows = false) =>
  layout.join(layout.installDir, "current", "bin", windows ? "redflag-agent.exe" : "redflag-agent");

// systemd's own quoting for a word in ExecStart= or Environment=: double quotes, with
// backslashes and double quotes escaped; "%" is systemd's specifier character.
const systemdWord = (text: string) => `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%")}"`;

// The agent runs as root: package managers need it. The unit takes away what package managers
// do not need: its own /tmp, no way to change the clock or hostname, no real-time scheduling,
// the cgroup tree read-only. The file system stays writable where package managers and their
// maintainer scripts write (/usr, /etc, /var, /opt, /boot, /srv, /run for the sockets of
// systemd and Docker, /snap, /nix, Homebrew's /home/linuxbrew) and read-only elsewhere (the
// rest of /home, /root, /mnt, /media …), as ProtectSystem=strict with ReadWritePaths does.
// Left out on purpose: ProtectKernelModules (it hides /usr/lib/modules, which kernel packages
// write), ProtectKernelTunables (procps runs sysctl --system), SystemCallArchitectures=native
// (multiarch packages' scripts may run 32-bit programs). NoNewPrivileges is set unless SELinux
// enforces: there it would stop the domain transitions that rpm scriptlets need.
export function systemdUnit(layout: ServiceLayout, opts: { serverUrl: string; noNewPrivileges: boolean }): string {
  const rw = ["/usr", "/etc", "/var", "/opt", "/boot", "/srv", "/run", "-/snap", "-/nix", "-/home/linuxbrew", layout.stateDir, layout.installDir];
  return [
    "# Written by `redflag-agent install`; `redflag-agent uninstall` removes it.",
    "[Unit]",
    "Description=RedFlag agent (update management)",
    `Documentation=${opts.serverUrl.replace(/%/g, "%%")}`,
    "Wants=network-online.target",
    "After=network-online.target",
    "",
    "[Service]",
    "Type=simple",
    `Environment=${systemdWord(`REDFLAG_AGENT_INSTALL_DIR=${layout.installDir}`)}`,
    `Environment=${systemdWord(`REDFLAG_AGENT_STATE_DIR=${layout.stateDir}`)}`,
    `ExecStart=${systemdWord(agentExecutable(layout))} run`,
    "Restart=always",
    "RestartSec=5",
    // SIGTERM to the agent only (it stops its command within its grace), then SIGKILL to all.
    "KillMode=mixed",
    "TimeoutStopSec=45",
    "UMask=0022",
    `NoNewPrivileges=${opts.noNewPrivileges ? "yes" : "no"}`,
    "PrivateTmp=yes",
    "ProtectSystem=strict",
    `ReadWritePaths=${rw.map((p) => (p.includes(" ") ? systemdWord(p) : p)).join(" ")}`,
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectControlGroups=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

const xml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

// A launchd daemon: started at boot and kept alive (started again whenever it exits, at most
// every 10 s).
export function launchdPlist(layout: ServiceLayout): string {
  const string = (text: string) => `<string>${xml(text)}</string>`;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    "<!-- Written by `redflag-agent install`; `redflag-agent uninstall` removes it. -->",
    '<plist version="1.0">',
    "<dict>",
    `  <key>Label</key>${string(LAUNCHD_LABEL)}`,
    `  <key>ProgramArguments</key><array>${string(agentExecutable(layout))}${string("run")}</array>`,
    "  <key>EnvironmentVariables</key>",
    "  <dict>",
    `    <key>REDFLAG_AGENT_INSTALL_DIR</key>${string(layout.installDir)}`,
    `    <key>REDFLAG_AGENT_STATE_DIR</key>${string(layout.stateDir)}`,
    "    <key>PATH</key><string>/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin</string>",
    "  </dict>",
    "  <key>RunAtLoad</key><true/>",
    "  <key>KeepAlive</key><true/>",
    "  <key>ThrottleInterval</key><integer>10</integer>",
    "  <key>ExitTimeOut</key><integer>45</integer>",
    `  <key>StandardOutPath</key>${string(LAUNCHD_LOG_FILE)}`,
    `  <key>StandardErrorPath</key>${string(LAUNCHD_LOG_FILE)}`,
    "</dict>",
    "</plist>",
    "",
  ].join("\n");
}

// WinSW (https://github.com/winsw/winsw) turns the agent into a real Windows service: it talks
// to the Service Control Manager, restarts the agent when it exits (recovery actions: again
// after 10 s, 10 s, then 60 s; the count resets after a day), and stops it with Ctrl+C first.
export function winswXml(layout: ServiceLayout): string {
  return [
    "<!-- Written by `redflag-agent install`; `redflag-agent uninstall` removes it. -->",
    "<service>",
    `  <id>${WINDOWS_SERVICE_ID}</id>`,
    "  <name>RedFlag agent</name>",
    "  <description>RedFlag agent: polls the control plane, verifies signed commands, installs updates.</description>",
    `  <executable>${xml(agentExecutable(layout, true))}</executable>`,
    "  <arguments>run</arguments>",
    `  <env name="REDFLAG_AGENT_INSTALL_DIR" value="${xml(layout.installDir)}"/>`,
    `  <env name="REDFLAG_AGENT_STATE_DIR" value="${xml(layout.stateDir)}"/>`,
    "  <startmode>Automatic</startmode>",
    "  <delayedAutoStart>true</delayedAutoStart>",
    "  <onfailure action=\"restart\" delay=\"10 sec\"/>",
    "  <onfailure action=\"restart\" delay=\"10 sec\"/>",
    "  <onfailure action=\"restart\" delay=\"60 sec\"/>",
    "  <resetfailure>1 day</resetfailure>",
    "  <stoptimeout>45 sec</stoptimeout>",
    `  <logpath>${xml(layout.join(layout.stateDir, "logs"))}</logpath>`,
    '  <log mode="roll-by-size"><sizeThreshold>10240</sizeThreshold><keepFiles>5</keepFiles></log>',
    "</service>",
    "",
  ].join("\n");
}

export const pathFor = (platform: NodeJS.Platform) => (platform === "win32" ? path.win32.join : path.posix.join);

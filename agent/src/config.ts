import { envValues } from "@redflag/common/config-values";
import path from "node:path";

import { defaultHooksDir } from "./executors/reboot-hooks.ts";
import { windowsDir } from "./platform.ts";

export const DEFAULT_STATE_DIR = "/var/lib/redflag-agent";
export const DEFAULT_STATE_DIR_MACOS = "/Library/Application Support/RedFlag/agent";
// Under %ProgramData%; the agent gives the directory an ACL for SYSTEM and Administrators only
// when it creates it (state/files.ts).
export const DEFAULT_STATE_DIR_WINDOWS = "%ProgramData%\\RedFlag\\agent";

// The default state directory on this OS, as help texts print it.
export function defaultStateDirText(platform: NodeJS.Platform = process.platform): string {
  if (platform === "win32") return DEFAULT_STATE_DIR_WINDOWS;
  if (platform === "darwin") return DEFAULT_STATE_DIR_MACOS;
  return DEFAULT_STATE_DIR;
}

// The default state directory on this OS, %ProgramData% expanded (C:\ProgramData when unset).
export function defaultStateDir(env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): string {
  if (platform === "win32") return `${windowsDir(env.ProgramData ?? env.PROGRAMDATA, "C:\\ProgramData")}\\RedFlag\\agent`;
  return defaultStateDirText(platform);
}

export interface Config {
  readonly stateDir: string;
  // PEM bundle trusted for an https:// control plane, on top of the system roots.
  readonly caFile: string | undefined;
  // Mixed into the machine ID so several agents can run on one host (tests, containers).
  readonly machineIdSeed: string | undefined;
  // Whether scan_updates refreshes the APT lists first (only possible as root).
  readonly aptRefresh: boolean;
  readonly logLevel: string;
  // Long-poll wait per poll; 0 polls without waiting. Capped by the poll interval and 60 s.
  readonly longPollSeconds: number;
  // How long a running command may still run after SIGTERM before it is stopped.
  readonly stopGraceSeconds: number;
  // Where update_agent unpacks releases and switches the "current" symlink; unset means this
  // agent's installation is managed by something else (a package) and update_agent refuses.
  readonly installDir: string | undefined;
  // How long a new release on trial has to complete its first poll cycle (upgrade-trial.ts).
  readonly upgradeTrialSeconds: number;
  // Where the reboot hooks a Reboot command may name live (executors/reboot-hooks.ts):
  // REDFLAG_AGENT_HOOKS_DIR, else /etc/redflag-agent/hooks on Linux.
  readonly hooksDir: string;
}

// Values command-line flags may set; they win over the environment.
export interface ConfigFlags {
  stateDir?: string | undefined;
  caFile?: string | undefined;
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid environment: ${problems.join("; ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export const defaultConfig: Config = Object.freeze({
  stateDir: defaultStateDir({}),
  caFile: undefined,
  machineIdSeed: undefined,
  aptRefresh: true,
  logLevel: "info",
  longPollSeconds: 60,
  stopGraceSeconds: 30,
  installDir: undefined,
  upgradeTrialSeconds: 300,
  hooksDir: defaultHooksDir({}),
});

// Reads every REDFLAG_AGENT_* setting once, reports all problems together, and returns a frozen object.
export function loadConfig(env: NodeJS.ProcessEnv, flags: ConfigFlags = {}, cwd = process.cwd(), platform: NodeJS.Platform = process.platform): Config {
  const paths = platform === "win32" ? path.win32 : path.posix;
  const problems: string[] = [];
  const { integer, boolean } = envValues(env, problems);

  const stateDir = flags.stateDir || env.REDFLAG_AGENT_STATE_DIR || defaultStateDir(env, platform);
  const caFile = flags.caFile || env.REDFLAG_AGENT_CA_FILE || undefined;
  const logLevel = env.REDFLAG_AGENT_LOG_LEVEL || defaultConfig.logLevel;
  if (!LOG_LEVELS.has(logLevel)) problems.push(`REDFLAG_AGENT_LOG_LEVEL=${logLevel} must be one of ${[...LOG_LEVELS].join(", ")}`);

  const config: Config = {
    stateDir: paths.resolve(cwd, stateDir),
    caFile: caFile ? paths.resolve(cwd, caFile) : undefined,
    machineIdSeed: env.REDFLAG_AGENT_MACHINE_ID_SEED || undefined,
    aptRefresh: boolean("REDFLAG_AGENT_APT_REFRESH", defaultConfig.aptRefresh),
    logLevel,
    longPollSeconds: integer("REDFLAG_AGENT_LONG_POLL_SECONDS", defaultConfig.longPollSeconds, 0, 60),
    stopGraceSeconds: integer("REDFLAG_AGENT_STOP_GRACE_SECONDS", defaultConfig.stopGraceSeconds, 0, 3600),
    installDir: env.REDFLAG_AGENT_INSTALL_DIR ? paths.resolve(cwd, env.REDFLAG_AGENT_INSTALL_DIR) : undefined,
    upgradeTrialSeconds: integer("REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS", defaultConfig.upgradeTrialSeconds, 1, 86400),
    hooksDir: paths.resolve(cwd, env.REDFLAG_AGENT_HOOKS_DIR || defaultHooksDir(env, platform)),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

import path from "node:path";

export const DEFAULT_STATE_DIR = "/var/lib/redflag-agent";

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
  stateDir: DEFAULT_STATE_DIR,
  caFile: undefined,
  machineIdSeed: undefined,
  aptRefresh: true,
  logLevel: "info",
  longPollSeconds: 60,
  stopGraceSeconds: 30,
  installDir: undefined,
  upgradeTrialSeconds: 300,
});

// Reads every REDFLAG_AGENT_* setting once, reports all problems together, and returns a frozen object.
export function loadConfig(env: NodeJS.ProcessEnv, flags: ConfigFlags = {}, cwd = process.cwd()): Config {
  const problems: string[] = [];
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const text = env[name];
    if (text === undefined || text === "") return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name}=${text} must be a whole number from ${min} to ${max}`);
      return fallback;
    }
    return value;
  };
  const boolean = (name: string, fallback: boolean): boolean => {
    const text = env[name]?.toLowerCase();
    if (text === undefined || text === "") return fallback;
    if (["1", "true", "yes", "on"].includes(text)) return true;
    if (["0", "false", "no", "off"].includes(text)) return false;
    problems.push(`${name}=${env[name]} must be 1 or 0`);
    return fallback;
  };

  const stateDir = flags.stateDir || env.REDFLAG_AGENT_STATE_DIR || DEFAULT_STATE_DIR;
  const caFile = flags.caFile || env.REDFLAG_AGENT_CA_FILE || undefined;
  const logLevel = env.REDFLAG_AGENT_LOG_LEVEL || defaultConfig.logLevel;
  if (!LOG_LEVELS.has(logLevel)) problems.push(`REDFLAG_AGENT_LOG_LEVEL=${logLevel} must be one of ${[...LOG_LEVELS].join(", ")}`);

  const config: Config = {
    stateDir: path.resolve(cwd, stateDir),
    caFile: caFile ? path.resolve(cwd, caFile) : undefined,
    machineIdSeed: env.REDFLAG_AGENT_MACHINE_ID_SEED || undefined,
    aptRefresh: boolean("REDFLAG_AGENT_APT_REFRESH", defaultConfig.aptRefresh),
    logLevel,
    longPollSeconds: integer("REDFLAG_AGENT_LONG_POLL_SECONDS", defaultConfig.longPollSeconds, 0, 60),
    stopGraceSeconds: integer("REDFLAG_AGENT_STOP_GRACE_SECONDS", defaultConfig.stopGraceSeconds, 0, 3600),
    installDir: env.REDFLAG_AGENT_INSTALL_DIR ? path.resolve(cwd, env.REDFLAG_AGENT_INSTALL_DIR) : undefined,
    upgradeTrialSeconds: integer("REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS", defaultConfig.upgradeTrialSeconds, 1, 86400),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

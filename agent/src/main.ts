import { Command, CommanderError } from "commander";
import { createReadStream } from "node:fs";
import path from "node:path";
import { ConfigError, defaultStateDir, loadConfig, type Config, type ConfigFlags } from "./config.ts";
import { AgentError, EXIT_FAILURE, EXIT_OK, EXIT_RESTART, EXIT_USAGE } from "./errors.ts";
import { createLogger } from "./log.ts";
import { createHostAccess } from "./platform.ts";
import { runAgent } from "./loop.ts";
import { registerAgent } from "./register.ts";
import { defaultInstallDir, installService, uninstallService } from "./service/install.ts";
import { StateError } from "./state/files.ts";
import { TRIAL_ENV } from "./state/upgrade.ts";
import { runPendingUpgrade } from "./upgrade-trial.ts";
import { formatStatus, readStatus } from "./status.ts";
import { AGENT_VERSION } from "./version.ts";

const exitCodesHelp = (stateDir: string) => `
Exit codes: 0 success, 1 failure (control plane unreachable or refusing), 2 usage or state
problem (bad flags or environment, not registered, damaged state directory), 3 restart me:
update_agent installed a new release (the next start tries it), or a new release on trial
completed a poll cycle and \`current\` now points at it (the service manager starts it).

Environment: REDFLAG_AGENT_STATE_DIR (default ${stateDir}), REDFLAG_AGENT_CA_FILE,
REDFLAG_AGENT_LOG_LEVEL, REDFLAG_AGENT_APT_REFRESH=0 (never run apt-get update),
REDFLAG_AGENT_LONG_POLL_SECONDS (0-60), REDFLAG_AGENT_STOP_GRACE_SECONDS,
REDFLAG_AGENT_INSTALL_DIR (where update_agent unpacks releases),
REDFLAG_AGENT_UPGRADE_TRIAL_SECONDS (default 300: how long a new release has to complete its
first poll cycle before the agent stays on the release it runs), and
REDFLAG_AGENT_MACHINE_ID_SEED: mixed into the machine ID so several agents can share one host
(tests, containers); each needs its own state directory.`;

// The CLI: parses flags, loads the config once, and hands over. Returns the exit code.
export async function main(argv: string[], env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): Promise<number> {
  let exitCode = EXIT_OK;
  const config = (flags: ConfigFlags): Config => loadConfig(env, flags, process.cwd(), platform);
  const host = createHostAccess(env, platform);
  const stateDirOption = `state directory (default ${defaultStateDir(env, platform)})`;

  const program = new Command("redflag-agent")
    .description("RedFlag agent: polls the control plane, verifies signed commands, runs them and reports.")
    .version(AGENT_VERSION)
    .addHelpText("after", exitCodesHelp(defaultStateDir(env, platform)))
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`redflag-agent: ${text.replace(/^error: /, "")}`) });

  program
    .command("register")
    .description("enrol this host with a control plane, generating the agent key and pinning the signing keys")
    .requiredOption("--server <url>", "control plane URL (http:// for h2c, https:// for TLS)")
    .option("--token <token>", "registration token")
    .option("--token-file <file>", "read the registration token from a file, or from standard input with - (keeps it out of the process list)")
    .option("--state-dir <dir>", stateDirOption)
    .option("--ca <file>", "PEM CA bundle to trust for an https:// server")
    .option("--fingerprint <sha256>", "pin only signing keys vouched for by the key with this fingerprint (as `redflag tokens create` and the console show it)")
    .option("--insecure-http", "allow plain http:// to a server that is not on this machine (needs --fingerprint)")
    .action(async (opts: { server: string; token?: string; tokenFile?: string; stateDir?: string; ca?: string; fingerprint?: string; insecureHttp?: boolean }) => {
      const cfg = config({ stateDir: opts.stateDir, caFile: opts.ca });
      const token = opts.tokenFile ? await readToken(opts.tokenFile) : opts.token;
      if (!token) throw new AgentError("a registration token is required: --token or --token-file", EXIT_USAGE);
      const outcome = await registerAgent({
        stateDir: cfg.stateDir,
        serverUrl: opts.server,
        token,
        caFile: cfg.caFile,
        fingerprint: opts.fingerprint,
        insecureHttp: opts.insecureHttp,
        machineIdSeed: cfg.machineIdSeed,
        host,
        logger: createLogger(cfg.logLevel),
      });
      process.stdout.write(
        `registered as agent ${outcome.agentId}; pinned signing keys: ${outcome.pinnedKeyIds.join(", ")}\n` +
          outcome.pinnedKeyFingerprints.map((f) => `  fingerprint ${f}\n`).join("") +
          (outcome.fingerprintChecked
            ? "signed by the key with the expected fingerprint\n"
            : "no --fingerprint given: compare the fingerprints above with the console's Security page\n"),
      );
    });

  program
    .command("run")
    .description("poll for commands until stopped (SIGTERM/SIGINT), or once with --once")
    .option("--state-dir <dir>", stateDirOption)
    .option("--ca <file>", "PEM CA bundle to trust for an https:// server (overrides the one given at register)")
    .option("--once", "one cycle: report, poll without waiting, run what came, report; then exit")
    .action(async (opts: { stateDir?: string; ca?: string; once?: boolean }) => {
      const cfg = config({ stateDir: opts.stateDir, caFile: opts.ca });
      const logger = createLogger(cfg.logLevel);
      const stop = new AbortController();
      let signals = 0;
      // A release on trial may get SIGTERM twice, from the service manager (to every process of
      // the service) and from the release that supervises it; only the first counts, and that
      // parent kills it if it does not stop in time.
      const onTrial = Boolean(env[TRIAL_ENV]);
      const onSignal = (signal: NodeJS.Signals) => {
        if (++signals > 1 && !onTrial) {
          logger.warn({ signal }, "second signal: exiting without waiting");
          process.exit(EXIT_FAILURE);
        }
        logger.info({ signal }, "signal received");
        stop.abort();
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
      // A new release on trial is started by the release that installed it, with TRIAL_ENV; its
      // own child processes (package managers) do not need it.
      const childEnv = { ...env };
      delete childEnv[TRIAL_ENV];
      try {
        // A verified release waiting for its trial: this release runs it as a child and
        // switches to it only once it has completed a poll cycle (see upgrade-trial.ts).
        if (cfg.installDir && !opts.once && !onTrial) {
          const trial = await runPendingUpgrade({
            installDir: cfg.installDir,
            args: argv,
            env: childEnv,
            trialSeconds: cfg.upgradeTrialSeconds,
            stopGraceSeconds: cfg.stopGraceSeconds,
            signal: stop.signal,
            logger,
          });
          if (trial.outcome === "stopped") return;
          if (trial.outcome === "switched") {
            logger.info({ version: trial.version, pruned: trial.pruned }, "exiting so the service manager starts the new release");
            exitCode = EXIT_RESTART;
            return;
          }
        }
        const summary = await runAgent({ ...cfg, once: Boolean(opts.once), signal: stop.signal, logger, env: childEnv, host, upgradeTrial: onTrial });
        if (summary.restart) {
          logger.info({ reason: summary.restart }, "exiting so the service manager starts the agent again; that start tries the new release");
          exitCode = EXIT_RESTART;
        }
      } finally {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    });

  program
    .command("install")
    .description("install this release as a service (systemd, launchd or a Windows service), register it unless this host is registered already, and start it; the control plane's install scripts run this")
    .option("--server <url>", "control plane URL (needed unless this host is registered already)")
    .option("--token <token>", "registration token")
    .option("--token-file <file>", "read the registration token from a file, or from standard input with -")
    .option("--fingerprint <sha256>", "pin only signing keys vouched for by the key with this fingerprint")
    .option("--insecure-http", "allow plain http:// to a server that is not on this machine (needs --fingerprint)")
    .option("--ca <file>", "PEM CA bundle to trust for an https:// server")
    .option("--state-dir <dir>", stateDirOption)
    .option("--install-dir <dir>", `where the releases live (default ${defaultInstallDir(platform, env)})`)
    .option("--root <dir>", "write every file under this directory instead of / (building an image, tests)", "/")
    .option("--no-start", "write and enable the service without starting it")
    .option("--aur", "on a host with pacman: let the agent build AUR updates, as the unprivileged user redflag-aur it creates (this trusts the AUR's maintainers with this host)")
    .action(async (opts: { server?: string; token?: string; tokenFile?: string; fingerprint?: string; insecureHttp?: boolean; ca?: string; stateDir?: string; installDir?: string; root: string; start: boolean; aur?: boolean }) => {
      const cfg = config({ stateDir: opts.stateDir, caFile: opts.ca });
      const token = opts.tokenFile ? await readToken(opts.tokenFile) : opts.token;
      await installService(
        { platform, root: path.resolve(opts.root), env, out: (line) => process.stdout.write(`${line}\n`), logger: createLogger(env.REDFLAG_AGENT_LOG_LEVEL ? cfg.logLevel : "warn") },
        {
          installDir: opts.installDir ? path.resolve(opts.installDir) : (cfg.installDir ?? defaultInstallDir(platform, env)),
          stateDir: cfg.stateDir,
          serverUrl: opts.server,
          token,
          fingerprint: opts.fingerprint,
          insecureHttp: opts.insecureHttp,
          caFile: cfg.caFile,
          machineIdSeed: cfg.machineIdSeed,
          start: opts.start,
          aur: Boolean(opts.aur),
        },
      );
    });

  program
    .command("uninstall")
    .description("stop and remove the service, the installed releases and the state directory (the agent's key and credentials)")
    .option("--state-dir <dir>", stateDirOption)
    .option("--install-dir <dir>", `where the releases live (default ${defaultInstallDir(platform, env)})`)
    .option("--keep-state", "keep the state directory, so installing again keeps this agent's identity")
    .option("--root <dir>", "remove files under this directory instead of / (tests)", "/")
    .action(async (opts: { stateDir?: string; installDir?: string; keepState?: boolean; root: string }) => {
      const cfg = config({ stateDir: opts.stateDir });
      await uninstallService(
        { platform: platform, root: path.resolve(opts.root), env, out: (line) => process.stdout.write(`${line}\n`) },
        {
          installDir: opts.installDir ? path.resolve(opts.installDir) : (cfg.installDir ?? defaultInstallDir(platform, env)),
          stateDir: cfg.stateDir,
          keepState: Boolean(opts.keepState),
        },
      );
    });

  program
    .command("status")
    .description("show the agent ID, server, pinned keys, last sequence and journal size (no secrets)")
    .option("--state-dir <dir>", stateDirOption)
    .option("--json", "print JSON")
    .action(async (opts: { stateDir?: string; json?: boolean }) => {
      const cfg = config({ stateDir: opts.stateDir });
      const status = await readStatus({ stateDir: cfg.stateDir, machineIdSeed: cfg.machineIdSeed, host });
      process.stdout.write(opts.json ? JSON.stringify(status, null, 2) + "\n" : formatStatus(status) + "\n");
    });

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (err) {
    exitCode = report(err);
  }
  return exitCode;
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // Help and version are printed by commander and are not failures.
    return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (err instanceof AgentError) {
    process.stderr.write(`redflag-agent: ${err.message}\n`);
    return err.exitCode;
  }
  if (err instanceof ConfigError || err instanceof StateError) {
    process.stderr.write(`redflag-agent: ${err.message}\n`);
    return EXIT_USAGE;
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EACCES" || code === "EPERM") {
    process.stderr.write(`redflag-agent: ${(err as Error).message} (the agent usually runs as root)\n`);
    return EXIT_USAGE;
  }
  process.stderr.write(`redflag-agent: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  return EXIT_FAILURE;
}

// "-" reads standard input, so a script can hand the token over through a pipe: it never
// appears in the process list or on disk. At most MAX_TOKEN_BYTES are read: a token file that is
// a device or a huge file is refused, not read to the end.
const MAX_TOKEN_BYTES = 4096;
async function readToken(file: string): Promise<string> {
  let stream: NodeJS.ReadableStream | undefined;
  try {
    stream = file === "-" ? process.stdin : createReadStream(file, { end: MAX_TOKEN_BYTES });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of stream) {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
      chunks.push(bytes);
      size += bytes.length;
      if (size > MAX_TOKEN_BYTES) break;
    }
    if (size > MAX_TOKEN_BYTES) throw new AgentError(`${file === "-" ? "standard input" : file} holds more than ${MAX_TOKEN_BYTES} bytes: that is not a registration token`, EXIT_USAGE);
    return Buffer.concat(chunks).toString("utf8").trim();
  } catch (err) {
    if (err instanceof AgentError) throw err;
    throw new AgentError(`cannot read the token file ${file}: ${(err as Error).message}`, EXIT_USAGE);
  } finally {
    if (file !== "-") (stream as { destroy?: () => void } | undefined)?.destroy?.();
  }
}

// The process's own entry (this file, bin/redflag-agent.js, the single-file build): main with
// this process's arguments, its result as the exit code. A reader that stops early
// (`redflag-agent --help | head -1`) closes the pipe; what is left to print has nowhere to go,
// which ends the agent quietly instead of with a stack trace.
export function runCli(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") throw err;
      process.exit(process.exitCode ?? EXIT_OK);
    });
  }
  // (No top-level await: the single-file build is one CommonJS script, see scripts/build-agent.ts.)
  void main(process.argv.slice(2), process.env).then((code) => {
    process.exitCode = code;
  });
}

if (import.meta.main) runCli();

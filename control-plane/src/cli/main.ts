import { Code, ConnectError } from "@connectrpc/connect";
import { Command, CommanderError, Option } from "commander";
import pkg from "../../package.json" with { type: "json" };
import { registerAgents } from "./commands/agents.ts";
import { registerApiTokens } from "./commands/api-tokens.ts";
import { registerAudit } from "./commands/audit.ts";
import { registerCommands } from "./commands/commands.ts";
import { registerHolds } from "./commands/holds.ts";
import { registerNotifications } from "./commands/notifications.ts";
import { registerPolicies } from "./commands/policies.ts";
import { registerReleases } from "./commands/releases.ts";
import { registerReports } from "./commands/reports.ts";
import { registerRollouts } from "./commands/rollouts.ts";
import { registerSecurity } from "./commands/security.ts";
import { registerSession } from "./commands/session.ts";
import { registerSettings } from "./commands/settings.ts";
import { registerTokens } from "./commands/tokens.ts";
import { registerUpdates } from "./commands/updates.ts";
import { registerUsers } from "./commands/users.ts";
import { registerWindows } from "./commands/windows.ts";
import { CliError, createContext, type CliContext, type CliIo } from "./context.ts";

export type { CliIo } from "./context.ts";

// The redflag CLI: one program per call, built from the command modules (one per resource,
// commands/). `argv` without node and the script; returns the exit code: 0 done, 1 failed
// (the control plane refused, or the CLI says why), 2 usage.
export async function main(argv: string[], env: NodeJS.ProcessEnv, io: CliIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  // `redflag --version` (or -V) alone, before any command: commander's own version option would
  // also take the `--version <version>` of `agents upgrade` and `releases delete`.
  if (argv[0] === "--version" || argv[0] === "-V") {
    io.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  const program = createProgram(io);
  const cli = createContext(program, env, io);
  // In help order.
  for (const register of [
    registerTokens,
    registerAgents,
    registerCommands,
    registerUpdates,
    registerHolds,
    registerPolicies,
    registerWindows,
    registerRollouts,
    registerSettings,
    registerSecurity,
    registerSession,
    registerUsers,
    registerApiTokens,
    registerAudit,
    registerReports,
    registerReleases,
    registerNotifications,
  ]) {
    register(program, cli);
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return cli.exitCode;
  } catch (err) {
    return report(cli, err);
  }
}

// The program with its global options. Subcommands inherit its output and error handling, so it
// is configured before they are added.
function createProgram(io: CliIo): Command {
  return new Command("redflag")
    .description("Scripted client for the RedFlag control plane")
    .addHelpText("after", "\nredflag --version prints the version of this CLI.")
    .addOption(new Option("--server <url>", "control plane URL").env("REDFLAG_SERVER").default("http://127.0.0.1:8080"))
    .addOption(new Option("--api-key <key>", "admin API key").env("REDFLAG_API_KEY"))
    .addOption(
      new Option("--api-key-file <file>", "file holding the admin API key").env("REDFLAG_API_KEY_FILE").default("data/admin.key"),
    )
    .option("--json", "print JSON for scripts")
    .configureOutput({
      writeOut: (text) => void io.stdout.write(text),
      writeErr: (text) => void io.stderr.write(text),
      getOutHelpWidth: () => (io.stdout.isTTY ? io.stdout.columns : undefined) as number,
      getErrHelpWidth: () => (io.stderr.isTTY ? io.stderr.columns : undefined) as number,
    })
    .showHelpAfterError()
    .exitOverride();
}

// The exit code for an error, after saying what went wrong on stderr (commander has already
// printed its own usage errors).
function report(cli: CliContext, err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (err instanceof CliError) {
    cli.err(`redflag: ${err.message}\n`);
    return 1;
  }
  if (err instanceof ConnectError) {
    const message =
      err.code === Code.Unavailable || err.code === Code.Unknown
        ? `cannot reach the control plane at ${cli.server()}: ${err.rawMessage}`
        : err.rawMessage;
    cli.err(`redflag: ${Code[err.code]}: ${message}\n`);
    return 1;
  }
  cli.err(`redflag: ${(err as Error).message ?? String(err)}\n`);
  return 1;
}

// The process's own entry (this file run directly, or bin/redflag.js): main with this process's
// arguments and environment, its result as the exit code.
export function runCli(): void {
  void main(process.argv.slice(2), process.env).then((code) => {
    process.exitCode = code;
  });
}

if (import.meta.main) runCli();

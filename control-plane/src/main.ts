import { ConfigError, loadConfig, unusedVariables } from "./config.ts";
import { StartError, startApp } from "./app.ts";
import { createLogger } from "./log.ts";

// redflag-server: reads REDFLAG_* and DATABASE_URL, serves until SIGTERM/SIGINT.
// `redflag-server doctor [--json]` checks what it needs instead (doctor.ts); `backup FILE` and
// `restore FILE` copy everything out and back (backup.ts).
async function main() {
  const [command, ...rest] = process.argv.slice(2);
  if (command === "doctor") {
    const { doctor, formatFindings } = await import("./doctor.ts");
    const findings = await doctor({ env: process.env });
    process.stdout.write(rest.includes("--json") ? `${JSON.stringify(findings, null, 2)}\n` : formatFindings(findings));
    process.exit(findings.some((f) => f.level === "fail") ? 1 : 0);
  }
  if (command === "backup" || command === "restore") {
    const { backupCommand } = await import("./backup-cli.ts");
    process.exit(await backupCommand(command, rest, process.env, process));
  }
  if (command !== undefined) {
    process.stderr.write(`redflag-server: unknown command "${command.slice(0, 40)}"; run it without arguments to serve, or one of: doctor, backup FILE, restore FILE\n`);
    process.exit(2);
  }
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`redflag-server: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const unused = unusedVariables(process.env);
  if (unused.length > 0) logger.warn({ variables: unused }, `not used by the control plane, misspelt or needing another variable set: ${unused.join(", ")}`);
  const app = await startApp(config, logger, { announce: (line) => process.stderr.write(`${line}\n`) }).catch((err: unknown) => {
    // A problem said in one sentence (a port in use): that sentence alone, no stack trace.
    if (err instanceof StartError) {
      process.stderr.write(`redflag-server: ${err.message}\n`);
      process.exit(1);
    }
    logger.fatal({ err }, "could not start");
    process.stderr.write(`redflag-server: ${(err as Error).message}\n`);
    process.exit(1);
  });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    await app.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

await main();

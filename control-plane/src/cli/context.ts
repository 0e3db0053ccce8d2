import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { NotificationService } from "@redflag/gen/notification_service_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { ReleaseService } from "@redflag/gen/release_service_pb";
import { ReportService } from "@redflag/gen/report_service_pb";
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { TokenService } from "@redflag/gen/token_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { loadSession } from "./session-file.ts";

// What one run of the CLI reads and writes: the process's own streams from bin/redflag.js,
// in-memory ones in tests.
export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

// A failure the CLI explains itself: "redflag: <message>" on stderr, exit code 1.
export class CliError extends Error {}
// No agent has the hostname the user gave.
export class UnknownHostname extends CliError {}

interface GlobalOptions {
  server: string;
  apiKey?: string;
  apiKeyFile?: string;
  json?: boolean;
}

export type Clients = ReturnType<typeof createClients>;

// What every command module is handed: the parsed global options, the streams, the clients.
export interface CliContext {
  readonly env: NodeJS.ProcessEnv;
  readonly io: CliIo;
  // The exit code of a command that ran to its end but did not succeed (a waited-for command
  // that failed); errors set their own.
  exitCode: number;
  server(): string;
  json(): boolean;
  out(text: string): void;
  err(text: string): void;
  printJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): void;
  // Clients that carry the caller's credential (see credential()).
  clients(): Promise<Clients>;
  // Clients that carry this credential, or none (sign-in and setup need none).
  clientsWith(key: string | undefined): Clients;
}

export function createContext(program: Command, env: NodeJS.ProcessEnv, io: CliIo): CliContext {
  // The value of a global option and where it came from. Commander reads option environment
  // variables from process.env; this run's `env` is what counts, so only values given on the
  // command line are taken from commander.
  const global = <K extends keyof GlobalOptions>(name: K): { value: GlobalOptions[K]; source: string } => {
    if (program.getOptionValueSource(name) === "cli") return { value: program.opts<GlobalOptions>()[name], source: "cli" };
    const option = program.options.find((o) => o.attributeName() === name);
    if (option?.envVar && option.envVar in env) return { value: env[option.envVar] as GlobalOptions[K], source: "env" };
    return { value: option?.defaultValue as GlobalOptions[K], source: "default" };
  };
  const server = () => global("server").value;

  // The credential for this call: --api-key or REDFLAG_API_KEY; else an --api-key-file the
  // user named; else the session `redflag login` stored for this server; else the server's
  // data/admin.key when it is readable from here.
  async function credential(): Promise<string> {
    const apiKey = global("apiKey").value;
    if (apiKey) return apiKey;
    const file = global("apiKeyFile");
    // An empty REDFLAG_API_KEY_FILE= names no file.
    if ((file.source === "cli" || file.source === "env") && file.value) return readKeyFile(file.value);
    const session = await loadSession(server(), env);
    if (session) return session.token;
    try {
      return readKeyFile(file.value);
    } catch {
      throw new CliError(`not signed in: run \`redflag login\`, pass --api-key, or set REDFLAG_API_KEY`);
    }
  }

  function transportFor(key: string | undefined) {
    let baseUrl: URL;
    try {
      baseUrl = new URL(server());
    } catch {
      throw new CliError(`--server ${server()} is not a URL (for example http://127.0.0.1:8080)`);
    }
    const auth: Interceptor = (next) => (req) => {
      if (key) req.header.set("authorization", `Bearer ${key}`);
      return next(req);
    };
    return createConnectTransport({ baseUrl: baseUrl.toString(), httpVersion: "1.1", interceptors: [auth], defaultTimeoutMs: 30_000 });
  }

  return {
    env,
    io,
    exitCode: 0,
    server,
    json: () => program.opts<GlobalOptions>().json === true,
    out: (text) => void io.stdout.write(text),
    err: (text) => void io.stderr.write(text),
    printJson(schema, message) {
      io.stdout.write(JSON.stringify(toJson(schema, message), null, 2) + "\n");
    },
    clients: async () => createClients(transportFor(await credential())),
    clientsWith: (key) => createClients(transportFor(key)),
  };
}

function createClients(transport: ReturnType<typeof createConnectTransport>) {
  return {
    tokens: createClient(TokenService, transport),
    fleet: createClient(FleetService, transport),
    commands: createClient(CommandService, transport),
    auth: createClient(AuthService, transport),
    users: createClient(UserService, transport),
    apiTokens: createClient(ApiTokenService, transport),
    audit: createClient(AuditService, transport),
    updates: createClient(UpdateService, transport),
    policies: createClient(PolicyService, transport),
    settings: createClient(SettingsService, transport),
    security: createClient(SecurityService, transport),
    reports: createClient(ReportService, transport),
    releases: createClient(ReleaseService, transport),
    notifications: createClient(NotificationService, transport),
    maintenance: createClient(MaintenanceService, transport),
    rollouts: createClient(RolloutService, transport),
  };
}

function readKeyFile(file: string | undefined): string {
  if (!file) throw new CliError("no API key: pass --api-key, set REDFLAG_API_KEY, or --api-key-file");
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    throw new CliError(
      `no API key: ${file} is not readable; pass --api-key, set REDFLAG_API_KEY, or point --api-key-file at the server's admin.key`,
    );
  }
}

import { create, toBinary, toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  ArtifactManifestSchema,
  CommandType,
  PackageChangeKind,
  PackageRefSchema,
  PackageResultState,
  UpdateAgentSchema,
} from "@redflag/gen/command_pb";
import {
  CommandService,
  CommandState,
  CreateCommandRequestSchema,
  GetCommandResponseSchema,
  ListCommandsResponseSchema,
  type CommandInfo,
  type CreateCommandRequest,
} from "@redflag/gen/command_service_pb";
import { AgentHealth, FleetService, GetAgentResponseSchema, ListAgentsResponseSchema } from "@redflag/gen/fleet_service_pb";
import {
  CreateRegistrationTokenResponseSchema,
  ListRegistrationTokensResponseSchema,
  RegistrationTokenState,
  RevokeRegistrationTokenResponseSchema,
  TokenService,
} from "@redflag/gen/token_service_pb";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { parseDuration } from "../duration.ts";
import { ago, enumName, table } from "./output.ts";

interface GlobalOptions {
  server: string;
  apiKey?: string;
  apiKeyFile?: string;
  json?: boolean;
}

class CliError extends Error {}

const program = new Command("redflag")
  .description("Scripted client for the RedFlag control plane")
  .addOption(new Option("--server <url>", "control plane URL").env("REDFLAG_SERVER").default("http://127.0.0.1:8080"))
  .addOption(new Option("--api-key <key>", "admin API key").env("REDFLAG_API_KEY"))
  .addOption(
    new Option("--api-key-file <file>", "file holding the admin API key").env("REDFLAG_API_KEY_FILE").default("data/admin.key"),
  )
  .option("--json", "print JSON for scripts")
  .showHelpAfterError()
  .exitOverride();

function clients() {
  const opts = program.opts<GlobalOptions>();
  const key = opts.apiKey ?? readKeyFile(opts.apiKeyFile);
  let baseUrl: URL;
  try {
    baseUrl = new URL(opts.server);
  } catch {
    throw new CliError(`--server ${opts.server} is not a URL (for example http://127.0.0.1:8080)`);
  }
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
  const transport = createConnectTransport({
    baseUrl: baseUrl.toString(),
    httpVersion: "1.1",
    interceptors: [auth],
    defaultTimeoutMs: 30_000,
  });
  return {
    tokens: createClient(TokenService, transport),
    fleet: createClient(FleetService, transport),
    commands: createClient(CommandService, transport),
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

const json = () => program.opts<GlobalOptions>().json === true;

function printJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>) {
  process.stdout.write(JSON.stringify(toJson(schema, message), null, 2) + "\n");
}

const time = (t: { seconds: bigint; nanos: number } | undefined) => (t ? timestampDate(t as never) : undefined);

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a whole number of at least 1");
  return n;
}

function seconds(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

// ---- tokens
const tokens = program.command("tokens").description("registration tokens that let agents enrol");

tokens
  .command("create")
  .description("create a registration token; its secret is printed once")
  .requiredOption("--seats <n>", "how many agents may register with it", positiveInt)
  .option("--expires <duration>", "lifetime, for example 24h or 7d (default: never)", seconds)
  .option("--note <text>", "what the token is for", "")
  .action(async (o: { seats: number; expires?: number; note: string }) => {
    const res = await clients().tokens.createRegistrationToken({
      seats: o.seats,
      note: o.note,
      ttl: o.expires ? durationFromMs(o.expires * 1000) : undefined,
    });
    if (json()) return printJson(CreateRegistrationTokenResponseSchema, res);
    const t = res.token!;
    process.stdout.write(
      `${res.secret}\n\n` +
        `token ${t.id}: ${t.seats} seat(s), expires ${time(t.expireTime)?.toISOString() ?? "never"}.\n` +
        `The secret above is shown only now. Register an agent with:\n` +
        `  redflag-agent register --server ${program.opts<GlobalOptions>().server} --token ${res.secret}\n`,
    );
  });

tokens
  .command("list")
  .description("list registration tokens")
  .action(async () => {
    const res = await clients().tokens.listRegistrationTokens({ pageSize: 500 });
    if (json()) return printJson(ListRegistrationTokensResponseSchema, res);
    process.stdout.write(
      table(
        ["ID", "PREFIX", "STATE", "SEATS", "EXPIRES", "NOTE"],
        res.tokens.map((t) => [
          t.id,
          t.prefix + "…",
          enumName(RegistrationTokenState, t.state),
          `${t.usedSeats}/${t.seats}`,
          time(t.expireTime)?.toISOString() ?? "never",
          t.note,
        ]),
      ),
    );
  });

tokens
  .command("revoke")
  .description("stop a token from registering more agents")
  .argument("<id>", "token ID")
  .action(async (id: string) => {
    const res = await clients().tokens.revokeRegistrationToken({ id });
    if (json()) return printJson(RevokeRegistrationTokenResponseSchema, res);
    process.stdout.write(`token ${id} revoked\n`);
  });

// ---- agents
const agents = program.command("agents").description("registered agents");

agents
  .command("list")
  .description("list agents")
  .action(async () => {
    const res = await clients().fleet.listAgents({ pageSize: 500 });
    if (json()) return printJson(ListAgentsResponseSchema, res);
    process.stdout.write(
      table(
        ["ID", "HOSTNAME", "HEALTH", "OS", "VERSION", "LAST SEEN", "UPDATES"],
        res.agents.map((a) => [
          a.id,
          a.hostname,
          enumName(AgentHealth, a.health).replace("_", " "),
          `${a.os?.name ?? ""} ${a.os?.version ?? ""}`.trim(),
          a.agentVersion,
          ago(time(a.lastSeenTime)),
          a.lastScanTime ? `${a.pendingUpdateCount} (${a.securityUpdateCount} security)` : "not scanned",
        ]),
      ),
    );
  });

agents
  .command("get")
  .description("show one agent")
  .argument("<id>", "agent ID")
  .action(async (id: string) => {
    const res = await clients().fleet.getAgent({ agentId: id });
    if (json()) return printJson(GetAgentResponseSchema, res);
    const a = res.agent!;
    process.stdout.write(
      [
        `id:          ${a.id}`,
        `hostname:    ${a.hostname}`,
        `health:      ${enumName(AgentHealth, a.health)}`,
        `os:          ${a.os?.name} ${a.os?.version} (${a.os?.kernel}, ${a.os?.arch})`,
        `version:     ${a.agentVersion}`,
        `machine id:  ${a.machineId}`,
        `registered:  ${time(a.registerTime)?.toISOString()}`,
        `last seen:   ${ago(time(a.lastSeenTime))}`,
        `last scan:   ${ago(time(a.lastScanTime))}`,
        `updates:     ${a.pendingUpdateCount} pending, ${a.securityUpdateCount} security`,
      ].join("\n") + "\n",
    );
  });

// ---- commands
const commands = program.command("commands").description("commands queued for agents");

const QUEUE_TYPES = [
  "scan_updates",
  "collect_specs",
  "install_updates",
  "dry_run_update",
  "confirm_dependencies",
  "rollback_update",
  "reboot",
  "enable_heartbeat",
  "disable_heartbeat",
  "update_agent",
] as const;

function packageRef(text: string) {
  const match = /^([a-z_]+):([^=\s]+)(?:=(\S+))?$/.exec(text);
  if (!match) throw new CliError(`--package ${text} must look like source:name or source:name=version (apt:curl=8.5.0-2)`);
  return create(PackageRefSchema, { source: match[1]!, name: match[2]!, version: match[3] ?? "" });
}

async function buildAction(o: QueueOptions, c: ReturnType<typeof clients>): Promise<CreateCommandRequest["action"]> {
  const packages = (o.package ?? []).map(packageRef);
  switch (o.type) {
    case "confirm_dependencies": {
      if (!o.fromDryRun) throw new CliError("confirm_dependencies needs --from-dry-run <command-id>");
      const dryRun = (await c.commands.getCommand({ id: o.fromDryRun })).command!;
      const result = dryRun.result;
      if (dryRun.state !== CommandState.SUCCEEDED || result?.detail.case !== "dryRunUpdate") {
        throw new CliError(`command ${o.fromDryRun} is not a successful dry run (it is ${enumName(CommandState, dryRun.state)})`);
      }
      if (dryRun.agentId !== o.agent) throw new CliError(`dry run ${o.fromDryRun} was for agent ${dryRun.agentId}, not ${o.agent}`);
      return {
        case: "confirmDependencies",
        value: { $typeName: "redflag.v1.ConfirmDependencies", dryRunCommandId: dryRun.id, changes: result.detail.value.changes },
      };
    }
    case "rollback_update": {
      if (packages.length !== 1 || !o.toVersion) throw new CliError("rollback_update needs one --package source:name and --to-version");
      return { case: "rollbackUpdate", value: { $typeName: "redflag.v1.RollbackUpdate", package: packages[0], targetVersion: o.toVersion } };
    }
    case "scan_updates":
      return { case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems: o.subsystem ?? [] } };
    case "collect_specs":
      return { case: "collectSpecs", value: { $typeName: "redflag.v1.CollectSpecs" } };
    case "install_updates":
      return { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages, sources: o.source ?? [] } };
    case "dry_run_update":
      return { case: "dryRunUpdate", value: { $typeName: "redflag.v1.DryRunUpdate", packages } };
    case "reboot":
      return {
        case: "reboot",
        value: { $typeName: "redflag.v1.Reboot", delaySeconds: o.delay ?? 0, message: o.message ?? "", force: o.force === true },
      };
    case "enable_heartbeat":
      return {
        case: "enableHeartbeat",
        value: {
          $typeName: "redflag.v1.EnableHeartbeat",
          intervalSeconds: o.interval ?? 5,
          duration: durationFromMs((o.duration ?? 600) * 1000),
        },
      };
    case "disable_heartbeat":
      return { case: "disableHeartbeat", value: { $typeName: "redflag.v1.DisableHeartbeat" } };
    case "update_agent": {
      if (!o.release || !o.url || !o.artifact) throw new CliError("update_agent needs --release <version>, --url <download URL> and --artifact <file>");
      // The manifest describes the exact file; the control plane signs it, the agent checks it.
      const bytes = await readFile(o.artifact).catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read --artifact ${o.artifact}: ${err.code ?? err.message}`);
      });
      const manifest = create(ArtifactManifestSchema, {
        version: o.release,
        platform: o.platform ?? "any",
        sizeBytes: BigInt(bytes.length),
        sha256: new Uint8Array(createHash("sha256").update(bytes).digest()),
      });
      return {
        case: "updateAgent",
        value: create(UpdateAgentSchema, { version: o.release, downloadUrl: o.url, manifest: toBinary(ArtifactManifestSchema, manifest) }),
      };
    }
    default:
      throw new CliError(`--type must be one of: ${QUEUE_TYPES.join(", ")}`);
  }
}

interface QueueOptions {
  agent: string;
  type: string;
  subsystem?: string[];
  package?: string[];
  source?: string[];
  delay?: number;
  message?: string;
  force?: boolean;
  duration?: number;
  interval?: number;
  fromDryRun?: string;
  toVersion?: string;
  release?: string;
  url?: string;
  artifact?: string;
  platform?: string;
  timeout?: number;
  wait?: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

const FINAL = new Set([
  CommandState.SUCCEEDED,
  CommandState.FAILED,
  CommandState.REJECTED,
  CommandState.TIMED_OUT,
  CommandState.CANCELLED,
]);

commands
  .command("queue")
  .description("queue a command for an agent; prints the command ID")
  .requiredOption("--agent <id>", "agent ID")
  .addOption(new Option("--type <type>", "command type").choices(QUEUE_TYPES).makeOptionMandatory())
  .option("--subsystem <name>", "scan_updates: subsystem to scan (repeatable)", collect)
  .option("--package <source:name[=version]>", "install/dry run: package (repeatable)", collect)
  .option("--source <name>", "install_updates: upgrade everything of this source (repeatable)", collect)
  .option("--delay <duration>", "reboot: delay", seconds)
  .option("--message <text>", "reboot: message to logged-in users")
  .option("--force", "reboot: even when the host does not need it")
  .option("--duration <duration>", "enable_heartbeat: how long", seconds)
  .option("--interval <duration>", "enable_heartbeat: poll interval (default 5s)", seconds)
  .option("--from-dry-run <command-id>", "confirm_dependencies: install exactly what this dry run reported")
  .option("--to-version <version>", "rollback_update: the version to go back to")
  .option("--release <version>", "update_agent: the agent version to install")
  .option("--url <url>", "update_agent: where agents download the release tarball")
  .option("--artifact <file>", "update_agent: the release tarball itself (its size and SHA-256 go into the signed manifest)")
  .option("--platform <os-arch>", 'update_agent: "linux-x64", "darwin-arm64" … or "any" (default)')
  .option("--timeout <duration>", "execution timeout on the agent", seconds)
  .option("--wait <duration>", "wait until the command finishes, then print its result", seconds)
  .action(async (o: QueueOptions) => {
    const c = clients();
    const req = create(CreateCommandRequestSchema, { agentId: o.agent, timeoutSeconds: o.timeout ?? 0 });
    req.action = await buildAction(o, c);
    const res = await c.commands.createCommand(req);
    let command = res.command!;
    if (o.wait) command = await waitFor(c.commands, command, o.wait);
    if (json()) return printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command }));
    process.stdout.write(o.wait ? describeCommand(command) : `${command.id}\n`);
    if (o.wait && command.state !== CommandState.SUCCEEDED) process.exitCode = 1;
  });

async function waitFor(client: ReturnType<typeof clients>["commands"], command: CommandInfo, forSeconds: number) {
  const deadline = Date.now() + forSeconds * 1000;
  while (!FINAL.has(command.state)) {
    if (Date.now() > deadline) {
      throw new CliError(`command ${command.id} is still ${enumName(CommandState, command.state)} after ${forSeconds}s`);
    }
    await new Promise((r) => setTimeout(r, 500));
    command = (await client.getCommand({ id: command.id })).command!;
  }
  return command;
}

commands
  .command("list")
  .description("list commands and their states")
  .option("--agent <id>", "only this agent's commands")
  .option("--state <state>", "only commands in this state (pending, sent, succeeded, failed, rejected, timed_out, cancelled)")
  .action(async (o: { agent?: string; state?: string }) => {
    let state = CommandState.UNSPECIFIED;
    if (o.state) {
      const named = CommandState[o.state.toUpperCase() as keyof typeof CommandState] as CommandState | undefined;
      if (named === undefined) throw new CliError(`--state ${o.state} is not a command state`);
      state = named;
    }
    const res = await clients().commands.listCommands({ agentId: o.agent ?? "", state, pageSize: 500 });
    if (json()) return printJson(ListCommandsResponseSchema, res);
    process.stdout.write(
      table(
        ["ID", "AGENT", "TYPE", "STATE", "SEQ", "CREATED", "RESULT"],
        res.commands.map((c) => [
          c.id,
          c.agentId,
          enumName(CommandType, c.type),
          enumName(CommandState, c.state),
          c.sequence ? String(c.sequence) : "-",
          ago(time(c.createTime)),
          c.result?.message.split("\n")[0]?.slice(0, 60) ?? "",
        ]),
      ),
    );
  });

commands
  .command("get")
  .description("show one command with its result")
  .argument("<id>", "command ID")
  .action(async (id: string) => {
    const res = await clients().commands.getCommand({ id });
    if (json()) return printJson(GetCommandResponseSchema, res);
    process.stdout.write(describeCommand(res.command!));
  });

function describeCommand(c: CommandInfo): string {
  const lines = [
    `id:       ${c.id}`,
    `agent:    ${c.agentId}`,
    `type:     ${enumName(CommandType, c.type)}`,
    `state:    ${enumName(CommandState, c.state)}`,
    `sequence: ${c.sequence || "-"}`,
    `created:  ${time(c.createTime)?.toISOString()} by ${c.createdBy}`,
  ];
  const r = c.result;
  if (r) {
    lines.push(`result:   ${r.message}`);
    if (r.detail.case === "scanUpdates") {
      const scan = r.detail.value;
      for (const s of scan.subsystems) lines.push(`  ${s.subsystem}: ${enumName({ 1: "ran", 2: "failed", 3: "skipped", 4: "not present" }, s.state)} ${s.message}`);
      lines.push(
        table(
          ["PACKAGE", "CURRENT", "AVAILABLE", "REPOSITORY", "SECURITY"],
          scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository, u.security ? "yes" : ""]),
        ).trimEnd(),
      );
    }
    const detail = r.detail;
    if (detail.case === "installUpdates" || detail.case === "confirmDependencies" || detail.case === "rollbackUpdate") {
      lines.push(
        table(
          ["SOURCE", "PACKAGE", "FROM", "TO", "OUTCOME", "REASON"],
          detail.value.packages.map((p) => [
            p.source,
            p.name,
            p.fromVersion,
            p.toVersion,
            enumName(PackageResultState, p.state),
            p.reason,
          ]),
        ).trimEnd(),
      );
      if (detail.value.rebootRequired) lines.push("the host needs a reboot");
    }
    if (detail.case === "dryRunUpdate") {
      lines.push(
        table(
          ["CHANGE", "SOURCE", "PACKAGE", "FROM", "TO"],
          detail.value.changes.map((ch) => [enumName(PackageChangeKind, ch.kind), ch.source, ch.name, ch.fromVersion, ch.toVersion]),
        ).trimEnd(),
      );
    }
  }
  return lines.join("\n") + "\n";
}

// ---- run
try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = report(err);
}

function report(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (err instanceof CliError) {
    process.stderr.write(`redflag: ${err.message}\n`);
    return 1;
  }
  if (err instanceof ConnectError) {
    const server = program.opts<GlobalOptions>().server;
    const message =
      err.code === Code.Unavailable || err.code === Code.Unknown
        ? `cannot reach the control plane at ${server}: ${err.rawMessage}`
        : err.rawMessage;
    process.stderr.write(`redflag: ${Code[err.code]}: ${message}\n`);
    return 1;
  }
  process.stderr.write(`redflag: ${(err as Error).message ?? String(err)}\n`);
  return 1;
}

import { create, toJson } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandType, PackageChangeKind, PackageRefSchema, PackageResultState, type PackageVersions, UpdateAgentSchema } from "@redflag/gen/command_pb";
import {
  CommandState,
  CreateCommandRequestSchema,
  CreateCommandResponseSchema,
  GetCommandResponseSchema,
  ListCommandsResponseSchema,
  RetryCommandResponseSchema,
  type CommandInfo,
  type CreateCommandRequest,
} from "@redflag/gen/command_service_pb";
import { formatDuration } from "@redflag/common/config-values";
import { DEFAULT_HOOK_TIMEOUT_SECONDS, MAX_HOOK_TIMEOUT_SECONDS, MIN_HOOK_TIMEOUT_SECONDS } from "@redflag/common/reboot-hooks";
import { Option, type Command } from "commander";
import { randomUUID } from "node:crypto";
import { AGENT_ARG, hostnames, resolveAgent } from "../agent-ref.ts";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { collect, seconds } from "../options.ts";
import { ago, enumName, table, time } from "../output.ts";

const UPGRADES_FROM_REGISTRY =
  "update_agent takes no --url, --artifact or --platform: agent upgrades come only from the control plane's release registry. " +
  "Publish the build with `redflag releases publish DIR`, then queue `--type update_agent --release <version>` (or `redflag agents upgrade <id> --version <version>`)";

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
  "list_package_versions",
] as const;

const HOOK_HELP = "NAME is an executable the host's owner put in the agent's hooks directory (/etc/redflag-agent/hooks on Linux)";

const FINAL = new Set([
  CommandState.SUCCEEDED,
  CommandState.FAILED,
  CommandState.REJECTED,
  CommandState.TIMED_OUT,
  CommandState.CANCELLED,
]);

interface QueueOptions {
  agent: string;
  type: string;
  subsystem?: string[];
  package?: string[];
  source?: string[];
  delay?: number;
  message?: string;
  force?: boolean;
  preHook?: string;
  postHook?: string;
  hookTimeout?: number;
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
  idempotencyKey?: string;
}

// redflag commands: commands queued for agents.
export function registerCommands(program: Command, cli: CliContext): void {
  const commands = program.command("commands").description("commands queued for agents");

  commands
    .command("queue")
    .description("queue a command for an agent; prints the command ID")
    .requiredOption("--agent <agent>", AGENT_ARG)
    .addOption(new Option("--type <type>", "command type").choices(QUEUE_TYPES).makeOptionMandatory())
    .option("--subsystem <name>", "scan_updates: subsystem to scan (repeatable)", collect)
    .option("--package <source:name[=version]>", "install/dry run/rollback/list_package_versions: package (repeatable)", collect)
    .option("--source <name>", "install_updates: upgrade everything of this source (repeatable)", collect)
    .option("--delay <duration>", "reboot: delay", seconds)
    .option("--message <text>", "reboot: message to logged-in users")
    .option("--force", "reboot: even when the host does not need it")
    .option("--pre-hook <name>", `reboot: run this hook before the reboot is scheduled; a failure cancels the reboot. ${HOOK_HELP}`)
    .option("--post-hook <name>", `reboot: run this hook when the agent starts after the reboot. ${HOOK_HELP}`)
    .option("--hook-timeout <duration>", "reboot: time limit of each hook, 1s to 30m (default 5m)", seconds)
    .option("--duration <duration>", "enable_heartbeat: how long", seconds)
    .option("--interval <duration>", "enable_heartbeat: poll interval (default 5s)", seconds)
    .option("--from-dry-run <command-id>", "confirm_dependencies: install exactly what this dry run reported")
    .option("--to-version <version>", "rollback_update: the version to go back to")
    .option("--release <version>", "update_agent: a version from `redflag releases list` (default: the newest for the agent's platform)")
    .addOption(new Option("--url <url>").hideHelp())
    .addOption(new Option("--artifact <file>").hideHelp())
    .addOption(new Option("--platform <os-arch>").hideHelp())
    .option("--timeout <duration>", "execution timeout on the agent (a reboot with --pre-hook: default the hook's limit plus 2m, at least 10m)", seconds)
    .option("--wait <duration>", "wait until the command finishes, then print its result", seconds)
    .option("--idempotency-key <key>", "queue at most one command for this key (a day), also when this whole call is run again; default: a new key per call, reused on its own retries")
    .action(async (o: QueueOptions) => {
      const timeoutSeconds = commandTimeout(o);
      const c = await cli.clients();
      o.agent = await resolveAgent(c, o.agent, { live: true });
      const req = create(CreateCommandRequestSchema, { agentId: o.agent, timeoutSeconds, idempotencyKey: o.idempotencyKey ?? randomUUID() });
      req.action = await buildAction(o, c);
      const res = await retryUnanswered(cli, () => c.commands.createCommand(req));
      let command = res.command!;
      if (o.wait) command = await waitFor(c, command, o.wait);
      if (cli.json()) return cli.printJson(CreateCommandResponseSchema, create(CreateCommandResponseSchema, { command, merged: res.merged }));
      if (res.merged) await noteMerged(cli, c, command);
      cli.out(o.wait ? describeCommand(command, await hostnames(c, [command.agentId])) : `${command.id}\n`);
      if (o.wait && command.state !== CommandState.SUCCEEDED) cli.exitCode = 1;
    });

  commands
    .command("list")
    .description("list commands and their states")
    .option("--agent <agent>", `only this agent's commands (${AGENT_ARG})`)
    .option("--state <state>", "only commands in this state (pending, sent, succeeded, failed, rejected, timed_out, cancelled)")
    .action(async (o: { agent?: string; state?: string }) => {
      let state = CommandState.UNSPECIFIED;
      if (o.state) {
        const named = CommandState[o.state.toUpperCase() as keyof typeof CommandState] as CommandState | undefined;
        if (named === undefined) throw new CliError(`--state ${o.state} is not a command state`);
        state = named;
      }
      const c = await cli.clients();
      const res = await c.commands.listCommands({ agentId: o.agent ? await resolveAgent(c, o.agent) : "", state, pageSize: 500 });
      if (cli.json()) return cli.printJson(ListCommandsResponseSchema, res);
      const hosts = await hostnames(c, res.commands.map((cmd) => cmd.agentId));
      cli.out(
        table(
          ["ID", "HOST", "AGENT", "TYPE", "STATE", "SEQ", "CREATED", "RESULT"],
          res.commands.map((c) => [
            c.id,
            hosts.get(c.agentId) ?? "",
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
      const c = await cli.clients();
      const res = await c.commands.getCommand({ id });
      if (cli.json()) return cli.printJson(GetCommandResponseSchema, res);
      cli.out(describeCommand(res.command!, await hostnames(c, [res.command!.agentId])));
    });

  commands
    .command("versions")
    .description("ask an agent which earlier versions of packages it can roll back to, wait for the answer, and print each with the rollback command to run")
    .argument("<agent>", AGENT_ARG)
    .argument("<source:name...>", "packages, for example apt:curl (1 to 50)")
    .option("--wait <duration>", "how long to wait for the agent's answer", seconds, 120)
    .option("--idempotency-key <key>", "ask at most once for this key (a day)")
    .addHelpText("after", "\nExample:\n  redflag commands versions web-1 apt:curl apt:openssl\n")
    .action(async (agent: string, refs: string[], o: { wait: number; idempotencyKey?: string }) => {
      const c = await cli.clients();
      const agentId = await resolveAgent(c, agent, { live: true });
      const packages = refs.map((text) => {
        const ref = packageRef(text);
        if (ref.version) throw new CliError(`${text}: name the package only (source:name); the answer lists every version it can go back to`);
        return ref;
      });
      const req = create(CreateCommandRequestSchema, {
        agentId,
        idempotencyKey: o.idempotencyKey ?? randomUUID(),
        action: { case: "listPackageVersions", value: { $typeName: "redflag.v1.ListPackageVersions", packages } },
      });
      const res = await retryUnanswered(cli, () => c.commands.createCommand(req));
      const command = await waitFor(c, res.command!, o.wait);
      if (cli.json()) return cli.printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command }));
      cli.out(describeVersions(command, agentId));
      if (command.state !== CommandState.SUCCEEDED) cli.exitCode = 1;
    });

  commands
    .command("cancel")
    .description("stop a command that was not delivered yet")
    .argument("<id>", "command ID")
    .action(async (id: string) => {
      const res = await (await cli.clients()).commands.cancelCommand({ id });
      cli.out(`${res.command!.id} cancelled\n`);
    });

  commands
    .command("retry")
    .description("queue a failed, timed-out, rejected or cancelled command again")
    .argument("<id>", "command ID")
    .action(async (id: string) => {
      const c = await cli.clients();
      const res = await c.commands.retryCommand({ id });
      if (cli.json()) return cli.printJson(RetryCommandResponseSchema, res);
      if (res.merged) await noteMerged(cli, c, res.command!);
      cli.out(`${res.command!.id}\n`);
    });

  commands
    .command("watch")
    .description("print command changes as they happen (Ctrl-C to stop)")
    .option("--agent <agent>", `only this agent (${AGENT_ARG})`)
    .action(async (o: { agent?: string }) => {
      const stop = new AbortController();
      const onSigint = () => stop.abort();
      process.once("SIGINT", onSigint);
      try {
        await watch(cli, o.agent, stop.signal);
      } catch (err) {
        if (!stop.signal.aborted) throw err;
      } finally {
        process.off("SIGINT", onSigint);
      }
    });
}

// Prints command events until `signal` stops the stream.
async function watch(cli: CliContext, agent: string | undefined, signal: AbortSignal): Promise<void> {
  const client = await cli.clients();
  const agentId = agent ? await resolveAgent(client, agent) : "";
  // Each agent's hostname is looked up once, when its first event arrives.
  const hosts = new Map<string, string>();
  for await (const event of client.commands.watchEvents({ agentId }, { signal, timeoutMs: 0 })) {
    if (event.kind !== "command") continue;
    const c = event.command!;
    if (cli.json()) {
      cli.out(JSON.stringify(toJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command: c }))) + "\n");
      continue;
    }
    if (!hosts.has(c.agentId)) hosts.set(c.agentId, (await hostnames(client, [c.agentId])).get(c.agentId) ?? "");
    cli.out(`${time(event.time)!.toISOString()}  ${hosts.get(c.agentId)}  ${c.agentId}  ${enumName(CommandType, c.type)}  ${enumName(CommandState, c.state)}  ${c.id}${c.result ? `  ${c.result.message}` : ""}\n`);
  }
}

// A queued command: its ID, or with --json the whole command.
export function printQueued(cli: CliContext, c: CommandInfo): void {
  if (cli.json()) return cli.printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command: c }));
  cli.out(`${c.id}\n`);
}

function packageRef(text: string) {
  const match = /^([a-z_]+):([^=\s]+)(?:=(\S+))?$/.exec(text);
  if (!match) throw new CliError(`--package ${text} must look like source:name or source:name=version (apt:curl=8.5.0-2)`);
  return create(PackageRefSchema, { source: match[1]!, name: match[2]!, version: match[3] ?? "" });
}

// The command's time limit on the agent (0: the agent's default). A reboot's pre-hook runs inside
// the command, so by default the limit covers the hook's, as a reboot policy's reboot does
// (domain/reboot-policies.ts); a --timeout the hook cannot finish in is refused. Hook options on
// another type, or a time limit without a hook, would do nothing: refused too.
function commandTimeout(o: QueueOptions): number {
  const hooked = o.preHook !== undefined || o.postHook !== undefined;
  if (o.type !== "reboot" && (hooked || o.hookTimeout !== undefined)) throw new CliError(`--pre-hook, --post-hook and --hook-timeout are for --type reboot, not ${o.type}`);
  if (o.hookTimeout !== undefined) {
    if (!hooked) throw new CliError("--hook-timeout limits the hooks of a reboot: give --pre-hook or --post-hook too");
    if (o.hookTimeout < MIN_HOOK_TIMEOUT_SECONDS || o.hookTimeout > MAX_HOOK_TIMEOUT_SECONDS) throw new CliError("--hook-timeout must be from 1s to 30m");
  }
  if (!o.preHook) return o.timeout ?? 0;
  const hookLimit = o.hookTimeout ?? DEFAULT_HOOK_TIMEOUT_SECONDS;
  if (o.timeout === undefined) return Math.max(600, hookLimit + 120);
  if (o.timeout <= hookLimit) {
    throw new CliError(`--timeout ${formatDuration(o.timeout)} leaves the pre-hook no time to finish (its limit is ${formatDuration(hookLimit)}): give a longer --timeout, or leave it out`);
  }
  return o.timeout;
}

async function buildAction(o: QueueOptions, c: Clients): Promise<CreateCommandRequest["action"]> {
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
    case "list_package_versions":
      if (packages.length === 0) throw new CliError("list_package_versions needs at least one --package source:name");
      return { case: "listPackageVersions", value: { $typeName: "redflag.v1.ListPackageVersions", packages } };
    case "reboot":
      return {
        case: "reboot",
        value: {
          $typeName: "redflag.v1.Reboot",
          delaySeconds: o.delay ?? 0,
          message: o.message ?? "",
          force: o.force === true,
          // The control plane checks the names (no path) and the limit, and the agent again.
          preHook: o.preHook ?? "",
          postHook: o.postHook ?? "",
          hookTimeoutSeconds: o.hookTimeout ?? 0,
        },
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
    case "update_agent":
      if (o.url || o.artifact || o.platform) throw new CliError(UPGRADES_FROM_REGISTRY);
      // The control plane picks the build for the agent's platform and signs its manifest.
      return { case: "updateAgent", value: create(UpdateAgentSchema, { version: o.release ?? "" }) };
    default:
      throw new CliError(`--type must be one of: ${QUEUE_TYPES.join(", ")}`);
  }
}

// Says on stderr (stdout stays the command ID, for scripts) that nothing new was queued: the
// request went into a command of its kind that was already pending.
async function noteMerged(cli: CliContext, c: Clients, command: CommandInfo): Promise<void> {
  const host = (await hostnames(c, [command.agentId])).get(command.agentId) ?? command.agentId;
  cli.err(`redflag: merged into ${enumName(CommandType, command.type)} command ${command.id}, already pending for ${host}: nothing new was queued\n`);
}

// A call whose answer never came may still have been carried out: retried only with an
// idempotency key in the request, so the control plane answers a retry with what the first
// call did instead of doing it again.
async function retryUnanswered<T>(cli: CliContext, call: () => Promise<T>): Promise<T> {
  const delays = [500, 1000, 2000];
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : undefined;
      // connect-node reports a connection cut mid-call ("socket hang up") as Aborted.
      const unanswered = code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Unknown || code === Code.Aborted;
      if (!unanswered || attempt >= delays.length) throw err;
      cli.err(`redflag: no answer (${Code[code!]}: ${(err as ConnectError).rawMessage}); trying again with the same idempotency key\n`);
      await new Promise((r) => setTimeout(r, delays[attempt]));
    }
  }
}

// The command once it is final (succeeded, failed …), polled twice a second.
export async function waitFor(c: Clients, command: CommandInfo, forSeconds: number): Promise<CommandInfo> {
  const deadline = Date.now() + forSeconds * 1000;
  while (!FINAL.has(command.state)) {
    if (Date.now() > deadline) {
      throw new CliError(`command ${command.id} is still ${enumName(CommandState, command.state)} after ${forSeconds}s`);
    }
    await new Promise((r) => setTimeout(r, 500));
    command = (await c.commands.getCommand({ id: command.id })).command!;
  }
  return command;
}

// One command with its result, for people. `hosts`: the agent's hostname, when it is known.
export function describeCommand(c: CommandInfo, hosts: Map<string, string>): string {
  const host = hosts.get(c.agentId);
  const lines = [
    `id:       ${c.id}`,
    `agent:    ${host ? `${host} (${c.agentId})` : c.agentId}`,
    `type:     ${enumName(CommandType, c.type)}`,
    `state:    ${enumName(CommandState, c.state)}`,
    `sequence: ${c.sequence || "-"}`,
    `delivered: ${c.deliveryCount === 0 ? "not yet" : c.deliveryCount === 1 ? "once" : `${c.deliveryCount} times (no result arrived within the delivery lease)`}`,
    `created:  ${time(c.createTime)?.toISOString()} by ${c.createdBy}`,
  ];
  const r = c.result;
  if (r) {
    lines.push(`result:   ${r.message}`);
    if (r.detail.case === "scanUpdates") {
      const scan = r.detail.value;
      for (const s of scan.subsystems) lines.push(`  ${s.subsystem}: ${enumName({ 1: "ran", 2: "failed", 3: "skipped", 4: "not present" }, s.state)} ${s.message}`);
      if (scan.updateParts > 0) {
        lines.push(`updates:  sent in ${scan.updateParts} parts, too many to list here; \`redflag updates list --agent ${c.agentId}\` shows them`);
      } else {
        lines.push(
          table(
            ["PACKAGE", "CURRENT", "AVAILABLE", "REPOSITORY", "SECURITY"],
            scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository, u.security ? "yes" : ""]),
          ).trimEnd(),
        );
      }
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
    if (detail.case === "listPackageVersions") lines.push(versionLines(detail.value.packages, c.agentId).trimEnd());
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

// The answer of a list_package_versions command: per package, what is installed, the versions
// it can go back to (newest first) and the exact command that rolls back to the newest of them,
// or why there are none.
export function describeVersions(c: CommandInfo, agentId: string): string {
  const r = c.result;
  if (!r) return `command ${c.id} is ${enumName(CommandState, c.state)} without an answer\n`;
  if (r.detail.case !== "listPackageVersions") return `${enumName(CommandState, c.state)}: ${r.message}\n`;
  return versionLines(r.detail.value.packages, agentId);
}

function versionLines(packages: readonly PackageVersions[], agentId: string): string {
  const blocks = packages.map((p) => {
    const ref = p.package!;
    const spec = `${ref.source}:${ref.name}`;
    const head = p.installedVersion ? `${spec}  installed ${p.installedVersion}` : spec;
    if (p.versions.length === 0) return `${head}\n  nothing to go back to: ${p.reason || "no earlier version"}\n`;
    // Versions follow the package-version rule (letters, digits and . _ + ~ : -, no leading
    // "-"), so the line is safe to paste into a shell as printed.
    return [
      head,
      table(["VERSION", "WHERE"], p.versions.map((v) => [v.version, v.description])).trimEnd().replace(/^/gm, "  "),
      `  roll back with: redflag commands queue --agent ${agentId} --type rollback_update --package ${spec} --to-version ${p.versions[0]!.version}`,
      "",
    ].join("\n");
  });
  return blocks.join("\n");
}

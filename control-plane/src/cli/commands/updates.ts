import { create } from "@bufbuild/protobuf";
import { plural } from "@redflag/common/plural";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandState, type CommandInfo } from "@redflag/gen/command_service_pb";
import {
  ApproveUpdatesResponseSchema,
  InstallApprovedUpdatesResponseSchema,
  type InstallSkipped,
  ListUpdatesResponseSchema,
  RejectUpdatesResponseSchema,
  UpdateSelectionSchema,
  UpdateStatus,
} from "@redflag/gen/update_service_pb";
import { Option, type Command } from "commander";
import { AGENT_ARG, hostnames, resolveAgents } from "../agent-ref.ts";
import type { CliContext, Clients } from "../context.ts";
import { collect, SEVERITY_NAMES, severityArg } from "../options.ts";
import { enumName, table } from "../output.ts";

interface SelectionOptions {
  agent?: string[];
  severity?: string[];
  security?: boolean;
  package?: string;
  source?: string;
  group?: string;
  tag?: string;
  all?: boolean;
}

// Updates of decommissioned agents are gone, so only live agents are candidates for a hostname.
const selection = async (c: Clients, o: SelectionOptions) =>
  create(UpdateSelectionSchema, {
    agentIds: await resolveAgents(c, o.agent, { live: true }),
    severities: (o.severity ?? []).map((s) => (UpdateSeverity as unknown as Record<string, UpdateSeverity>)[s.toUpperCase()]!),
    securityOnly: o.security === true,
    packageName: o.package ?? "",
    source: o.source ?? "",
    group: o.group ?? "",
    tag: o.tag ?? "",
    all: o.all === true,
  });

const selectionOptions = (cmd: Command) =>
  cmd
    .option("--agent <agent>", `only this agent (${AGENT_ARG}; repeatable)`, collect)
    .option("--severity <level>", `only this severity (repeatable): ${SEVERITY_NAMES.join(", ")}`, severityArg)
    .option("--security", "only security updates")
    .option("--package <name>", "only this package, across agents")
    .option("--source <name>", "only this source (apt, dnf, docker …)")
    .option("--group <group>", "only agents in this group")
    .option("--tag <tag>", "only agents with this tag");

// redflag updates: pending updates across the fleet, chosen by a selection.
export function registerUpdates(program: Command, cli: CliContext): void {
  const updates = program.command("updates").description("pending updates across the fleet: approve, reject, install");

  selectionOptions(updates.command("list"))
    .addOption(new Option("--status <status>", "only this decision").choices(["pending", "approved", "rejected"]))
    .action(async (o: SelectionOptions & { status?: string }) => {
      const status = { pending: UpdateStatus.PENDING, approved: UpdateStatus.APPROVED, rejected: UpdateStatus.REJECTED }[o.status ?? ""] ?? UpdateStatus.UNSPECIFIED;
      const c = await cli.clients();
      const res = await c.updates.listUpdates({ filter: await selection(c, o), status, pageSize: 500 });
      if (cli.json()) return cli.printJson(ListUpdatesResponseSchema, res);
      cli.out(
        table(
          ["HOST", "SOURCE", "PACKAGE", "CURRENT", "AVAILABLE", "SEVERITY", "STATUS", "AGENT"],
          res.updates.map((u) => [
            u.hostname,
            u.update!.source,
            u.update!.name,
            u.update!.currentVersion,
            u.update!.availableVersion,
            enumName(UpdateSeverity, u.update!.severity),
            u.held ? "held" : u.installCommandId ? `${enumName(UpdateStatus, u.status)}, install ${enumName(CommandState, u.installCommandState)}` : enumName(UpdateStatus, u.status),
            u.agentId,
          ]),
        ),
      );
      if (res.total > res.updates.length) cli.out(`(${res.updates.length} of ${res.total} shown)\n`);
    });

  selectionOptions(updates.command("approve"))
    .option("--all", "every pending update (when no other filter is given)")
    .option("--install", "also queue the install on each agent now")
    .action(async (o: SelectionOptions & { install?: boolean }) => {
      const c = await cli.clients();
      if (o.install) {
        const res = await c.updates.installApprovedUpdates({ selection: await selection(c, o), approve: true });
        if (cli.json()) return cli.printJson(InstallApprovedUpdatesResponseSchema, res);
        cli.out(`approved and queued ${plural(res.packages, "package")} in ${plural(res.commands.length, "install command")}\n`);
        return printQueuedInstalls(cli, c, res.commands, res.skipped);
      }
      const res = await c.updates.approveUpdates({ selection: await selection(c, o) });
      if (cli.json()) return cli.printJson(ApproveUpdatesResponseSchema, res);
      cli.out(`approved ${plural(res.approved, "update")}${res.held ? `; ${res.held} held, left as they were` : ""}\n`);
    });

  selectionOptions(updates.command("reject"))
    .option("--all", "every pending update (when no other filter is given)")
    .action(async (o: SelectionOptions) => {
      const c = await cli.clients();
      const res = await c.updates.rejectUpdates({ selection: await selection(c, o) });
      if (cli.json()) return cli.printJson(RejectUpdatesResponseSchema, res);
      cli.out(`rejected ${plural(res.rejected, "update")}\n`);
    });

  selectionOptions(updates.command("install"))
    .option("--all", "every approved update (when no other filter is given)")
    .action(async (o: SelectionOptions) => {
      const c = await cli.clients();
      const res = await c.updates.installApprovedUpdates({ selection: await selection(c, o) });
      if (cli.json()) return cli.printJson(InstallApprovedUpdatesResponseSchema, res);
      cli.out(`queued ${plural(res.packages, "approved package")} in ${plural(res.commands.length, "install command")}\n`);
      await printQueuedInstalls(cli, c, res.commands, res.skipped);
    });
}

// One line per queued install: agent ID, command ID, then the host (last, so scripts that read
// the first two fields keep working).
// Agents left out (a pending install their updates cannot join) are said on stderr, with why.
async function printQueuedInstalls(cli: CliContext, c: Clients, commands: CommandInfo[], skipped: InstallSkipped[] = []) {
  const hosts = await hostnames(c, [...commands.map((cmd) => cmd.agentId), ...skipped.map((s) => s.agentId)]);
  for (const cmd of commands) cli.out(`${cmd.agentId}  ${cmd.id}  ${hosts.get(cmd.agentId) ?? ""}\n`);
  for (const s of skipped) cli.err(`left out ${hosts.get(s.agentId) ?? s.agentId}: ${s.reason}\n`);
}

import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { CommandType, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { GetFleetOverviewResponseSchema } from "@redflag/gen/report_service_pb";
import { plural } from "@redflag/common/plural";
import type { Command } from "commander";
import { hostnames } from "../agent-ref.ts";
import type { CliContext } from "../context.ts";
import { positiveInt } from "../options.ts";
import { enumName, table, time } from "../output.ts";

// redflag report: the fleet now and its daily history (one agent's readings: agents metrics).
export function registerReports(program: Command, cli: CliContext): void {
  program
    .command("report")
    .description("the fleet now: health, pending updates, reboots, recent failures, and daily history")
    .option("--days <n>", "days of history, counting today (default 14, at most 90)", positiveInt)
    .action(async (o: { days?: number }) => {
      const c = await cli.clients();
      const r = await c.reports.getFleetOverview({ days: o.days ?? 0 });
      if (cli.json()) return cli.printJson(GetFleetOverviewResponseSchema, r);
      const hosts = await hostnames(c, r.recentFailures.map((f) => f.agentId));
      const health = r.health.map((h) => `${h.count} ${enumName(AgentHealth, h.health).replace("_", " ")}`).join(", ");
      const severities = r.pendingBySeverity.map((s) => `${s.count} ${enumName(UpdateSeverity, s.severity)}`).join(", ");
      const day = (t: Parameters<typeof time>[0]) => time(t)!.toISOString().slice(0, 10);
      const labels = (rows: { label: string; count: number }[]) => rows.map((l) => [l.label, String(l.count)]);
      cli.out(
        `agents: ${r.totalAgents} (${health})\n` +
          `pending updates: ${r.pendingUpdates}, ${r.securityUpdates} security, on ${plural(r.agentsWithUpdates, "agent")}${severities ? `: ${severities}` : ""}\n` +
          `needs a reboot: ${r.rebootRequiredCount}${r.rebootRequiredCount > r.rebootRequired.length ? ` (first ${r.rebootRequired.length} shown)` : ""}\n` +
          (r.rebootRequired.length > 0 ? table(["HOSTNAME", "ID", "HEALTH"], r.rebootRequired.map((a) => [a.hostname, a.id, enumName(AgentHealth, a.health).replace("_", " ")])) : "") +
          `\nrecent failures:\n` +
          table(
            ["FINISHED", "COMMAND", "HOST", "AGENT", "TYPE", "STATE", "MESSAGE"],
            r.recentFailures.map((c) => [time(c.finishTime)?.toISOString() ?? "", c.id, hosts.get(c.agentId) ?? "", c.agentId, enumName(CommandType, c.type), enumName(CommandState, c.state), c.result?.message ?? ""]),
          ) +
          `\ndaily (UTC):\n` +
          table(
            ["DAY", "FOUND", "INSTALLED", "INSTALL FAILED", "COMMANDS OK", "COMMANDS FAILED"],
            r.daily.map((d) => [day(d.day), d.updatesFound, d.updatesInstalled, d.updatesFailed, d.commandsSucceeded, d.commandsFailed].map(String)),
          ) +
          `\n${table(["OS", "AGENTS"], labels(r.agentsByOs))}\n${table(["AGENT VERSION", "AGENTS"], labels(r.agentsByVersion))}`,
      );
    });
}

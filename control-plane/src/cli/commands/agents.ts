import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { plural } from "@redflag/common/plural";
import { OsFamily } from "@redflag/gen/common_pb";
import {
  type Agent,
  AgentHealth,
  AgentSort,
  AllowReregistrationResponseSchema,
  DecommissionAgentResponseSchema,
  GetAgentConfigResponseSchema,
  GetAgentResponseSchema,
  ListAgentsResponseSchema,
  SetAgentLabelsResponseSchema,
} from "@redflag/gen/fleet_service_pb";
import { ListAgentMetricsResponseSchema } from "@redflag/gen/report_service_pb";
import { Argument, Option, type Command } from "commander";
import { AGENT_ARG, resolveAgent } from "../agent-ref.ts";
import type { CliContext } from "../context.ts";
import { collect, positiveInt, seconds } from "../options.ts";
import { ago, enumName, size, table, time } from "../output.ts";
import { registerAgentUpgrades } from "./agent-upgrades.ts";
import { printQueued } from "./commands.ts";

const HEALTH_NAMES = ["online", "offline", "stale", "never_reported", "decommissioned"] as const;

// Whether the host needs a reboot and which sources said so, or what could not be read.
function rebootLine(a: Agent): string {
  const by = a.status?.rebootRequiredBy ?? [];
  const unknown = a.status?.rebootRequiredUnknown;
  const overdue = a.rebootOverdueSince ? `; not back after its reboot (overdue since ${time(a.rebootOverdueSince)!.toISOString()})` : "";
  if (a.rebootRequired) return `required${by.length ? ` (by ${by.join(", ")})` : ""}${overdue}`;
  return `${unknown ? `not required as far as read (${unknown})` : "not required"}${overdue}`;
}

// redflag agents: registered agents (their upgrades: agent-upgrades.ts).
export function registerAgents(program: Command, cli: CliContext): void {
  const agents = program.command("agents").description("registered agents");

  agents
    .command("list")
    .description("list agents")
    .addOption(new Option("--health <health>", "only agents in this state").choices(HEALTH_NAMES))
    .addOption(new Option("--os <family>", "only this OS family").choices(["linux", "windows", "darwin"]))
    .option("--tag <tag>", "only agents with this tag")
    .option("--group <group>", "only agents in this group")
    .option("--search <text>", "hostname, OS name or agent ID contains")
    .option("--reboot-required", "only agents whose host needs a reboot")
    .addOption(new Option("--sort <field>", "order").choices(["hostname", "last_seen", "registered"]).default("hostname"))
    .option("--desc", "reverse the order")
    .action(async (o: { health?: string; os?: string; tag?: string; group?: string; search?: string; rebootRequired?: boolean; sort: string; desc?: boolean }) => {
      const res = await (await cli.clients()).fleet.listAgents({
        pageSize: 500,
        health: o.health ? (AgentHealth as unknown as Record<string, AgentHealth>)[o.health.toUpperCase()]! : AgentHealth.UNSPECIFIED,
        osFamily: o.os ? (OsFamily as unknown as Record<string, OsFamily>)[o.os.toUpperCase()]! : OsFamily.UNSPECIFIED,
        tag: o.tag ?? "",
        group: o.group ?? "",
        search: o.search ?? "",
        rebootRequired: o.rebootRequired === true,
        sort: (AgentSort as unknown as Record<string, AgentSort>)[o.sort.toUpperCase()]!,
        descending: o.desc === true,
      });
      if (cli.json()) return cli.printJson(ListAgentsResponseSchema, res);
      cli.out(
        table(
          ["ID", "HOSTNAME", "HEALTH", "OS", "VERSION", "LAST SEEN", "UPDATES", "REBOOT"],
          res.agents.map((a) => [
            a.id,
            a.hostname,
            enumName(AgentHealth, a.health).replace("_", " "),
            `${a.os?.name ?? ""} ${a.os?.version ?? ""}`.trim(),
            a.upgradeRequired ? `${a.agentVersion} (upgrade required)` : a.agentVersion,
            ago(time(a.lastSeenTime)),
            a.lastScanTime ? `${a.pendingUpdateCount} (${a.securityUpdateCount} security)` : "not scanned",
            [a.rebootRequired ? "required" : "", a.rebootOverdueSince ? "overdue" : ""].filter(Boolean).join(", "),
          ]),
        ),
      );
    });

  agents
    .command("get")
    .description("show one agent")
    .argument("<agent>", AGENT_ARG)
    .action(async (id: string) => {
      const c = await cli.clients();
      const res = await c.fleet.getAgent({ agentId: await resolveAgent(c, id) });
      if (cli.json()) return cli.printJson(GetAgentResponseSchema, res);
      const a = res.agent!;
      cli.out(
        [
          `id:          ${a.id}`,
          `hostname:    ${a.hostname}`,
          `health:      ${enumName(AgentHealth, a.health)}`,
          `os:          ${a.os?.name} ${a.os?.version} (${a.os?.kernel}, ${a.os?.arch})`,
          `version:     ${a.agentVersion}${a.upgradeRequired ? ` (upgrade required: below the minimum supported version; \`redflag agents upgrade ${a.id}\`)` : ""}`,
          `machine id:  ${a.machineId}`,
          `registered:  ${time(a.registerTime)?.toISOString()}`,
          `last seen:   ${ago(time(a.lastSeenTime))}`,
          `last scan:   ${ago(time(a.lastScanTime))}`,
          `updates:     ${a.pendingUpdateCount} pending, ${a.securityUpdateCount} security${Object.keys(a.updatesBySeverity).length ? ` (${Object.entries(a.updatesBySeverity).map(([s, n]) => `${n} ${s}`).join(", ")})` : ""}`,
          `labels:      ${a.tags.join(", ") || "(no tags)"}; group ${a.group || "(none)"}`,
          `reboot:      ${rebootLine(a)}`,
        ].join("\n") + "\n",
      );
    });

  agents
    .command("label")
    .description("set an agent's tags and group (replaces them)")
    .argument("<agent>", AGENT_ARG)
    .option("--tag <tag>", "a tag (repeatable)", collect)
    .option("--group <group>", "its group", "")
    .action(async (id: string, o: { tag?: string[]; group: string }) => {
      const c = await cli.clients();
      const res = await c.fleet.setAgentLabels({ agentId: await resolveAgent(c, id), tags: o.tag ?? [], group: o.group });
      if (cli.json()) return cli.printJson(SetAgentLabelsResponseSchema, res);
      cli.out(`${res.agent!.hostname}: tags ${res.agent!.tags.join(", ") || "(none)"}; group ${res.agent!.group || "(none)"}\n`);
    });

  agents
    .command("scan")
    .description("scan for updates now")
    .argument("<agent>", AGENT_ARG)
    .option("--subsystem <name>", "only this subsystem (repeatable)", collect)
    .action(async (id: string, o: { subsystem?: string[] }) => {
      const c = await cli.clients();
      printQueued(cli, (await c.fleet.triggerScan({ agentId: await resolveAgent(c, id, { live: true }), subsystems: o.subsystem ?? [] })).command!);
    });

  agents
    .command("heartbeat")
    .description("poll every few seconds for a while (on), or stop (off)")
    .argument("<agent>", AGENT_ARG)
    .addArgument(new Argument("<state>").choices(["on", "off"]))
    .option("--interval <duration>", "poll interval while on (default 5s)", seconds)
    .option("--duration <duration>", "how long (default 10m)", seconds)
    .action(async (id: string, state: string, o: { interval?: number; duration?: number }) => {
      const c = await cli.clients();
      printQueued(
        cli,
        (
          await c.fleet.setHeartbeat({
            agentId: await resolveAgent(c, id, { live: true }),
            enabled: state === "on",
            intervalSeconds: o.interval ?? 0,
            duration: o.duration ? durationFromMs(o.duration * 1000) : undefined,
          })
        ).command!,
      );
    });

  agents
    .command("reboot")
    .description("restart the host (only when it needs it, unless --force)")
    .argument("<agent>", AGENT_ARG)
    .option("--delay <duration>", "when (at least 1 minute)", seconds)
    .option("--message <text>", "message to logged-in users")
    .option("--force", "even when the host does not need it")
    .action(async (id: string, o: { delay?: number; message?: string; force?: boolean }) => {
      const c = await cli.clients();
      const agentId = await resolveAgent(c, id, { live: true });
      printQueued(cli, (await c.fleet.rebootAgent({ agentId, delaySeconds: o.delay ?? 0, message: o.message ?? "", force: o.force === true })).command!);
    });

  agents
    .command("decommission")
    .description("revoke the agent's credentials and cancel its pending commands (admins)")
    .argument("<agent>", AGENT_ARG)
    .action(async (id: string) => {
      const c = await cli.clients();
      const res = await c.fleet.decommissionAgent({ agentId: await resolveAgent(c, id, { live: true }) });
      if (cli.json()) return cli.printJson(DecommissionAgentResponseSchema, res);
      cli.out(`${res.agent!.hostname} decommissioned; ${plural(res.cancelledCommands, "pending command")} cancelled\n`);
    });

  agents
    .command("rebind")
    .description("accept a new machine ID for an agent after hardware changes (admins)")
    .argument("<agent>", AGENT_ARG)
    .argument("<machine-id>", "the 64-hex ID `redflag-agent status` shows")
    .action(async (id: string, machineId: string) => {
      const c = await cli.clients();
      const res = await c.fleet.rebindMachineId({ agentId: await resolveAgent(c, id, { live: true }), machineId });
      cli.out(`${res.agent!.hostname} now bound to ${res.agent!.machineId}\n`);
    });

  agents
    .command("allow-reregistration")
    .description("let one registration of the agent's machine through without its key, or let a decommissioned agent back (admins)")
    .argument("<agent>", AGENT_ARG)
    .option("--for <duration>", "how long the permission lasts, 1m to 7d", seconds, 3600)
    .action(async (id: string, o: { for: number }) => {
      const c = await cli.clients();
      const res = await c.fleet.allowReregistration({ agentId: await resolveAgent(c, id), validFor: durationFromMs(o.for * 1000) });
      if (cli.json()) return cli.printJson(AllowReregistrationResponseSchema, res);
      cli.out(
        `${res.agent!.hostname} may register again once until ${time(res.allowedUntil)!.toISOString()}; ` +
          "run `redflag-agent register` on it before then\n",
      );
    });

  agents
    .command("config")
    .description("the config an agent gets: subsystems (with its overrides) and holds")
    .argument("<agent>", AGENT_ARG)
    .action(async (id: string) => {
      const c = await cli.clients();
      const res = await c.fleet.getAgentConfig({ agentId: await resolveAgent(c, id) });
      if (cli.json()) return cli.printJson(GetAgentConfigResponseSchema, res);
      const own = new Set(res.overrides.map((s) => s.name));
      cli.out(
        table(
          ["SUBSYSTEM", "ENABLED", "AUTO", "INTERVAL", "TIMEOUT", "SET FOR THIS AGENT"],
          res.config!.subsystems.map((s) => [s.name, s.enabled ? "yes" : "no", s.autoRun ? "yes" : "no", `${s.intervalSeconds}s`, `${s.timeoutSeconds}s`, own.has(s.name) ? "yes" : ""]),
        ),
      );
      if (res.config!.holds.length > 0) cli.out(`holds: ${res.config!.holds.map((h) => `${h.source}:${h.name}`).join(", ")}\n`);
    });

  agents
    .command("metrics")
    .description("an agent's CPU, memory, load and disk readings over time, oldest first")
    .argument("<agent>", AGENT_ARG)
    .option("--since <duration>", "readings of the last …, for example 24h (default 7d)", seconds)
    .option("--limit <n>", "at most this many, the newest (default 288, at most 1000)", positiveInt)
    .action(async (id: string, o: { since?: number; limit?: number }) => {
      const c = await cli.clients();
      const res = await c.reports.listAgentMetrics({
        agentId: await resolveAgent(c, id),
        since: o.since ? timestampFromDate(new Date(Date.now() - o.since * 1000)) : undefined,
        limit: o.limit ?? 0,
      });
      if (cli.json()) return cli.printJson(ListAgentMetricsResponseSchema, res);
      cli.out(
        table(
          ["TIME", "CPU", "MEMORY", "LOAD", "FULLEST DISK", "REBOOT"],
          res.samples.map((s) => {
            const sys = s.system;
            // The disk with the highest share used: the one to watch.
            const disk = s.storage?.disks
              .filter((d) => d.sizeBytes > 0n)
              .sort((a, b) => Number(b.usedBytes) / Number(b.sizeBytes) - Number(a.usedBytes) / Number(a.sizeBytes))[0];
            return [
              time(s.time)!.toISOString(),
              sys ? `${sys.cpuUsagePercent.toFixed(1)}% of ${sys.cpuCores}` : "",
              sys ? `${size(sys.memoryUsedBytes)} / ${size(sys.memoryTotalBytes)}` : "",
              sys ? sys.loadAverage.map((l) => l.toFixed(2)).join(" ") : "",
              disk ? `${disk.mountPoint} ${Math.round((Number(disk.usedBytes) / Number(disk.sizeBytes)) * 100)}% of ${size(disk.sizeBytes)}` : "",
              sys?.rebootRequired ? "needed" : "",
            ];
          }),
        ),
      );
    });

  registerAgentUpgrades(agents, cli);
}

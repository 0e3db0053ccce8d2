import { create } from "@bufbuild/protobuf";
import { UpdateAgentSchema } from "@redflag/gen/command_pb";
import { CommandState, GetCommandResponseSchema } from "@redflag/gen/command_service_pb";
import { type AgentUpgrade, AgentUpgradeState, ListAgentUpgradesResponseSchema, StartFleetUpgradeResponseSchema } from "@redflag/gen/release_service_pb";
import { Option, type Command } from "commander";
import { hostnames, resolveAgent } from "../agent-ref.ts";
import { CliError, type CliContext } from "../context.ts";
import { percent, positiveInt, seconds } from "../options.ts";
import { ago, enumName, table, time } from "../output.ts";
import { describeCommand, printQueued, waitFor } from "./commands.ts";

// What an upgrade's states mean, after `agents upgrade --help`.
const UPGRADE_HELP = `
An upgrade succeeds only when the agent reports the new version; it fails when update_agent
fails or the agent does not report it in time (setting agent_upgrade_timeout), and is rolled
back when the agent comes back on its old version. Follow them with \`redflag agents upgrade-status\`.`;

interface FleetUpgradeOptions {
  all?: boolean;
  group?: string;
  tag?: string;
  percent?: number;
  version?: string;
}

const UPGRADE_STATES = ["queued", "installing", "succeeded", "failed", "rolled_back"];
const upgradeState = (state: AgentUpgradeState) => enumName(AgentUpgradeState, state);

// redflag agents upgrade and upgrade-status, on the `agents` command: one agent, or a fleet
// upgrade of all agents, a group, a tag or a share of them.
export function registerAgentUpgrades(agents: Command, cli: CliContext): void {
  agents
    .command("upgrade")
    .description("install an agent release from the registry on one agent, or on all, a group, a tag or a percentage of them (admins)")
    .argument("[agent]", "agent ID or hostname (or --all, --group, --tag)")
    .option("--version <version>", "a version from `redflag releases list` (default: the newest for each agent's platform)")
    .option("--wait <duration>", "one agent: wait until the agent reported the result, then print it", seconds)
    .option("--all", "every agent")
    .option("--group <group>", "the agents of this group")
    .option("--tag <tag>", "the agents with this tag")
    .option("--percent <n>", "with --all, --group or --tag: this share of them (1-100), the same agents every time", percent)
    .addHelpText("after", UPGRADE_HELP)
    .action(async (id: string | undefined, o: FleetUpgradeOptions & { wait?: number }) => {
      const picked = [o.all, o.group, o.tag].filter((x) => x !== undefined).length;
      if (id !== undefined && picked > 0) throw new CliError("name one agent, or --all, --group or --tag, not both");
      if (id === undefined) {
        if (picked !== 1) throw new CliError("name an agent (ID or hostname), or exactly one of --all, --group <group> and --tag <tag>");
        if (o.wait !== undefined) throw new CliError("--wait is for one agent; follow a fleet upgrade with `redflag agents upgrade-status --rollout <id>`");
        return fleetUpgrade(cli, o);
      }
      if (o.percent !== undefined) throw new CliError("--percent goes with --all, --group or --tag");
      const c = await cli.clients();
      const res = await c.commands.createCommand({ agentId: await resolveAgent(c, id, { live: true }), action: { case: "updateAgent", value: create(UpdateAgentSchema, { version: o.version ?? "" }) } });
      let command = res.command!;
      if (!o.wait) return printQueued(cli, command);
      command = await waitFor(c, command, o.wait);
      if (cli.json()) return cli.printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command }));
      cli.out(describeCommand(command, await hostnames(c, [command.agentId])));
      if (command.state !== CommandState.SUCCEEDED) cli.exitCode = 1;
    });

  agents
    .command("upgrade-status")
    .description("agent upgrades and where each one stands, newest first")
    .option("--rollout <id>", "only those of this fleet upgrade (as `agents upgrade --all/--group/--tag` printed)")
    .option("--agent <id>", "only this agent's")
    .addOption(new Option("--state <state>", "only in this state").choices(UPGRADE_STATES))
    .option("--limit <n>", "at most this many (newest first)", positiveInt, 200)
    .action(async (o: { rollout?: string; agent?: string; state?: string; limit: number }) => {
      const c = await cli.clients();
      const upgrades: AgentUpgrade[] = [];
      let pageToken = "";
      do {
        const page = await c.releases.listAgentUpgrades({
          rolloutId: o.rollout ?? "",
          agentId: o.agent ?? "",
          state: o.state ? (AgentUpgradeState as unknown as Record<string, AgentUpgradeState>)[o.state.toUpperCase()]! : AgentUpgradeState.UNSPECIFIED,
          pageSize: Math.min(500, o.limit - upgrades.length),
          pageToken,
        });
        upgrades.push(...page.upgrades);
        pageToken = page.nextPageToken;
      } while (pageToken && upgrades.length < o.limit);
      if (cli.json()) return cli.printJson(ListAgentUpgradesResponseSchema, create(ListAgentUpgradesResponseSchema, { upgrades, nextPageToken: pageToken }));
      cli.out(
        table(
          ["HOSTNAME", "AGENT", "FROM", "TO", "STATE", "UPDATED", "MESSAGE"],
          upgrades.map((u) => [u.hostname, u.agentId, u.fromVersion, u.toVersion, upgradeState(u.state).replace("_", " "), ago(time(u.updateTime)), u.message]),
        ),
      );
      const counts = UPGRADE_STATES.map((s) => [s, upgrades.filter((u) => upgradeState(u.state) === s).length] as const).filter(([, n]) => n > 0);
      if (counts.length > 0) cli.out(counts.map(([s, n]) => `${n} ${s.replace("_", " ")}`).join(", ") + (pageToken ? ` (the newest ${upgrades.length}; --limit for more)` : "") + "\n");
    });
}

async function fleetUpgrade(cli: CliContext, o: FleetUpgradeOptions) {
  const selection = o.all ? { case: "all" as const, value: true } : o.group !== undefined ? { case: "group" as const, value: o.group } : { case: "tag" as const, value: o.tag! };
  const res = await (await cli.clients()).releases.startFleetUpgrade({ selection, percent: o.percent ?? 0, version: o.version ?? "" });
  if (cli.json()) return cli.printJson(StartFleetUpgradeResponseSchema, res);
  const what = selection.case === "all" ? "all agents" : `${selection.case} ${selection.value}`;
  const share = o.percent ? `, ${res.chosenCount} chosen (${o.percent}%)` : "";
  cli.out(`fleet upgrade ${res.rolloutId} of ${what}: ${res.selectedCount} selected${share}, ${res.upgrades.length} queued, ${res.skipped.length} skipped\n`);
  if (res.upgrades.length > 0) {
    cli.out(table(["HOSTNAME", "AGENT", "FROM", "TO", "PLATFORM"], res.upgrades.map((u) => [u.hostname, u.agentId, u.fromVersion, u.toVersion, u.platform])));
  }
  if (res.skipped.length > 0) {
    cli.out("skipped:\n" + table(["HOSTNAME", "AGENT", "WHY"], res.skipped.map((s) => [s.hostname, s.agentId, s.reason])));
  }
  if (res.upgrades.length > 0) cli.out(`follow it with \`redflag agents upgrade-status --rollout ${res.rolloutId}\`\n`);
}

import { ListHoldsResponseSchema, SetHoldResponseSchema } from "@redflag/gen/update_service_pb";
import type { Command } from "commander";
import { AGENT_ARG, hostnames, resolveAgent } from "../agent-ref.ts";
import type { CliContext } from "../context.ts";
import { table } from "../output.ts";

// redflag holds: packages kept as they are, fleet-wide or per agent.
export function registerHolds(program: Command, cli: CliContext): void {
  const holds = program.command("holds").description("packages kept as they are, fleet-wide or per agent");

  holds
    .command("list")
    .option("--agent <agent>", `fleet-wide holds plus this agent's (${AGENT_ARG})`)
    .action(async (o: { agent?: string }) => {
      const c = await cli.clients();
      const res = await c.updates.listHolds({ agentId: o.agent ? await resolveAgent(c, o.agent) : "" });
      if (cli.json()) return cli.printJson(ListHoldsResponseSchema, res);
      const hosts = await hostnames(c, res.holds.map((h) => h.agentId).filter(Boolean));
      cli.out(
        table(
          ["SOURCE", "NAME", "HOST", "AGENT", "REASON", "BY", "ID"],
          res.holds.map((h) => [h.source, h.name, h.agentId ? (hosts.get(h.agentId) ?? "") : "(all)", h.agentId || "(all)", h.reason, h.createdBy, h.id]),
        ),
      );
    });

  holds
    .command("set")
    .requiredOption("--name <pattern>", 'package name; "*" matches anything ("linux-image-*")')
    .option("--source <name>", "one source, or every source (default)", "*")
    .option("--agent <agent>", `only this agent (${AGENT_ARG}; default: every agent)`)
    .option("--reason <text>", "why", "")
    .action(async (o: { name: string; source: string; agent?: string; reason: string }) => {
      const c = await cli.clients();
      const agentId = o.agent ? await resolveAgent(c, o.agent, { live: true }) : "";
      const res = await c.updates.setHold({ name: o.name, source: o.source, agentId, reason: o.reason });
      if (cli.json()) return cli.printJson(SetHoldResponseSchema, res);
      const h = res.hold!;
      const host = h.agentId ? (await hostnames(c, [h.agentId])).get(h.agentId) : undefined;
      cli.out(`holding ${h.source}:${h.name} on ${h.agentId ? (host ? `${host} (${h.agentId})` : h.agentId) : "every agent"}: ${h.id}\n`);
    });

  holds
    .command("remove")
    .argument("<id>", "hold ID")
    .action(async (id: string) => {
      await (await cli.clients()).updates.removeHold({ id });
      cli.out(`hold ${id} removed\n`);
    });
}

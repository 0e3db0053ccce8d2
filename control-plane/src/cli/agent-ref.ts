import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { isUuid } from "../ids.ts";
import { CliError, UnknownHostname, type Clients } from "./context.ts";
import { ago, enumName, table, time } from "./output.ts";

// Wherever the CLI takes an agent it takes the agent's ID or its hostname. A hostname names an
// agent only when exactly one agent has it (compared case-insensitively); otherwise the error
// says what there is to choose from. Lists that show agent IDs name the hosts too.
export const AGENT_ARG = "agent ID or hostname";
// How many agents sharing one hostname an error lists.
const SAME_HOSTNAME_SHOWN = 20;

export const healthName = (health: AgentHealth) => enumName(AgentHealth, health).replace("_", " ");

// The ID of the agent `ref` names. `live`: the command acts only on agents that are not
// decommissioned (the control plane refuses the others), so a decommissioned agent that had the
// same hostname is not a candidate while a live one has it.
export async function resolveAgent(c: Clients, ref: string, opts: { live?: boolean } = {}): Promise<string> {
  const name = ref.trim();
  if (isUuid(name.toLowerCase())) return name.toLowerCase();
  if (name === "") throw new CliError(`an ${AGENT_ARG} is needed`);
  const page = await c.fleet.listAgents({ hostname: name, pageSize: SAME_HOSTNAME_SHOWN });
  if (page.agents.length === 0) throw new UnknownHostname(`no agent has the hostname ${name}; \`redflag agents list\` shows them`);
  const live = opts.live ? page.agents.filter((a) => a.health !== AgentHealth.DECOMMISSIONED) : [];
  const candidates = live.length > 0 && !page.nextPageToken ? live : page.agents;
  if (candidates.length === 1 && !page.nextPageToken) return candidates[0]!.id;
  throw new CliError(
    `${page.nextPageToken ? `more than ${candidates.length}` : candidates.length} agents have the hostname ${name}; use the ID of the one you mean:\n` +
      table(
        ["ID", "HOSTNAME", "LAST SEEN", "STATE"],
        candidates.map((a) => [a.id, a.hostname, ago(time(a.lastSeenTime)), healthName(a.health)]),
      ).trimEnd(),
  );
}

export const resolveAgents = (c: Clients, refs: string[] | undefined, opts: { live?: boolean } = {}) =>
  Promise.all((refs ?? []).map((ref) => resolveAgent(c, ref, opts)));

// The hostnames of these agents, one call for up to 500 (a page of any list); agents that do
// not exist are left out.
export async function hostnames(c: Clients, ids: Iterable<string>): Promise<Map<string, string>> {
  const unique = [...new Set(ids)].filter(isUuid);
  const names = new Map<string, string>();
  for (let i = 0; i < unique.length; i += 500) {
    const res = await c.fleet.listAgents({ agentIds: unique.slice(i, i + 500), pageSize: 500 });
    for (const a of res.agents) names.set(a.id, a.hostname);
  }
  return names;
}

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ListAuditEntriesResponseSchema } from "@redflag/gen/audit_service_pb";
import type { Command } from "commander";
import { isUuid } from "../../ids.ts";
import { hostnames, resolveAgent } from "../agent-ref.ts";
import { UnknownHostname, type CliContext, type Clients } from "../context.ts";
import { positiveInt, seconds } from "../options.ts";
import { table, time } from "../output.ts";

// redflag audit: who changed what (admins).
export function registerAudit(program: Command, cli: CliContext): void {
  program
    .command("audit")
    .description("who changed what (admins)")
    .option("--actor <name>", "only this person or key")
    .option("--action <text>", "only RPCs containing this, for example CreateUser")
    .option("--target <prefix>", "only targets starting with this, for example user:<id> or agent:<id> (or agent:<hostname>)")
    .option("--since <duration>", "only the last …, for example 24h", seconds)
    .option("--limit <n>", "at most this many (default 50)", positiveInt)
    .action(async (o: { actor?: string; action?: string; target?: string; since?: number; limit?: number }) => {
      const c = await cli.clients();
      const res = await c.audit.listAuditEntries({
        actorName: o.actor ?? "",
        action: o.action ?? "",
        target: o.target ? await auditTarget(c, o.target) : "",
        since: o.since ? timestampFromDate(new Date(Date.now() - o.since * 1000)) : undefined,
        pageSize: Math.min(o.limit ?? 50, 500),
      });
      if (cli.json()) return cli.printJson(ListAuditEntriesResponseSchema, res);
      const agentOf = (target: string) => (target.startsWith("agent:") ? target.slice("agent:".length) : "");
      const hosts = await hostnames(c, res.entries.map((e) => agentOf(e.target)));
      const target = (t: string) => (hosts.has(agentOf(t)) ? `${t} (${hosts.get(agentOf(t))})` : t);
      cli.out(
        table(
          ["TIME", "ACTOR", "ACTION", "TARGET", "FROM", "OUTCOME"],
          res.entries.map((e) => [time(e.time)!.toISOString(), `${e.actorName} (${e.actorKind.replace("_", " ")})`, e.action.replace(/^redflag\.v1\./, ""), target(e.target), e.remoteAddr, e.outcome]),
        ),
      );
    });
}

// --target agent:<hostname> means that agent's ID. What follows "agent:" stays a prefix of IDs
// when it is one and no agent has it as its hostname.
async function auditTarget(c: Clients, target: string): Promise<string> {
  const rest = target.startsWith("agent:") ? target.slice("agent:".length) : "";
  if (rest === "" || isUuid(rest)) return target;
  try {
    return `agent:${await resolveAgent(c, rest)}`;
  } catch (err) {
    if (err instanceof UnknownHostname && /^[0-9a-f-]{1,35}$/.test(rest)) return target;
    throw err;
  }
}

import { create } from "@bufbuild/protobuf";
import { formatDuration } from "@redflag/common/config-values";
import {
  CreateRebootPolicyResponseSchema,
  ListRebootPoliciesResponseSchema,
  RebootMode,
  type RebootPolicy,
  RebootPolicySpecSchema,
  UpdateRebootPolicyResponseSchema,
} from "@redflag/gen/maintenance_service_pb";
import { Option, type Command } from "commander";
import { isUuid } from "../../ids.ts";
import { AGENT_ARG, hostnames, resolveAgents } from "../agent-ref.ts";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { collect, seconds } from "../options.ts";
import { table } from "../output.ts";

// redflag reboot-policies: when hosts reboot after an install (MaintenanceService).

const MODES = { never: RebootMode.NEVER, "when-required": RebootMode.WHEN_REQUIRED, always: RebootMode.ALWAYS } as const;
const modeName = (m: RebootMode) => (Object.entries(MODES).find(([, v]) => v === m)?.[0] ?? "unspecified");
const POLICY_ARG = "reboot policy ID or name";
const MODE_HELP = "never; when-required (after an install that installed something, or while the host says it needs one; the agent reboots only if it still does); always (after every install that installed something)";
const HOOK_HELP = "the name of an executable in the agent's hooks directory (/etc/redflag-agent/hooks on Linux), put there by the host's owner";

interface DefinitionOptions {
  name?: string;
  mode?: keyof typeof MODES;
  group?: string[];
  tag?: string[];
  agent?: string[];
  allAgents?: boolean;
  windowOnly?: boolean;
  preHook?: string;
  postHook?: string;
  hookTimeout?: number;
  returnTimeout?: number;
}

function definitionOptions(cmd: Command): Command {
  return cmd
    .option("--group <group>", "apply to this group (repeatable)", collect)
    .option("--tag <tag>", "apply to agents with this tag (repeatable)", collect)
    .option("--agent <agent>", `apply to this agent (${AGENT_ARG}; repeatable)`, collect)
    .option("--all-agents", "apply to every agent")
    .option("--pre-hook <name>", `run before the reboot is scheduled; a failure cancels it. ${HOOK_HELP}`)
    .option("--post-hook <name>", `run when the agent starts after the reboot. ${HOOK_HELP}`)
    .option("--hook-timeout <duration>", "time limit of each hook, 1s to 30m (default 5m)", seconds)
    .option("--return-timeout <duration>", "how long the host has to poll again after its reboot time before it is flagged, 1m to 24h (default 15m)", seconds);
}

async function resolvePolicy(c: Clients, ref: string): Promise<RebootPolicy> {
  const { policies } = await c.maintenance.listRebootPolicies({});
  const id = ref.toLowerCase();
  const found = isUuid(id) ? policies.find((p) => p.id === id) : policies.find((p) => p.spec?.name === ref);
  if (!found) throw new CliError(`no reboot policy ${isUuid(id) ? "has the ID" : "is named"} ${ref}; \`redflag reboot-policies list\` shows them`);
  return found;
}

const CREATE_EXAMPLES = `Examples:
  redflag reboot-policies create --name "web nightly" --group web --mode always --window-only --pre-hook drain --post-hook undrain --hook-timeout 2m
  redflag reboot-policies create --name "fleet default" --all-agents --mode when-required --return-timeout 30m`;

export function registerRebootPolicies(program: Command, cli: CliContext): void {
  const policies = program
    .command("reboot-policies")
    .description("when hosts reboot after an install: never, when required or always, at once or only in a maintenance window, with pre- and post-reboot hooks")
    .addHelpText(
      "after",
      "\nWhen several enabled policies apply to an agent, the most specific wins: one naming the agent, then one of its tags,\nthen its group, then one for all agents; among equals, the first by name. A blackout window always makes a reboot wait.",
    );

  policies
    .command("list")
    .description("reboot policies by name")
    .action(async () => {
      const c = await cli.clients();
      const res = await c.maintenance.listRebootPolicies({});
      if (cli.json()) return cli.printJson(ListRebootPoliciesResponseSchema, res);
      const hosts = await hostnames(c, res.policies.flatMap((p) => p.spec?.targets?.agentIds ?? []));
      cli.out(
        table(
          ["NAME", "MODE", "APPLIES TO", "WHEN", "PRE-HOOK", "POST-HOOK", "HOOK LIMIT", "RETURN WITHIN", "STATE", "ID"],
          res.policies.map((p) => {
            const s = p.spec!;
            const t = s.targets;
            const applies = t?.allAgents ? "all agents" : [...(t?.groups ?? []).map((g) => `group:${g}`), ...(t?.tags ?? []).map((g) => `tag:${g}`), ...(t?.agentIds ?? []).map((id) => `agent:${hosts.get(id) ?? id}`)].join(",");
            return [
              s.name,
              modeName(s.mode),
              applies,
              s.windowOnly ? "in a window" : "at once",
              s.preHook || "-",
              s.postHook || "-",
              formatDuration(Number(s.hookTimeout?.seconds ?? 0n)),
              formatDuration(Number(s.returnTimeout?.seconds ?? 0n)),
              s.enabled ? "enabled" : "disabled",
              p.id,
            ];
          }),
        ),
      );
    });

  definitionOptions(
    policies
      .command("create")
      .description("add a reboot policy")
      .requiredOption("--name <name>", "unique name")
      .addOption(new Option("--mode <mode>", MODE_HELP).choices(Object.keys(MODES)).makeOptionMandatory())
      .option("--window-only", "reboot only while a maintenance window is open for the host (else as soon as the install has finished)")
      .option("--disabled", "create it disabled")
      .addHelpText("after", `\n${CREATE_EXAMPLES}`),
  ).action(async (o: DefinitionOptions & { disabled?: boolean }) => {
    const c = await cli.clients();
    const res = await c.maintenance.createRebootPolicy({
      policy: create(RebootPolicySpecSchema, {
        name: o.name!,
        mode: MODES[o.mode!],
        targets: { allAgents: o.allAgents ?? false, groups: o.group ?? [], tags: o.tag ?? [], agentIds: await resolveAgents(c, o.agent, { live: true }) },
        windowOnly: o.windowOnly ?? false,
        preHook: o.preHook ?? "",
        postHook: o.postHook ?? "",
        hookTimeout: o.hookTimeout !== undefined ? { seconds: BigInt(o.hookTimeout) } : undefined,
        returnTimeout: o.returnTimeout !== undefined ? { seconds: BigInt(o.returnTimeout) } : undefined,
        enabled: !o.disabled,
      }),
    });
    if (cli.json()) return cli.printJson(CreateRebootPolicyResponseSchema, res);
    cli.out(`created reboot policy "${res.policy!.spec!.name}" (${modeName(res.policy!.spec!.mode)}): ${res.policy!.id}\n`);
  });

  definitionOptions(
    policies
      .command("update")
      .description("change a reboot policy; options not given keep their value, any of --group, --tag, --agent or --all-agents replaces the targets, and --pre-hook \"\" removes a hook")
      .argument("<policy>", POLICY_ARG)
      .option("--name <name>", "new name")
      .addOption(new Option("--mode <mode>", MODE_HELP).choices(Object.keys(MODES)))
      .option("--window-only", "reboot only while a maintenance window is open for the host")
      .option("--no-window-only", "reboot as soon as the install has finished")
      .option("--enable", "enable it")
      .option("--disable", "disable it (kept, but it applies to no one)"),
  ).action(async (ref: string, o: DefinitionOptions & { enable?: boolean; disable?: boolean }) => {
    if (o.enable && o.disable) throw new CliError("--enable and --disable contradict each other");
    const c = await cli.clients();
    const current = await resolvePolicy(c, ref);
    const s = current.spec!;
    const retarget = o.group || o.tag || o.agent || o.allAgents;
    const res = await c.maintenance.updateRebootPolicy({
      id: current.id,
      policy: create(RebootPolicySpecSchema, {
        name: o.name ?? s.name,
        mode: o.mode ? MODES[o.mode] : s.mode,
        targets: retarget ? { allAgents: o.allAgents ?? false, groups: o.group ?? [], tags: o.tag ?? [], agentIds: await resolveAgents(c, o.agent, { live: true }) } : s.targets,
        windowOnly: o.windowOnly ?? s.windowOnly,
        preHook: o.preHook ?? s.preHook,
        postHook: o.postHook ?? s.postHook,
        hookTimeout: o.hookTimeout !== undefined ? { seconds: BigInt(o.hookTimeout) } : s.hookTimeout,
        returnTimeout: o.returnTimeout !== undefined ? { seconds: BigInt(o.returnTimeout) } : s.returnTimeout,
        enabled: o.enable ? true : o.disable ? false : s.enabled,
      }),
    });
    if (cli.json()) return cli.printJson(UpdateRebootPolicyResponseSchema, res);
    cli.out(`updated reboot policy "${res.policy!.spec!.name}": ${res.policy!.id}\n`);
  });

  policies
    .command("delete")
    .description("remove a reboot policy")
    .argument("<policy>", POLICY_ARG)
    .action(async (ref: string) => {
      const c = await cli.clients();
      const p = await resolvePolicy(c, ref);
      await c.maintenance.deleteRebootPolicy({ id: p.id });
      cli.out(`reboot policy "${p.spec!.name}" deleted\n`);
    });
}

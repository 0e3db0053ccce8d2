import { create } from "@bufbuild/protobuf";
import { formatDuration } from "@redflag/common/config-values";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import {
  CreatePolicyResponseSchema,
  ListPoliciesResponseSchema,
  type Policy,
  PolicyCriteriaSchema,
  type PolicyDefinition,
  PolicyDefinitionSchema,
  PreviewPolicyResponseSchema,
  UpdatePolicyResponseSchema,
} from "@redflag/gen/policy_service_pb";
import { InvalidArgumentError, type Command } from "commander";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { collect, positiveInt, seconds, SEVERITY_NAMES, severityArg } from "../options.ts";
import { enumName, table, time } from "../output.ts";

// redflag policies: rules that approve pending updates without a person.

interface DefinitionOptions {
  name?: string;
  severity?: string[];
  securityOnly?: boolean;
  source?: string[];
  package?: string[];
  group?: string[];
  tag?: string[];
  exclude?: string[];
  delay?: number;
  order?: number;
  enable?: boolean;
  disable?: boolean;
  clear?: string[];
}

// The lists `--clear` empties (on update and preview of a saved rule).
const LISTS = ["severities", "sources", "packages", "groups", "tags", "exclusions"] as const;

function clearArg(value: string, previous: string[] = []): string[] {
  if (!(LISTS as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${LISTS.join(", ")}`);
  return [...previous, value];
}

function orderArg(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError("must be a whole number");
  return n;
}

const definitionOptions = (cmd: Command, verb: "create" | "change") =>
  cmd
    .option("--severity <level>", `only updates of this severity (repeatable): ${SEVERITY_NAMES.join(", ")}`, severityArg)
    .option("--security-only", "only security updates")
    .option("--source <name>", "only this package source (repeatable): apt, dnf, docker …", collect)
    .option("--package <pattern>", 'only packages matching this name pattern (repeatable); "*" matches anything ("linux-*")', collect)
    .option("--group <group>", "only agents in this group (repeatable)", collect)
    .option("--tag <tag>", "only agents with this tag (repeatable)", collect)
    .option("--exclude <pattern>", "never packages matching this name pattern (repeatable)", collect)
    .option("--delay <duration>", `approve only this long after the version was first seen ("2d", "12h"${verb === "create" ? "; default 0: at once" : ""})`, seconds)
    .option("--order <n>", `rules are applied in ascending order; the first that matches is recorded${verb === "create" ? " (default 0)" : ""}`, orderArg);

// A definition with the options applied: each option given replaces that field of `base`.
function applyOptions(base: PolicyDefinition, o: DefinitionOptions): PolicyDefinition {
  const d = create(PolicyDefinitionSchema, { ...base, criteria: create(PolicyCriteriaSchema, base.criteria ?? {}) });
  const c = d.criteria!;
  for (const list of o.clear ?? []) {
    if (list === "severities") c.severities = [];
    if (list === "sources") c.sources = [];
    if (list === "packages") c.namePatterns = [];
    if (list === "groups") c.groups = [];
    if (list === "tags") c.tags = [];
    if (list === "exclusions") d.exclusions = [];
  }
  if (o.name !== undefined) d.name = o.name;
  if (o.severity) c.severities = o.severity.map((s) => (UpdateSeverity as unknown as Record<string, UpdateSeverity>)[s.toUpperCase()]!);
  if (o.securityOnly !== undefined) c.securityOnly = o.securityOnly;
  if (o.source) c.sources = o.source;
  if (o.package) c.namePatterns = o.package;
  if (o.group) c.groups = o.group;
  if (o.tag) c.tags = o.tag;
  if (o.exclude) d.exclusions = o.exclude;
  if (o.delay !== undefined) d.delaySeconds = o.delay;
  if (o.order !== undefined) d.order = o.order;
  if (o.enable) d.enabled = true;
  if (o.disable) d.enabled = false;
  return d;
}

// A rule named by its ID or its name.
async function findPolicy(c: Clients, ref: string): Promise<Policy> {
  const { policies } = await c.policies.listPolicies({});
  const found = policies.find((p) => p.id === ref) ?? policies.find((p) => p.definition?.name === ref);
  if (!found) throw new CliError(`no policy has the ID or name "${ref}" (see \`redflag policies list\`)`);
  return found;
}

// What a rule chooses, in one line.
function describeCriteria(d: PolicyDefinition): string {
  const c = d.criteria;
  const parts: string[] = [];
  if (c?.severities.length) parts.push(`severity ${c.severities.map((s) => enumName(UpdateSeverity, s)).join("|")}`);
  if (c?.securityOnly) parts.push("security only");
  if (c?.sources.length) parts.push(`source ${c.sources.join("|")}`);
  if (c?.namePatterns.length) parts.push(`package ${c.namePatterns.join("|")}`);
  if (c?.groups.length) parts.push(`group ${c.groups.join("|")}`);
  if (c?.tags.length) parts.push(`tag ${c.tags.join("|")}`);
  if (d.exclusions.length) parts.push(`except ${d.exclusions.join("|")}`);
  return parts.join(", ");
}

const delayText = (s: number) => (s === 0 ? "at once" : `after ${formatDuration(s)}`);

export function registerPolicies(program: Command, cli: CliContext): void {
  const policies = program
    .command("policies")
    .description("rules that approve pending updates without a person (holds always win)")
    .addHelpText(
      "after",
      `
Every criterion given must match (within a repeated option, any value does). The control plane
applies enabled rules every few seconds and audits each approval with the rule that made it.
Approving is not installing: run \`redflag updates install\` (or a schedule) for that.

Example: security updates two days after they were first seen, except kernels:
  redflag policies create --name "security after 2 days" --security-only --delay 2d --exclude "linux-image-*"
  redflag policies preview "security after 2 days"`,
    );

  policies
    .command("list")
    .description("every rule, in the order they are applied")
    .action(async () => {
      const res = await (await cli.clients()).policies.listPolicies({});
      if (cli.json()) return cli.printJson(ListPoliciesResponseSchema, res);
      cli.out(
        table(
          ["ORDER", "NAME", "ENABLED", "CHOOSES", "APPROVES", "ID"],
          res.policies.map((p) => {
            const d = p.definition!;
            return [String(d.order), d.name, d.enabled ? "yes" : "no", describeCriteria(d), delayText(d.delaySeconds), p.id];
          }),
        ),
      );
    });

  definitionOptions(
    policies
      .command("create")
      .description("add a rule (enabled unless --disabled)")
      .requiredOption("--name <name>", "a unique name, shown in the audit log as who approved")
      .option("--disabled", "save it without applying it yet"),
    "create",
  ).action(async (o: DefinitionOptions & { name: string; disabled?: boolean }) => {
    const definition = applyOptions(create(PolicyDefinitionSchema, { enabled: o.disabled !== true }), o);
    const res = await (await cli.clients()).policies.createPolicy({ definition });
    if (cli.json()) return cli.printJson(CreatePolicyResponseSchema, res);
    const d = res.policy!.definition!;
    cli.out(`policy "${d.name}" created${d.enabled ? "" : " (disabled)"}: approves ${describeCriteria(d)} ${delayText(d.delaySeconds)}: ${res.policy!.id}\n`);
  });

  definitionOptions(
    policies
      .command("update")
      .description("change a rule: each option given replaces that part, the rest stays")
      .argument("<policy>", "the rule's ID or name")
      .option("--name <name>", "rename it")
      .option("--enable", "apply it")
      .option("--disable", "stop applying it (it stays saved)")
      .option("--no-security-only", "not only security updates")
      .option("--clear <list>", `empty a list (repeatable): ${LISTS.join(", ")}`, clearArg),
    "change",
  ).action(async (ref: string, o: DefinitionOptions) => {
    if (o.enable && o.disable) throw new CliError("--enable and --disable contradict each other; give one");
    const c = await cli.clients();
    const current = await findPolicy(c, ref);
    const res = await c.policies.updatePolicy({ id: current.id, definition: applyOptions(current.definition!, o) });
    if (cli.json()) return cli.printJson(UpdatePolicyResponseSchema, res);
    const d = res.policy!.definition!;
    cli.out(`policy "${d.name}" updated${d.enabled ? "" : " (disabled)"}: approves ${describeCriteria(d)} ${delayText(d.delaySeconds)}\n`);
  });

  policies
    .command("delete")
    .description("remove a rule; what it approved stays approved")
    .argument("<policy>", "the rule's ID or name")
    .action(async (ref: string) => {
      const c = await cli.clients();
      const p = await findPolicy(c, ref);
      await c.policies.deletePolicy({ id: p.id });
      cli.out(`policy "${p.definition!.name}" deleted\n`);
    });

  definitionOptions(
    policies
      .command("preview")
      .description("what a rule would approve right now; changes nothing")
      .argument("[policy]", "a saved rule's ID or name; the options given change it for the preview only")
      .option("--clear <list>", `empty a list of the saved rule (repeatable): ${LISTS.join(", ")}`, clearArg)
      .option("--limit <n>", "show at most this many updates (at most 500)", positiveInt, 50),
    "change",
  ).action(async (ref: string | undefined, o: DefinitionOptions & { limit: number }) => {
    const c = await cli.clients();
    const base = ref ? (await findPolicy(c, ref)).definition! : create(PolicyDefinitionSchema, { name: "preview", enabled: true });
    const res = await c.policies.previewPolicy({ rule: { case: "definition", value: applyOptions(base, o) }, pageSize: o.limit });
    if (cli.json()) return cli.printJson(PreviewPolicyResponseSchema, res);
    cli.out(`would approve ${res.approvable} update(s) on ${res.agents} agent(s) now; ${res.waiting} more once the delay has passed; ${res.held} kept by holds\n`);
    if (res.matches.length > 0) {
      cli.out(
        table(
          ["HOST", "SOURCE", "PACKAGE", "VERSION", "SEVERITY", "SEEN"],
          res.matches.map((m) => [m.hostname, m.source, m.name, m.availableVersion, enumName(UpdateSeverity, m.severity), time(m.firstSeenTime)!.toISOString()]),
        ),
      );
    }
    if (res.approvable > BigInt(res.matches.length)) cli.out(`(first ${res.matches.length}; --limit shows more)\n`);
  });
}

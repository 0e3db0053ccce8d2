import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { formatDuration } from "@redflag/common/config-values";
import {
  CreateWindowResponseSchema,
  ListWindowsResponseSchema,
  PreviewWindowResponseSchema,
  UpdateWindowResponseSchema,
  type Window,
  WindowKind,
  type WindowSpec,
  WindowSpecSchema,
} from "@redflag/gen/maintenance_service_pb";
import { InvalidArgumentError, Option, type Command } from "commander";
import { isUuid } from "../../ids.ts";
import { AGENT_ARG, hostnames, resolveAgent, resolveAgents } from "../agent-ref.ts";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { collect, positiveInt, seconds } from "../options.ts";
import { table, time } from "../output.ts";

// redflag windows: recurring maintenance and blackout windows (MaintenanceService).

const KINDS = { maintenance: WindowKind.MAINTENANCE, blackout: WindowKind.BLACKOUT } as const;
const kindName = (k: WindowKind) => (k === WindowKind.BLACKOUT ? "blackout" : k === WindowKind.MAINTENANCE ? "maintenance" : "unspecified");
// A maintenance window that installs by itself says so in the KIND column.
const kindText = (s: WindowSpec) => `${kindName(s.kind)}${s.autoInstall ? " (auto-install)" : ""}`;
const AUTO_INSTALL_HELP = "maintenance only: while it is open, queue the install of each agent's approved, not held updates (bounded by its end)";
const WINDOW_ARG = "window ID or name";

const RULE_HELP = `RFC 5545 RRULE: FREQ=DAILY, WEEKLY, MONTHLY or YEARLY, with INTERVAL, COUNT, UNTIL (UTC, 20271231T235959Z), BYDAY, BYMONTHDAY, BYMONTH, BYSETPOS... ("FREQ=WEEKLY;BYDAY=SA", "FREQ=MONTHLY;BYDAY=1SU"); every occurrence starts at --start's time of day`;
const START_HELP = "first occurrence, local to --time-zone, without an offset (2026-01-03T22:00)";
const ZONE_HELP = "IANA time zone (Europe/Berlin, America/New_York, UTC)";

function afterTime(value: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime()) || !/(Z|[+-]\d{2}:\d{2})$/.test(value)) throw new InvalidArgumentError("must be a time with its offset, such as 2026-03-28T00:00Z or 2026-03-28T00:00+01:00");
  return d;
}

interface DefinitionOptions {
  name?: string;
  kind?: keyof typeof KINDS;
  rrule?: string;
  start?: string;
  duration?: number;
  timeZone?: string;
  group?: string[];
  tag?: string[];
  agent?: string[];
  allAgents?: boolean;
}

// The options that define a window; create requires the recurrence ones.
function definitionOptions(cmd: Command, required: boolean): Command {
  const opt = (flags: string, help: string) => (required ? cmd.requiredOption(flags, help) : cmd.option(flags, help));
  opt("--rrule <rule>", RULE_HELP);
  opt("--start <local-date-time>", START_HELP);
  if (required) cmd.requiredOption("--duration <duration>", "how long each occurrence stays open (30m, 4h, 3d)", seconds);
  else cmd.option("--duration <duration>", "how long each occurrence stays open (30m, 4h, 3d)", seconds);
  opt("--time-zone <zone>", ZONE_HELP);
  return cmd
    .option("--group <group>", "apply to this group (repeatable)", collect)
    .option("--tag <tag>", "apply to agents with this tag (repeatable)", collect)
    .option("--agent <agent>", `apply to this agent (${AGENT_ARG}; repeatable)`, collect)
    .option("--all-agents", "apply to every agent");
}

// The window named by ID or by name.
async function resolveWindow(c: Clients, ref: string): Promise<Window> {
  const { windows } = await c.maintenance.listWindows({});
  const found = isUuid(ref.toLowerCase()) ? windows.find((w) => w.id === ref.toLowerCase()) : windows.find((w) => w.spec?.name === ref);
  if (!found) throw new CliError(`no window ${isUuid(ref.toLowerCase()) ? "has the ID" : "is named"} ${ref}; \`redflag windows list\` shows them`);
  return found;
}

const targetsText = (w: WindowSpec, hosts: Map<string, string>) => {
  const t = w.targets;
  if (!t) return "";
  if (t.allAgents) return "all agents";
  return [...t.groups.map((g) => `group:${g}`), ...t.tags.map((g) => `tag:${g}`), ...t.agentIds.map((id) => `agent:${hosts.get(id) ?? id}`)].join(",");
};

// Printed under `redflag windows create --help`; each line runs as printed (windows-cli.test.ts).
const CREATE_EXAMPLES = `Examples:
  redflag windows create --name "db saturdays" --group db --rrule "FREQ=WEEKLY;BYDAY=SA" --start 2026-01-03T22:00 --duration 4h --time-zone Europe/Berlin
  redflag windows create --name "web patch nights" --group web --auto-install --rrule "FREQ=WEEKLY;BYDAY=TU,TH" --start 2026-01-06T01:00 --duration 3h --time-zone UTC
  redflag windows create --name "year-end freeze" --kind blackout --all-agents --rrule FREQ=YEARLY --start 2026-12-20T00:00 --duration 16d --time-zone America/New_York
  redflag windows preview "db saturdays" --count 5`;

const utc = (d: Date | undefined) => (d ? d.toISOString().replace(/:\d{2}\.\d{3}Z$/, "Z") : "");

export function registerWindows(program: Command, cli: CliContext): void {
  const windows = program
    .command("windows")
    .description("recurring maintenance and blackout windows: installs queued in a maintenance window stop starting packages at its end; a blackout refuses installs and reboots")
    .addHelpText(
      "after",
      "\nDaylight saving (RFC 5545): an occurrence whose local start the clocks skip (02:30 on the spring-forward day) is left out;\none whose local start happens twice (01:30 on the fall-back day) starts at the first. Durations are elapsed time.",
    );

  windows
    .command("list")
    .description("windows by name: what they apply to, whether one is open now and until when, when the next opens")
    .option("--agent <agent>", `only the windows that apply to this agent (${AGENT_ARG})`)
    .action(async (o: { agent?: string }) => {
      const c = await cli.clients();
      const res = await c.maintenance.listWindows({ agentId: o.agent ? await resolveAgent(c, o.agent) : "" });
      if (cli.json()) return cli.printJson(ListWindowsResponseSchema, res);
      const hosts = await hostnames(c, res.windows.flatMap((w) => w.spec?.targets?.agentIds ?? []));
      cli.out(
        table(
          ["NAME", "KIND", "RRULE", "START", "DURATION", "TIME ZONE", "APPLIES TO", "STATE", "NEXT (UTC)", "ID"],
          res.windows.map((w) => {
            const s = w.spec!;
            const open = time(w.openUntil);
            const state = !s.enabled ? "disabled" : open ? `open until ${utc(open)}` : "closed";
            return [s.name, kindText(s), s.rrule, s.dtstart, formatDuration(Number(s.duration?.seconds ?? 0n)), s.timeZone, targetsText(s, hosts), state, utc(time(w.nextStartTime)), w.id];
          }),
        ),
      );
    });

  definitionOptions(
    windows
      .command("create")
      .description("add a window")
      .requiredOption("--name <name>", "unique name")
      .addOption(new Option("--kind <kind>", "maintenance, or blackout (refuses installs and reboots while open)").choices(Object.keys(KINDS)).default("maintenance"))
      .option("--disabled", "create it disabled")
      .option("--auto-install", AUTO_INSTALL_HELP)
      .addHelpText("after", `\n${CREATE_EXAMPLES}`),
    true,
  ).action(async (o: DefinitionOptions & { disabled?: boolean; autoInstall?: boolean }) => {
    const c = await cli.clients();
    const res = await c.maintenance.createWindow({
      window: create(WindowSpecSchema, {
        name: o.name!,
        kind: KINDS[o.kind!],
        rrule: o.rrule!,
        dtstart: o.start!,
        duration: { seconds: BigInt(o.duration!) },
        timeZone: o.timeZone!,
        targets: { allAgents: o.allAgents ?? false, groups: o.group ?? [], tags: o.tag ?? [], agentIds: await resolveAgents(c, o.agent, { live: true }) },
        enabled: !o.disabled,
        autoInstall: o.autoInstall ?? false,
      }),
    });
    if (cli.json()) return cli.printJson(CreateWindowResponseSchema, res);
    const w = res.window!;
    const next = time(w.nextStartTime);
    cli.out(`created ${kindText(w.spec!)} window "${w.spec!.name}": ${w.id}${next ? `; next opens ${utc(next)}` : ""}\n`);
  });

  definitionOptions(
    windows
      .command("update")
      .description("change a window; options not given keep their value, and any of --group, --tag, --agent or --all-agents replaces the targets")
      .argument("<window>", WINDOW_ARG)
      .option("--name <name>", "new name")
      .addOption(new Option("--kind <kind>", "maintenance or blackout").choices(Object.keys(KINDS)))
      .option("--enable", "enable it")
      .option("--disable", "disable it (kept, but it neither opens nor refuses anything)")
      .option("--auto-install", AUTO_INSTALL_HELP)
      .option("--no-auto-install", "stop installing by itself"),
    false,
  ).action(async (ref: string, o: DefinitionOptions & { enable?: boolean; disable?: boolean; autoInstall?: boolean }) => {
    if (o.enable && o.disable) throw new CliError("--enable and --disable contradict each other");
    const c = await cli.clients();
    const current = await resolveWindow(c, ref);
    const s = current.spec!;
    const retarget = o.group || o.tag || o.agent || o.allAgents;
    const res = await c.maintenance.updateWindow({
      id: current.id,
      window: create(WindowSpecSchema, {
        name: o.name ?? s.name,
        kind: o.kind ? KINDS[o.kind] : s.kind,
        rrule: o.rrule ?? s.rrule,
        dtstart: o.start ?? s.dtstart,
        duration: o.duration !== undefined ? { seconds: BigInt(o.duration) } : s.duration,
        timeZone: o.timeZone ?? s.timeZone,
        targets: retarget
          ? { allAgents: o.allAgents ?? false, groups: o.group ?? [], tags: o.tag ?? [], agentIds: await resolveAgents(c, o.agent, { live: true }) }
          : s.targets,
        enabled: o.enable ? true : o.disable ? false : s.enabled,
        autoInstall: o.autoInstall ?? s.autoInstall,
      }),
    });
    if (cli.json()) return cli.printJson(UpdateWindowResponseSchema, res);
    cli.out(`updated window "${res.window!.spec!.name}": ${res.window!.id}\n`);
  });

  windows
    .command("delete")
    .description("remove a window")
    .argument("<window>", WINDOW_ARG)
    .action(async (ref: string) => {
      const c = await cli.clients();
      const w = await resolveWindow(c, ref);
      await c.maintenance.deleteWindow({ id: w.id });
      cli.out(`window "${w.spec!.name}" deleted\n`);
    });

  windows
    .command("preview")
    .description("the next occurrences of a saved window, or of a definition given with --rrule, --start, --duration and --time-zone (nothing is saved)")
    .argument("[window]", WINDOW_ARG)
    .option("--rrule <rule>", RULE_HELP)
    .option("--start <local-date-time>", START_HELP)
    .option("--duration <duration>", "how long each occurrence stays open (30m, 4h, 3d)", seconds)
    .option("--time-zone <zone>", ZONE_HELP)
    .option("--count <n>", "how many occurrences, at most 100", positiveInt, 10)
    .option("--after <time>", "from this time on (2026-03-28T00:00Z; default: now)", afterTime)
    .action(async (ref: string | undefined, o: { rrule?: string; start?: string; duration?: number; timeZone?: string; count: number; after?: Date }) => {
      const c = await cli.clients();
      const definition = o.rrule !== undefined || o.start !== undefined || o.duration !== undefined || o.timeZone !== undefined;
      if (ref && definition) throw new CliError("name a saved window or give a definition (--rrule, --start, --duration, --time-zone), not both");
      if (!ref && !(o.rrule && o.start && o.duration && o.timeZone)) {
        throw new CliError("name a saved window, or give all of --rrule, --start, --duration and --time-zone");
      }
      const window = ref
        ? { case: "id" as const, value: (await resolveWindow(c, ref)).id }
        : { case: "spec" as const, value: create(WindowSpecSchema, { rrule: o.rrule!, dtstart: o.start!, duration: { seconds: BigInt(o.duration!) }, timeZone: o.timeZone! }) };
      const res = await c.maintenance.previewWindow({ window, count: o.count, after: o.after ? timestampFromDate(o.after) : undefined });
      if (cli.json()) return cli.printJson(PreviewWindowResponseSchema, res);
      cli.out(table(["START (LOCAL)", "END (LOCAL)", "START (UTC)"], res.occurrences.map((x) => [x.localStart, x.localEnd, utc(time(x.startTime))])));
    });
}

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { formatDuration } from "@redflag/common/config-values";
import {
  AbortRolloutResponseSchema,
  CreateRolloutResponseSchema,
  GetRolloutResponseSchema,
  ListRolloutsResponseSchema,
  PauseRolloutResponseSchema,
  PreviewRolloutResponseSchema,
  ResumeRolloutResponseSchema,
  type Rollout,
  type RolloutHost,
  RolloutHostState,
  RolloutRingSchema,
  RolloutRingState,
  type RolloutSpec,
  RolloutSpecSchema,
  RolloutState,
} from "@redflag/gen/rollout_service_pb";
import { InvalidArgumentError, Option, type Command } from "commander";
import { isUuid } from "../../ids.ts";
import { AGENT_ARG, hostnames, resolveAgent, resolveAgents } from "../agent-ref.ts";
import { CliError, type CliContext, type Clients } from "../context.ts";
import { collect, seconds } from "../options.ts";
import { enumName, table, time } from "../output.ts";

// redflag rollouts: staged rollouts (RolloutService): updates installed ring by ring, each ring
// soaked and judged before the next starts.

const ROLLOUT_ARG = "rollout ID or name";
const STATES = { running: RolloutState.RUNNING, paused: RolloutState.PAUSED, halted: RolloutState.HALTED, aborted: RolloutState.ABORTED, finished: RolloutState.FINISHED } as const;
const stateName = (s: RolloutState) => enumName(RolloutState, s);
const ringStateName = (s: RolloutRingState) => enumName(RolloutRingState, s);
const hostStateName = (s: RolloutHostState) => enumName(RolloutHostState, s).replace(/_/g, " ");
const utc = (d: Date | undefined) => (d ? d.toISOString().replace(/:\d{2}\.\d{3}Z$/, "Z") : "");

const RING_HELP = `a ring, in order (repeatable, 1 to 10): NAME:SIZE[:soak=DURATION][:threshold=PERCENT], where SIZE is
agents=HOST,HOST (named canaries, ${AGENT_ARG}), N% (of the target agents not placed yet, rounded up) or rest
(every agent left; only the last ring). "rest" alone is a ring named rest. soak (0 to 7d, default 0) is how long
to wait after the ring's last host ended; threshold (1 to 100, default 100) is the share of its hosts that must succeed`;

// Printed under `redflag rollouts create --help`; each line runs as printed (rollouts-cli.test.ts).
const CREATE_EXAMPLES = `Examples:
  redflag rollouts preview --name "openssl june" --group web --ring "canary:agents=web-1:soak=1h" --ring "wave 1:10%:soak=30m:threshold=95" --ring rest
  redflag rollouts create --name "openssl june" --group web --ring "canary:agents=web-1:soak=1h" --ring "wave 1:10%:soak=30m:threshold=95" --ring rest
  redflag rollouts show "openssl june"`;

interface RingWords {
  name: string;
  size: { kind: "agents"; refs: string[] } | { kind: "percent"; value: number } | { kind: "rest" };
  soak: number;
  threshold: number;
}

// One --ring value, checked as far as the CLI can (the control plane checks the rest).
export function parseRing(value: string, previous: RingWords[] = []): RingWords[] {
  const parts = value.split(":").map((p) => p.trim());
  if (parts.length === 1 && parts[0] === "rest") return [...previous, { name: "rest", size: { kind: "rest" }, soak: 0, threshold: 100 }];
  const [name, size, ...more] = parts;
  if (!name || !size) throw new InvalidArgumentError('must be NAME:SIZE with SIZE agents=HOST,HOST, N% or rest (for example "canary:agents=web-1" or "wave 1:10%")');
  let parsed: RingWords["size"];
  if (size === "rest") parsed = { kind: "rest" };
  else if (/^\d{1,3}%$/.test(size)) parsed = { kind: "percent", value: Number(size.slice(0, -1)) };
  else if (size.startsWith("agents=")) {
    const refs = size.slice("agents=".length).split(",").map((r) => r.trim()).filter((r) => r !== "");
    if (refs.length === 0) throw new InvalidArgumentError(`ring "${name}": agents= names no agent`);
    parsed = { kind: "agents", refs };
  } else throw new InvalidArgumentError(`ring "${name}": "${size}" is not a size; use agents=HOST,HOST, N% or rest`);
  const ring: RingWords = { name, size: parsed, soak: 0, threshold: 100 };
  for (const option of more) {
    const [key, v] = option.split("=", 2);
    if (key === "soak" && v) {
      try {
        ring.soak = seconds(v);
      } catch (err) {
        throw new InvalidArgumentError(`ring "${name}": soak=${v}: ${(err as Error).message}`);
      }
    } else if (key === "threshold" && v && /^\d{1,3}%?$/.test(v)) ring.threshold = Number(v.replace("%", ""));
    else throw new InvalidArgumentError(`ring "${name}": "${option}" is not soak=DURATION or threshold=PERCENT`);
  }
  return [...previous, ring];
}

interface DefinitionOptions {
  name: string;
  group?: string[];
  tag?: string[];
  agent?: string[];
  allAgents?: boolean;
  update?: string[];
  ring?: RingWords[];
}

function definitionOptions(cmd: Command): Command {
  return cmd
    .requiredOption("--name <name>", "unique name (it also seeds which agents a percentage picks, so preview with the name you create with)")
    .option("--group <group>", "target the agents in this group (repeatable)", collect)
    .option("--tag <tag>", "target the agents with this tag (repeatable)", collect)
    .option("--agent <agent>", `target this agent (${AGENT_ARG}; repeatable)`, collect)
    .option("--all-agents", "target every agent")
    .option("--update <update>", `install only this update: AGENT/SOURCE/NAME/ARCHITECTURE (${AGENT_ARG}; repeatable); default: every approved, not held update of each host when its ring starts`, collect)
    .option("--ring <ring>", RING_HELP, parseRing);
}

async function specOf(c: Clients, o: DefinitionOptions): Promise<RolloutSpec> {
  if (!o.ring || o.ring.length === 0) throw new CliError('give the rings with --ring, in order, the last one "rest" (for example --ring "canary:agents=web-1" --ring "wave 1:10%" --ring rest)');
  const rings = [];
  for (const r of o.ring) {
    const size: MessageInitShape<typeof RolloutRingSchema>["size"] =
      r.size.kind === "agents"
        ? { case: "agents", value: { agentIds: await resolveAgents(c, r.size.refs, { live: true }) } }
        : r.size.kind === "percent"
          ? { case: "percent", value: r.size.value }
          : { case: "rest", value: true };
    rings.push(create(RolloutRingSchema, { name: r.name, size, successThresholdPercent: r.threshold, soak: { seconds: BigInt(r.soak) } }));
  }
  const keys = [];
  for (const u of o.update ?? []) {
    const [agent, source, name, architecture] = u.split("/");
    if (!agent || !source || !name || architecture === undefined) throw new CliError(`--update ${u}: give AGENT/SOURCE/NAME/ARCHITECTURE, for example web-1/apt/openssl/amd64`);
    keys.push({ agentId: await resolveAgent(c, agent, { live: true }), source, name, architecture });
  }
  return create(RolloutSpecSchema, {
    name: o.name,
    targets: { allAgents: o.allAgents ?? false, groups: o.group ?? [], tags: o.tag ?? [], agentIds: await resolveAgents(c, o.agent, { live: true }) },
    updates: keys.length > 0 ? { case: "updateKeys", value: { keys } } : { case: "allApproved", value: true },
    rings,
  });
}

// The rollout named by ID or by name.
async function resolveRollout(c: Clients, ref: string): Promise<Rollout> {
  if (isUuid(ref.toLowerCase())) return (await c.rollouts.getRollout({ id: ref.toLowerCase(), hostPageSize: 1 })).rollout!;
  let pageToken = "";
  do {
    const page = await c.rollouts.listRollouts({ pageSize: 200, pageToken });
    const found = page.rollouts.find((r) => r.spec?.name === ref);
    if (found) return found;
    pageToken = page.nextPageToken;
  } while (pageToken);
  throw new CliError(`no rollout is named ${ref}; \`redflag rollouts list\` shows them`);
}

const ringSize = (r: RolloutSpec["rings"][number], hosts: Map<string, string>) =>
  r.size.case === "agents" ? `agents=${r.size.value.agentIds.map((id) => hosts.get(id) ?? id).join(",")}` : r.size.case === "percent" ? `${r.size.value}%` : "rest";

const progress = (r: Rollout) => {
  const ring = r.rings[r.currentRing];
  return ring ? `${r.currentRing + 1}/${r.rings.length} ${ring.name}` : `${r.rings.length}/${r.rings.length}`;
};

// What a person can do next with a rollout in this state, as commands that run as printed.
function nextSteps(r: Rollout): string {
  const id = r.id;
  switch (r.state) {
    case RolloutState.RUNNING:
      return `pause: redflag rollouts pause ${id}\nabort: redflag rollouts abort ${id}\n`;
    case RolloutState.PAUSED:
      return `resume: redflag rollouts resume ${id}\nabort: redflag rollouts abort ${id}\n`;
    case RolloutState.HALTED:
      return `override the halt and go on past ring "${r.rings[r.currentRing]?.name}": redflag rollouts resume ${id}\nabort: redflag rollouts abort ${id}\n`;
    default:
      return "";
  }
}

export function registerRollouts(program: Command, cli: CliContext): void {
  const rollouts = program
    .command("rollouts")
    .description("staged rollouts: updates installed ring by ring (canaries, then percentages, then the rest), each ring soaked and judged before the next")
    .addHelpText(
      "after",
      "\nA ring passes when every host ended, its success rate meets its threshold, and no host that installed went offline by the\nend of its soak; otherwise the rollout halts and a \"rollout halted\" notification is sent. `redflag rollouts resume` on a\nhalted rollout is the override: it goes on past the ring that halted.",
    );

  rollouts
    .command("list")
    .description("rollouts, newest first, with their progress")
    .addOption(new Option("--state <state>", "only rollouts in this state").choices(Object.keys(STATES)))
    .action(async (o: { state?: keyof typeof STATES }) => {
      const c = await cli.clients();
      const all: Rollout[] = [];
      let pageToken = "";
      do {
        const page = await c.rollouts.listRollouts({ pageSize: 200, pageToken, state: o.state ? STATES[o.state] : RolloutState.UNSPECIFIED });
        all.push(...page.rollouts);
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (cli.json()) return cli.printJson(ListRolloutsResponseSchema, create(ListRolloutsResponseSchema, { rollouts: all }));
      cli.out(
        table(
          ["NAME", "STATE", "RING", "HOSTS", "SUCCEEDED", "FAILED", "CREATED BY", "CREATED (UTC)", "ID"],
          all.map((r) => [
            r.spec!.name,
            stateName(r.state),
            progress(r),
            String(r.hostCount),
            String(r.rings.reduce((n, g) => n + g.succeeded, 0)),
            String(r.rings.reduce((n, g) => n + g.failed, 0)),
            r.createdBy,
            utc(time(r.createTime)),
            r.id,
          ]),
        ),
      );
    });

  rollouts
    .command("show")
    .description("one rollout: its rings' progress and every host's state")
    .argument("<rollout>", ROLLOUT_ARG)
    .action(async (ref: string) => {
      const c = await cli.clients();
      const found = await resolveRollout(c, ref);
      const hosts: RolloutHost[] = [];
      let hostPageToken = "";
      let rollout = found;
      do {
        const page = await c.rollouts.getRollout({ id: found.id, hostPageSize: 1000, hostPageToken });
        rollout = page.rollout!;
        hosts.push(...page.hosts);
        hostPageToken = page.nextHostPageToken;
      } while (hostPageToken);
      if (cli.json()) return cli.printJson(GetRolloutResponseSchema, create(GetRolloutResponseSchema, { rollout, hosts }));
      const names = await hostnames(c, rollout.spec!.rings.flatMap((r) => (r.size.case === "agents" ? r.size.value.agentIds : [])));
      const r = rollout;
      cli.out(
        `rollout "${r.spec!.name}" (${r.id})\n` +
          `state: ${stateName(r.state)}, ring ${progress(r)}; created by ${r.createdBy} at ${utc(time(r.createTime))}` +
          (r.endTime ? `; ended ${utc(time(r.endTime))}` : "") +
          "\n" +
          `updates: ${r.spec!.updates.case === "updateKeys" ? `${r.spec!.updates.value.keys.length} named` : "every approved, not held update"}\n` +
          (r.haltReason ? `halted: ${r.haltReason}\n` : "") +
          "\n" +
          table(
            ["#", "RING", "SIZE", "STATE", "HOSTS", "WAITING", "INSTALLING", "SUCCEEDED", "FAILED", "SKIPPED", "OFFLINE", "THRESHOLD", "SOAK", "SOAK UNTIL (UTC)"],
            r.rings.map((g, i) => {
              const def = r.spec!.rings[i]!;
              return [
                String(i + 1),
                g.name,
                ringSize(def, names),
                ringStateName(g.state),
                String(g.hosts),
                String(g.waiting),
                String(g.installing),
                String(g.succeeded),
                String(g.failed),
                String(g.skipped),
                String(g.offline),
                `${g.successThresholdPercent}%`,
                formatDuration(Number(def.soak?.seconds ?? 0n)),
                utc(time(g.soakUntil)),
              ];
            }),
          ) +
          "\n" +
          table(
            ["HOSTNAME", "RING", "STATE", "OFFLINE", "COMMAND", "MESSAGE"],
            hosts.map((h) => [h.hostname, r.rings[h.ring]?.name ?? String(h.ring), hostStateName(h.state), h.offline ? "offline" : "", h.commandId, h.message]),
          ) +
          (nextSteps(r) ? `\n${nextSteps(r)}` : ""),
      );
    });

  definitionOptions(rollouts.command("preview").description("which agents each ring would hold and how many updates each would install now; nothing is saved")).action(
    async (o: DefinitionOptions) => {
      const c = await cli.clients();
      const spec = await specOf(c, o);
      const res = await c.rollouts.previewRollout({ spec });
      if (cli.json()) return cli.printJson(PreviewRolloutResponseSchema, res);
      cli.out(
        table(
          ["#", "RING", "HOSTS", "UPDATES", "FIRST HOSTS"],
          res.rings.map((g, i) => {
            const first = res.hosts.filter((h) => h.ring === i).map((h) => h.hostname);
            return [String(i + 1), g.name, String(g.hosts), String(g.updates), `${first.slice(0, 5).join(", ")}${g.hosts > 5 ? ", …" : ""}`];
          }),
        ),
      );
    },
  );

  definitionOptions(rollouts.command("create").description("start a rollout: its first ring's installs are queued by the scheduler").addHelpText("after", `\n${CREATE_EXAMPLES}`)).action(
    async (o: DefinitionOptions) => {
      const c = await cli.clients();
      const res = await c.rollouts.createRollout({ spec: await specOf(c, o) });
      if (cli.json()) return cli.printJson(CreateRolloutResponseSchema, res);
      const r = res.rollout!;
      cli.out(`created rollout "${r.spec!.name}": ${r.id}; ${r.hostCount} hosts in ${r.rings.length} rings (${r.rings.map((g) => `${g.name}: ${g.hosts}`).join(", ")})\nprogress: redflag rollouts show ${r.id}\n`);
    },
  );

  const change = (name: "pause" | "resume" | "abort", description: string) =>
    rollouts
      .command(name)
      .description(description)
      .argument("<rollout>", ROLLOUT_ARG)
      .action(async (ref: string) => {
        const c = await cli.clients();
        const { id } = await resolveRollout(c, ref);
        const res =
          name === "pause" ? await c.rollouts.pauseRollout({ id }) : name === "resume" ? await c.rollouts.resumeRollout({ id }) : await c.rollouts.abortRollout({ id });
        if (cli.json()) {
          const schema = name === "pause" ? PauseRolloutResponseSchema : name === "resume" ? ResumeRolloutResponseSchema : AbortRolloutResponseSchema;
          return cli.printJson(schema, res as never);
        }
        const r = res.rollout!;
        cli.out(`rollout "${r.spec!.name}" is ${stateName(r.state)}; ring ${progress(r)}\n`);
      });
  change("pause", "stop queueing installs (those queued still run); no ring is promoted until it is resumed");
  change("resume", "go on with a paused rollout; on a halted one this is the override: the ring that halted is passed over (its waiting hosts skipped) and the next ring starts");
  change("abort", "end a rollout for good: installs not delivered yet are cancelled, waiting hosts skipped");
}

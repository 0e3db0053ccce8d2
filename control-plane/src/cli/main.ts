import { create, toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { plural } from "@redflag/common/plural";
import {
  CommandType,
  PackageChangeKind,
  PackageRefSchema,
  PackageResultState,
  UpdateAgentSchema,
  UpdateSeverity,
} from "@redflag/gen/command_pb";
import {
  CommandService,
  CommandState,
  CreateCommandRequestSchema,
  GetCommandResponseSchema,
  ListCommandsResponseSchema,
  type CommandInfo,
  type CreateCommandRequest,
} from "@redflag/gen/command_service_pb";
import {
  AgentHealth,
  AgentSort,
  AllowReregistrationResponseSchema,
  DecommissionAgentResponseSchema,
  FleetService,
  GetAgentConfigResponseSchema,
  GetAgentResponseSchema,
  ListAgentsResponseSchema,
  SetAgentLabelsResponseSchema,
} from "@redflag/gen/fleet_service_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import { GetFleetOverviewResponseSchema, ListAgentMetricsResponseSchema, ReportService } from "@redflag/gen/report_service_pb";
import {
  type AgentRelease,
  type AgentUpgrade,
  AgentUpgradeState,
  ListAgentUpgradesResponseSchema,
  StartFleetUpgradeResponseSchema,
  ListReleasesResponseSchema,
  type PublishReleaseRequest,
  PublishReleaseRequestSchema,
  ReleaseService,
} from "@redflag/gen/release_service_pb";
import {
  CreateRegistrationTokenResponseSchema,
  ListRegistrationTokensResponseSchema,
  RegistrationTokenState,
  RevokeRegistrationTokenResponseSchema,
  TokenService,
} from "@redflag/gen/token_service_pb";
import { ApiTokenService, type ApiToken, CreateApiTokenResponseSchema, ListApiTokensResponseSchema, RevokeApiTokenResponseSchema } from "@redflag/gen/api_token_service_pb";
import { AuditService, ListAuditEntriesResponseSchema } from "@redflag/gen/audit_service_pb";
import { GetSecurityOverviewResponseSchema, ListSecurityEventsResponseSchema, RevokeAdminKeyResponseSchema, SecurityService } from "@redflag/gen/security_service_pb";
import { ListSettingChangesResponseSchema, ListSettingsResponseSchema, SettingsService } from "@redflag/gen/settings_service_pb";
import {
  ApproveUpdatesResponseSchema,
  InstallApprovedUpdatesResponseSchema,
  ListHoldsResponseSchema,
  ListUpdatesResponseSchema,
  RejectUpdatesResponseSchema,
  SetHoldResponseSchema,
  UpdateSelectionSchema,
  UpdateService,
  UpdateStatus,
} from "@redflag/gen/update_service_pb";
import { AuthService, type LoginResponse, LoginResponseSchema, type SetupResponse, WhoAmIResponseSchema } from "@redflag/gen/auth_service_pb";
import { Role, type User } from "@redflag/gen/identity_pb";
import {
  CreateUserResponseSchema,
  DisableUserResponseSchema,
  ListUsersResponseSchema,
  ResetPasswordResponseSchema,
  UpdateUserResponseSchema,
  UserService,
} from "@redflag/gen/user_service_pb";
import { createInterface } from "node:readline";
import { loadSession, removeSession, saveSession } from "./session-file.ts";
import { ARTIFACT_NAME_HINT, parseArtifactFileName } from "../domain/releases.ts";
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { parseDuration } from "@redflag/common/config-values";
import { isUuid } from "../ids.ts";
import { ago, enumName, size, table } from "./output.ts";
import pkg from "../../package.json" with { type: "json" };

interface GlobalOptions {
  server: string;
  apiKey?: string;
  apiKeyFile?: string;
  json?: boolean;
}

class CliError extends Error {}
// No agent has the hostname the user gave.
class UnknownHostname extends CliError {}

const program = new Command("redflag")
  .description("Scripted client for the RedFlag control plane")
  .addHelpText("after", "\nredflag --version prints the version of this CLI.")
  .addOption(new Option("--server <url>", "control plane URL").env("REDFLAG_SERVER").default("http://127.0.0.1:8080"))
  .addOption(new Option("--api-key <key>", "admin API key").env("REDFLAG_API_KEY"))
  .addOption(
    new Option("--api-key-file <file>", "file holding the admin API key").env("REDFLAG_API_KEY_FILE").default("data/admin.key"),
  )
  .option("--json", "print JSON for scripts")
  .showHelpAfterError()
  .exitOverride();

// The credential for this call: --api-key or REDFLAG_API_KEY; else an --api-key-file the
// user named; else the session `redflag login` stored for this server; else the server's
// data/admin.key when it is readable from here.
async function credential(): Promise<string> {
  const opts = program.opts<GlobalOptions>();
  if (opts.apiKey) return opts.apiKey;
  const fileSource = program.getOptionValueSource("apiKeyFile");
  // An empty REDFLAG_API_KEY_FILE= names no file.
  if ((fileSource === "cli" || fileSource === "env") && opts.apiKeyFile) return readKeyFile(opts.apiKeyFile);
  const session = await loadSession(opts.server);
  if (session) return session.token;
  try {
    return readKeyFile(opts.apiKeyFile);
  } catch {
    throw new CliError(`not signed in: run \`redflag login\`, pass --api-key, or set REDFLAG_API_KEY`);
  }
}

function transportFor(key: string | undefined) {
  const opts = program.opts<GlobalOptions>();
  let baseUrl: URL;
  try {
    baseUrl = new URL(opts.server);
  } catch {
    throw new CliError(`--server ${opts.server} is not a URL (for example http://127.0.0.1:8080)`);
  }
  const auth: Interceptor = (next) => (req) => {
    if (key) req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
  return createConnectTransport({ baseUrl: baseUrl.toString(), httpVersion: "1.1", interceptors: [auth], defaultTimeoutMs: 30_000 });
}

async function clients() {
  const transport = transportFor(await credential());
  return {
    tokens: createClient(TokenService, transport),
    fleet: createClient(FleetService, transport),
    commands: createClient(CommandService, transport),
    auth: createClient(AuthService, transport),
    users: createClient(UserService, transport),
    apiTokens: createClient(ApiTokenService, transport),
    audit: createClient(AuditService, transport),
    updates: createClient(UpdateService, transport),
    settings: createClient(SettingsService, transport),
    security: createClient(SecurityService, transport),
    reports: createClient(ReportService, transport),
    releases: createClient(ReleaseService, transport),
  };
}

// Sign-in and setup need no credential.
const anonymousAuth = () => createClient(AuthService, transportFor(undefined));

function readKeyFile(file: string | undefined): string {
  if (!file) throw new CliError("no API key: pass --api-key, set REDFLAG_API_KEY, or --api-key-file");
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    throw new CliError(
      `no API key: ${file} is not readable; pass --api-key, set REDFLAG_API_KEY, or point --api-key-file at the server's admin.key`,
    );
  }
}

const json = () => program.opts<GlobalOptions>().json === true;

function printJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>) {
  process.stdout.write(JSON.stringify(toJson(schema, message), null, 2) + "\n");
}

const time = (t: { seconds: bigint; nanos: number } | undefined) => (t ? timestampDate(t as never) : undefined);

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a whole number of at least 1");
  return n;
}

function seconds(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

// ---- agents named by ID or hostname
// Wherever the CLI takes an agent it takes the agent's ID or its hostname. A hostname names an
// agent only when exactly one agent has it (compared case-insensitively); otherwise the error
// says what there is to choose from. Lists that show agent IDs name the hosts too.
type Clients = Awaited<ReturnType<typeof clients>>;

const AGENT_ARG = "agent ID or hostname";
// How many agents sharing one hostname an error lists.
const SAME_HOSTNAME_SHOWN = 20;

const healthName = (health: AgentHealth) => enumName(AgentHealth, health).replace("_", " ");

// The ID of the agent `ref` names. `live`: the command acts only on agents that are not
// decommissioned (the control plane refuses the others), so a decommissioned agent that had the
// same hostname is not a candidate while a live one has it.
async function resolveAgent(c: Clients, ref: string, opts: { live?: boolean } = {}): Promise<string> {
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

const resolveAgents = (c: Clients, refs: string[] | undefined, opts: { live?: boolean } = {}) => Promise.all((refs ?? []).map((ref) => resolveAgent(c, ref, opts)));

// The hostnames of these agents, one call for up to 500 (a page of any list); agents that do
// not exist are left out.
async function hostnames(c: Clients, ids: Iterable<string>): Promise<Map<string, string>> {
  const unique = [...new Set(ids)].filter(isUuid);
  const names = new Map<string, string>();
  for (let i = 0; i < unique.length; i += 500) {
    const res = await c.fleet.listAgents({ agentIds: unique.slice(i, i + 500), pageSize: 500 });
    for (const a of res.agents) names.set(a.id, a.hostname);
  }
  return names;
}

// ---- tokens
const tokens = program.command("tokens").description("registration tokens that let agents enrol");

tokens
  .command("create")
  .description("create a registration token; its secret is printed once")
  .requiredOption("--seats <n>", "how many agents may register with it", positiveInt)
  .option("--expires <duration>", "lifetime, for example 24h or 7d (default: never)", seconds)
  .option("--note <text>", "what the token is for", "")
  .action(async (o: { seats: number; expires?: number; note: string }) => {
    const res = await (await clients()).tokens.createRegistrationToken({
      seats: o.seats,
      note: o.note,
      ttl: o.expires ? durationFromMs(o.expires * 1000) : undefined,
    });
    // On stderr, ahead of everything: `redflag tokens create | …` still reads only the token.
    if (res.serverUrlWarning) process.stderr.write(`redflag: warning: ${res.serverUrlWarning}\n`);
    if (json()) return printJson(CreateRegistrationTokenResponseSchema, res);
    const t = res.token!;
    process.stdout.write(
      `${res.secret}\n\n` +
        `token ${t.id}: ${plural(t.seats, "seat")}, expires ${time(t.expireTime)?.toISOString() ?? "never"}.\n` +
        `The secret above is shown only now. Agents pin the signing key with fingerprint\n${res.signingKeyFingerprint}\n` +
        `(the console's Security page shows the same). To enrol a machine, paste the line for its platform there\n` +
        `(on Windows in PowerShell as Administrator): it installs the agent as a service, registers it with\n${res.serverUrl} and starts it.\n\n` +
        res.installCommands.map((c) => `# ${c.platform}\n${c.command}\n`).join("\n"),
    );
  });

tokens
  .command("list")
  .description("list registration tokens")
  .action(async () => {
    const res = await (await clients()).tokens.listRegistrationTokens({ pageSize: 500 });
    if (json()) return printJson(ListRegistrationTokensResponseSchema, res);
    process.stdout.write(
      table(
        ["ID", "PREFIX", "STATE", "SEATS", "EXPIRES", "NOTE"],
        res.tokens.map((t) => [
          t.id,
          t.prefix + "…",
          enumName(RegistrationTokenState, t.state),
          `${t.usedSeats}/${t.seats}`,
          time(t.expireTime)?.toISOString() ?? "never",
          t.note,
        ]),
      ),
    );
  });

tokens
  .command("revoke")
  .description("stop a token from registering more agents")
  .argument("<id>", "token ID")
  .action(async (id: string) => {
    const res = await (await clients()).tokens.revokeRegistrationToken({ id });
    if (json()) return printJson(RevokeRegistrationTokenResponseSchema, res);
    process.stdout.write(`token ${id} revoked\n`);
  });

tokens
  .command("delete")
  .description("remove a revoked, expired or used-up token")
  .argument("<id>", "token ID")
  .action(async (id: string) => {
    await (await clients()).tokens.deleteRegistrationToken({ id });
    process.stdout.write(`token ${id} deleted\n`);
  });

// ---- agents
const agents = program.command("agents").description("registered agents");

const HEALTH_NAMES = ["online", "offline", "stale", "never_reported", "decommissioned"] as const;

agents
  .command("list")
  .description("list agents")
  .addOption(new Option("--health <health>", "only agents in this state").choices(HEALTH_NAMES))
  .addOption(new Option("--os <family>", "only this OS family").choices(["linux", "windows", "darwin"]))
  .option("--tag <tag>", "only agents with this tag")
  .option("--group <group>", "only agents in this group")
  .option("--search <text>", "hostname, OS name or agent ID contains")
  .addOption(new Option("--sort <field>", "order").choices(["hostname", "last_seen", "registered"]).default("hostname"))
  .option("--desc", "reverse the order")
  .action(async (o: { health?: string; os?: string; tag?: string; group?: string; search?: string; sort: string; desc?: boolean }) => {
    const res = await (await clients()).fleet.listAgents({
      pageSize: 500,
      health: o.health ? (AgentHealth as unknown as Record<string, AgentHealth>)[o.health.toUpperCase()]! : AgentHealth.UNSPECIFIED,
      osFamily: o.os ? (OsFamily as unknown as Record<string, OsFamily>)[o.os.toUpperCase()]! : OsFamily.UNSPECIFIED,
      tag: o.tag ?? "",
      group: o.group ?? "",
      search: o.search ?? "",
      sort: (AgentSort as unknown as Record<string, AgentSort>)[o.sort.toUpperCase()]!,
      descending: o.desc === true,
    });
    if (json()) return printJson(ListAgentsResponseSchema, res);
    process.stdout.write(
      table(
        ["ID", "HOSTNAME", "HEALTH", "OS", "VERSION", "LAST SEEN", "UPDATES"],
        res.agents.map((a) => [
          a.id,
          a.hostname,
          enumName(AgentHealth, a.health).replace("_", " "),
          `${a.os?.name ?? ""} ${a.os?.version ?? ""}`.trim(),
          a.upgradeRequired ? `${a.agentVersion} (upgrade required)` : a.agentVersion,
          ago(time(a.lastSeenTime)),
          a.lastScanTime ? `${a.pendingUpdateCount} (${a.securityUpdateCount} security)` : "not scanned",
        ]),
      ),
    );
  });

agents
  .command("get")
  .description("show one agent")
  .argument("<agent>", AGENT_ARG)
  .action(async (id: string) => {
    const c = await clients();
    const res = await c.fleet.getAgent({ agentId: await resolveAgent(c, id) });
    if (json()) return printJson(GetAgentResponseSchema, res);
    const a = res.agent!;
    process.stdout.write(
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
    const c = await clients();
    const res = await c.fleet.setAgentLabels({ agentId: await resolveAgent(c, id), tags: o.tag ?? [], group: o.group });
    if (json()) return printJson(SetAgentLabelsResponseSchema, res);
    process.stdout.write(`${res.agent!.hostname}: tags ${res.agent!.tags.join(", ") || "(none)"}; group ${res.agent!.group || "(none)"}\n`);
  });

const queued = (c: CommandInfo) => {
  if (json()) return printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command: c }));
  process.stdout.write(`${c.id}\n`);
};

agents
  .command("scan")
  .description("scan for updates now")
  .argument("<agent>", AGENT_ARG)
  .option("--subsystem <name>", "only this subsystem (repeatable)", collect)
  .action(async (id: string, o: { subsystem?: string[] }) => {
    const c = await clients();
    queued((await c.fleet.triggerScan({ agentId: await resolveAgent(c, id, { live: true }), subsystems: o.subsystem ?? [] })).command!);
  });

agents
  .command("heartbeat")
  .description("poll every few seconds for a while (on), or stop (off)")
  .argument("<agent>", AGENT_ARG)
  .addArgument(new Argument("<state>").choices(["on", "off"]))
  .option("--interval <duration>", "poll interval while on (default 5s)", seconds)
  .option("--duration <duration>", "how long (default 10m)", seconds)
  .action(async (id: string, state: string, o: { interval?: number; duration?: number }) => {
    const c = await clients();
    queued(
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
    const c = await clients();
    const agentId = await resolveAgent(c, id, { live: true });
    queued((await c.fleet.rebootAgent({ agentId, delaySeconds: o.delay ?? 0, message: o.message ?? "", force: o.force === true })).command!);
  });

agents
  .command("decommission")
  .description("revoke the agent's credentials and cancel its pending commands (admins)")
  .argument("<agent>", AGENT_ARG)
  .action(async (id: string) => {
    const c = await clients();
    const res = await c.fleet.decommissionAgent({ agentId: await resolveAgent(c, id, { live: true }) });
    if (json()) return printJson(DecommissionAgentResponseSchema, res);
    process.stdout.write(`${res.agent!.hostname} decommissioned; ${plural(res.cancelledCommands, "pending command")} cancelled\n`);
  });

agents
  .command("rebind")
  .description("accept a new machine ID for an agent after hardware changes (admins)")
  .argument("<agent>", AGENT_ARG)
  .argument("<machine-id>", "the 64-hex ID `redflag-agent status` shows")
  .action(async (id: string, machineId: string) => {
    const c = await clients();
    const res = await c.fleet.rebindMachineId({ agentId: await resolveAgent(c, id, { live: true }), machineId });
    process.stdout.write(`${res.agent!.hostname} now bound to ${res.agent!.machineId}\n`);
  });

agents
  .command("allow-reregistration")
  .description("let one registration of the agent's machine through without its key, or let a decommissioned agent back (admins)")
  .argument("<agent>", AGENT_ARG)
  .option("--for <duration>", "how long the permission lasts, 1m to 7d", seconds, 3600)
  .action(async (id: string, o: { for: number }) => {
    const c = await clients();
    const res = await c.fleet.allowReregistration({ agentId: await resolveAgent(c, id), validFor: durationFromMs(o.for * 1000) });
    if (json()) return printJson(AllowReregistrationResponseSchema, res);
    process.stdout.write(
      `${res.agent!.hostname} may register again once until ${time(res.allowedUntil)!.toISOString()}; ` +
        "run `redflag-agent register` on it before then\n",
    );
  });

agents
  .command("config")
  .description("the config an agent gets: subsystems (with its overrides) and holds")
  .argument("<agent>", AGENT_ARG)
  .action(async (id: string) => {
    const c = await clients();
    const res = await c.fleet.getAgentConfig({ agentId: await resolveAgent(c, id) });
    if (json()) return printJson(GetAgentConfigResponseSchema, res);
    const own = new Set(res.overrides.map((s) => s.name));
    process.stdout.write(
      table(
        ["SUBSYSTEM", "ENABLED", "AUTO", "INTERVAL", "TIMEOUT", "SET FOR THIS AGENT"],
        res.config!.subsystems.map((s) => [s.name, s.enabled ? "yes" : "no", s.autoRun ? "yes" : "no", `${s.intervalSeconds}s`, `${s.timeoutSeconds}s`, own.has(s.name) ? "yes" : ""]),
      ),
    );
    if (res.config!.holds.length > 0) process.stdout.write(`holds: ${res.config!.holds.map((h) => `${h.source}:${h.name}`).join(", ")}\n`);
  });

agents
  .command("metrics")
  .description("an agent's CPU, memory, load and disk readings over time, oldest first")
  .argument("<agent>", AGENT_ARG)
  .option("--since <duration>", "readings of the last …, for example 24h (default 7d)", seconds)
  .option("--limit <n>", "at most this many, the newest (default 288, at most 1000)", positiveInt)
  .action(async (id: string, o: { since?: number; limit?: number }) => {
    const c = await clients();
    const res = await c.reports.listAgentMetrics({
      agentId: await resolveAgent(c, id),
      since: o.since ? timestampFromDate(new Date(Date.now() - o.since * 1000)) : undefined,
      limit: o.limit ?? 0,
    });
    if (json()) return printJson(ListAgentMetricsResponseSchema, res);
    process.stdout.write(
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

// What an upgrade's states mean, after `agents upgrade --help`.
const UPGRADE_HELP = `
An upgrade succeeds only when the agent reports the new version; it fails when update_agent
fails or the agent does not report it in time (setting agent_upgrade_timeout), and is rolled
back when the agent comes back on its old version. Follow them with \`redflag agents upgrade-status\`.`;

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
  .action(async (id: string | undefined, o: FleetUpgradeOptions & { version?: string; wait?: number }) => {
    const picked = [o.all, o.group, o.tag].filter((x) => x !== undefined).length;
    if (id !== undefined && picked > 0) throw new CliError("name one agent, or --all, --group or --tag, not both");
    if (id === undefined) {
      if (picked !== 1) throw new CliError("name an agent (ID or hostname), or exactly one of --all, --group <group> and --tag <tag>");
      if (o.wait !== undefined) throw new CliError("--wait is for one agent; follow a fleet upgrade with `redflag agents upgrade-status --rollout <id>`");
      return fleetUpgrade(o);
    }
    if (o.percent !== undefined) throw new CliError("--percent goes with --all, --group or --tag");
    const c = await clients();
    const res = await c.commands.createCommand({ agentId: await resolveAgent(c, id, { live: true }), action: { case: "updateAgent", value: create(UpdateAgentSchema, { version: o.version ?? "" }) } });
    let command = res.command!;
    if (!o.wait) return queued(command);
    command = await waitFor(c.commands, command, o.wait);
    if (json()) return printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command }));
    process.stdout.write(describeCommand(command, await hostnames(c, [command.agentId])));
    if (command.state !== CommandState.SUCCEEDED) process.exitCode = 1;
  });

// ---- fleet upgrades (agents upgrade --all/--group/--tag, agents upgrade-status)

interface FleetUpgradeOptions {
  all?: boolean;
  group?: string;
  tag?: string;
  percent?: number;
  version?: string;
}

function percent(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 100) throw new InvalidArgumentError("must be a whole number from 1 to 100");
  return n;
}

const UPGRADE_STATES = ["queued", "installing", "succeeded", "failed", "rolled_back"];
const upgradeState = (state: AgentUpgradeState) => enumName(AgentUpgradeState, state);

async function fleetUpgrade(o: FleetUpgradeOptions) {
  const selection = o.all ? { case: "all" as const, value: true } : o.group !== undefined ? { case: "group" as const, value: o.group } : { case: "tag" as const, value: o.tag! };
  const res = await (await clients()).releases.startFleetUpgrade({ selection, percent: o.percent ?? 0, version: o.version ?? "" });
  if (json()) return printJson(StartFleetUpgradeResponseSchema, res);
  const what = selection.case === "all" ? "all agents" : `${selection.case} ${selection.value}`;
  const share = o.percent ? `, ${res.chosenCount} chosen (${o.percent}%)` : "";
  process.stdout.write(`fleet upgrade ${res.rolloutId} of ${what}: ${res.selectedCount} selected${share}, ${res.upgrades.length} queued, ${res.skipped.length} skipped\n`);
  if (res.upgrades.length > 0) {
    process.stdout.write(table(["HOSTNAME", "AGENT", "FROM", "TO", "PLATFORM"], res.upgrades.map((u) => [u.hostname, u.agentId, u.fromVersion, u.toVersion, u.platform])));
  }
  if (res.skipped.length > 0) {
    process.stdout.write("skipped:\n" + table(["HOSTNAME", "AGENT", "WHY"], res.skipped.map((s) => [s.hostname, s.agentId, s.reason])));
  }
  if (res.upgrades.length > 0) process.stdout.write(`follow it with \`redflag agents upgrade-status --rollout ${res.rolloutId}\`\n`);
}

agents
  .command("upgrade-status")
  .description("agent upgrades and where each one stands, newest first")
  .option("--rollout <id>", "only those of this fleet upgrade (as `agents upgrade --all/--group/--tag` printed)")
  .option("--agent <id>", "only this agent's")
  .addOption(new Option("--state <state>", "only in this state").choices(UPGRADE_STATES))
  .option("--limit <n>", "at most this many (newest first)", positiveInt, 200)
  .action(async (o: { rollout?: string; agent?: string; state?: string; limit: number }) => {
    const c = await clients();
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
    if (json()) return printJson(ListAgentUpgradesResponseSchema, create(ListAgentUpgradesResponseSchema, { upgrades, nextPageToken: pageToken }));
    process.stdout.write(
      table(
        ["HOSTNAME", "AGENT", "FROM", "TO", "STATE", "UPDATED", "MESSAGE"],
        upgrades.map((u) => [u.hostname, u.agentId, u.fromVersion, u.toVersion, upgradeState(u.state).replace("_", " "), ago(time(u.updateTime)), u.message]),
      ),
    );
    const counts = UPGRADE_STATES.map((s) => [s, upgrades.filter((u) => upgradeState(u.state) === s).length] as const).filter(([, n]) => n > 0);
    if (counts.length > 0) process.stdout.write(counts.map(([s, n]) => `${n} ${s.replace("_", " ")}`).join(", ") + (pageToken ? ` (the newest ${upgrades.length}; --limit for more)` : "") + "\n");
  });

const UPGRADES_FROM_REGISTRY =
  "update_agent takes no --url, --artifact or --platform: agent upgrades come only from the control plane's release registry. " +
  "Publish the build with `redflag releases publish DIR`, then queue `--type update_agent --release <version>` (or `redflag agents upgrade <id> --version <version>`)";

// ---- commands
const commands = program.command("commands").description("commands queued for agents");

const QUEUE_TYPES = [
  "scan_updates",
  "collect_specs",
  "install_updates",
  "dry_run_update",
  "confirm_dependencies",
  "rollback_update",
  "reboot",
  "enable_heartbeat",
  "disable_heartbeat",
  "update_agent",
] as const;

function packageRef(text: string) {
  const match = /^([a-z_]+):([^=\s]+)(?:=(\S+))?$/.exec(text);
  if (!match) throw new CliError(`--package ${text} must look like source:name or source:name=version (apt:curl=8.5.0-2)`);
  return create(PackageRefSchema, { source: match[1]!, name: match[2]!, version: match[3] ?? "" });
}

async function buildAction(o: QueueOptions, c: Awaited<ReturnType<typeof clients>>): Promise<CreateCommandRequest["action"]> {
  const packages = (o.package ?? []).map(packageRef);
  switch (o.type) {
    case "confirm_dependencies": {
      if (!o.fromDryRun) throw new CliError("confirm_dependencies needs --from-dry-run <command-id>");
      const dryRun = (await c.commands.getCommand({ id: o.fromDryRun })).command!;
      const result = dryRun.result;
      if (dryRun.state !== CommandState.SUCCEEDED || result?.detail.case !== "dryRunUpdate") {
        throw new CliError(`command ${o.fromDryRun} is not a successful dry run (it is ${enumName(CommandState, dryRun.state)})`);
      }
      if (dryRun.agentId !== o.agent) throw new CliError(`dry run ${o.fromDryRun} was for agent ${dryRun.agentId}, not ${o.agent}`);
      return {
        case: "confirmDependencies",
        value: { $typeName: "redflag.v1.ConfirmDependencies", dryRunCommandId: dryRun.id, changes: result.detail.value.changes },
      };
    }
    case "rollback_update": {
      if (packages.length !== 1 || !o.toVersion) throw new CliError("rollback_update needs one --package source:name and --to-version");
      return { case: "rollbackUpdate", value: { $typeName: "redflag.v1.RollbackUpdate", package: packages[0], targetVersion: o.toVersion } };
    }
    case "scan_updates":
      return { case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems: o.subsystem ?? [] } };
    case "collect_specs":
      return { case: "collectSpecs", value: { $typeName: "redflag.v1.CollectSpecs" } };
    case "install_updates":
      return { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages, sources: o.source ?? [] } };
    case "dry_run_update":
      return { case: "dryRunUpdate", value: { $typeName: "redflag.v1.DryRunUpdate", packages } };
    case "reboot":
      return {
        case: "reboot",
        value: { $typeName: "redflag.v1.Reboot", delaySeconds: o.delay ?? 0, message: o.message ?? "", force: o.force === true },
      };
    case "enable_heartbeat":
      return {
        case: "enableHeartbeat",
        value: {
          $typeName: "redflag.v1.EnableHeartbeat",
          intervalSeconds: o.interval ?? 5,
          duration: durationFromMs((o.duration ?? 600) * 1000),
        },
      };
    case "disable_heartbeat":
      return { case: "disableHeartbeat", value: { $typeName: "redflag.v1.DisableHeartbeat" } };
    case "update_agent":
      if (o.url || o.artifact || o.platform) throw new CliError(UPGRADES_FROM_REGISTRY);
      // The control plane picks the build for the agent's platform and signs its manifest.
      return { case: "updateAgent", value: create(UpdateAgentSchema, { version: o.release ?? "" }) };
    default:
      throw new CliError(`--type must be one of: ${QUEUE_TYPES.join(", ")}`);
  }
}

interface QueueOptions {
  agent: string;
  type: string;
  subsystem?: string[];
  package?: string[];
  source?: string[];
  delay?: number;
  message?: string;
  force?: boolean;
  duration?: number;
  interval?: number;
  fromDryRun?: string;
  toVersion?: string;
  release?: string;
  url?: string;
  artifact?: string;
  platform?: string;
  timeout?: number;
  wait?: number;
  idempotencyKey?: string;
}


const FINAL = new Set([
  CommandState.SUCCEEDED,
  CommandState.FAILED,
  CommandState.REJECTED,
  CommandState.TIMED_OUT,
  CommandState.CANCELLED,
]);

commands
  .command("queue")
  .description("queue a command for an agent; prints the command ID")
  .requiredOption("--agent <agent>", AGENT_ARG)
  .addOption(new Option("--type <type>", "command type").choices(QUEUE_TYPES).makeOptionMandatory())
  .option("--subsystem <name>", "scan_updates: subsystem to scan (repeatable)", collect)
  .option("--package <source:name[=version]>", "install/dry run: package (repeatable)", collect)
  .option("--source <name>", "install_updates: upgrade everything of this source (repeatable)", collect)
  .option("--delay <duration>", "reboot: delay", seconds)
  .option("--message <text>", "reboot: message to logged-in users")
  .option("--force", "reboot: even when the host does not need it")
  .option("--duration <duration>", "enable_heartbeat: how long", seconds)
  .option("--interval <duration>", "enable_heartbeat: poll interval (default 5s)", seconds)
  .option("--from-dry-run <command-id>", "confirm_dependencies: install exactly what this dry run reported")
  .option("--to-version <version>", "rollback_update: the version to go back to")
  .option("--release <version>", "update_agent: a version from `redflag releases list` (default: the newest for the agent's platform)")
  .addOption(new Option("--url <url>").hideHelp())
  .addOption(new Option("--artifact <file>").hideHelp())
  .addOption(new Option("--platform <os-arch>").hideHelp())
  .option("--timeout <duration>", "execution timeout on the agent", seconds)
  .option("--wait <duration>", "wait until the command finishes, then print its result", seconds)
  .option("--idempotency-key <key>", "queue at most one command for this key (a day), also when this whole call is run again; default: a new key per call, reused on its own retries")
  .action(async (o: QueueOptions) => {
    const c = await clients();
    o.agent = await resolveAgent(c, o.agent, { live: true });
    const req = create(CreateCommandRequestSchema, { agentId: o.agent, timeoutSeconds: o.timeout ?? 0, idempotencyKey: o.idempotencyKey ?? randomUUID() });
    req.action = await buildAction(o, c);
    const res = await retryUnanswered(() => c.commands.createCommand(req));
    let command = res.command!;
    if (o.wait) command = await waitFor(c.commands, command, o.wait);
    if (json()) return printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command }));
    process.stdout.write(o.wait ? describeCommand(command, await hostnames(c, [command.agentId])) : `${command.id}\n`);
    if (o.wait && command.state !== CommandState.SUCCEEDED) process.exitCode = 1;
  });

// A call whose answer never came may still have been carried out: retried only with an
// idempotency key in the request, so the control plane answers a retry with what the first
// call did instead of doing it again.
async function retryUnanswered<T>(call: () => Promise<T>): Promise<T> {
  const delays = [500, 1000, 2000];
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : undefined;
      // connect-node reports a connection cut mid-call ("socket hang up") as Aborted.
      const unanswered = code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Unknown || code === Code.Aborted;
      if (!unanswered || attempt >= delays.length) throw err;
      process.stderr.write(`redflag: no answer (${Code[code!]}: ${(err as ConnectError).rawMessage}); trying again with the same idempotency key\n`);
      await new Promise((r) => setTimeout(r, delays[attempt]));
    }
  }
}

async function waitFor(client: Awaited<ReturnType<typeof clients>>["commands"], command: CommandInfo, forSeconds: number) {
  const deadline = Date.now() + forSeconds * 1000;
  while (!FINAL.has(command.state)) {
    if (Date.now() > deadline) {
      throw new CliError(`command ${command.id} is still ${enumName(CommandState, command.state)} after ${forSeconds}s`);
    }
    await new Promise((r) => setTimeout(r, 500));
    command = (await client.getCommand({ id: command.id })).command!;
  }
  return command;
}

commands
  .command("list")
  .description("list commands and their states")
  .option("--agent <agent>", `only this agent's commands (${AGENT_ARG})`)
  .option("--state <state>", "only commands in this state (pending, sent, succeeded, failed, rejected, timed_out, cancelled)")
  .action(async (o: { agent?: string; state?: string }) => {
    let state = CommandState.UNSPECIFIED;
    if (o.state) {
      const named = CommandState[o.state.toUpperCase() as keyof typeof CommandState] as CommandState | undefined;
      if (named === undefined) throw new CliError(`--state ${o.state} is not a command state`);
      state = named;
    }
    const c = await clients();
    const res = await c.commands.listCommands({ agentId: o.agent ? await resolveAgent(c, o.agent) : "", state, pageSize: 500 });
    if (json()) return printJson(ListCommandsResponseSchema, res);
    const hosts = await hostnames(c, res.commands.map((cmd) => cmd.agentId));
    process.stdout.write(
      table(
        ["ID", "HOST", "AGENT", "TYPE", "STATE", "SEQ", "CREATED", "RESULT"],
        res.commands.map((c) => [
          c.id,
          hosts.get(c.agentId) ?? "",
          c.agentId,
          enumName(CommandType, c.type),
          enumName(CommandState, c.state),
          c.sequence ? String(c.sequence) : "-",
          ago(time(c.createTime)),
          c.result?.message.split("\n")[0]?.slice(0, 60) ?? "",
        ]),
      ),
    );
  });

commands
  .command("get")
  .description("show one command with its result")
  .argument("<id>", "command ID")
  .action(async (id: string) => {
    const c = await clients();
    const res = await c.commands.getCommand({ id });
    if (json()) return printJson(GetCommandResponseSchema, res);
    process.stdout.write(describeCommand(res.command!, await hostnames(c, [res.command!.agentId])));
  });

commands
  .command("cancel")
  .description("stop a command that was not delivered yet")
  .argument("<id>", "command ID")
  .action(async (id: string) => {
    const res = await (await clients()).commands.cancelCommand({ id });
    process.stdout.write(`${res.command!.id} cancelled\n`);
  });

commands
  .command("retry")
  .description("queue a failed, timed-out, rejected or cancelled command again")
  .argument("<id>", "command ID")
  .action(async (id: string) => {
    const res = await (await clients()).commands.retryCommand({ id });
    if (json()) return printJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command: res.command }));
    process.stdout.write(`${res.command!.id}\n`);
  });

commands
  .command("watch")
  .description("print command changes as they happen (Ctrl-C to stop)")
  .option("--agent <agent>", `only this agent (${AGENT_ARG})`)
  .action(async (o: { agent?: string }) => {
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    const client = await clients();
    const agentId = o.agent ? await resolveAgent(client, o.agent) : "";
    // Each agent's hostname is looked up once, when its first event arrives.
    const hosts = new Map<string, string>();
    try {
      for await (const event of client.commands.watchEvents({ agentId }, { signal: stop.signal, timeoutMs: 0 })) {
        if (event.kind !== "command") continue;
        const c = event.command!;
        if (json()) {
          process.stdout.write(JSON.stringify(toJson(GetCommandResponseSchema, create(GetCommandResponseSchema, { command: c }))) + "\n");
          continue;
        }
        if (!hosts.has(c.agentId)) hosts.set(c.agentId, (await hostnames(client, [c.agentId])).get(c.agentId) ?? "");
        process.stdout.write(`${time(event.time)!.toISOString()}  ${hosts.get(c.agentId)}  ${c.agentId}  ${enumName(CommandType, c.type)}  ${enumName(CommandState, c.state)}  ${c.id}${c.result ? `  ${c.result.message}` : ""}\n`);
      }
    } catch (err) {
      if (!stop.signal.aborted) throw err;
    }
  });

// `hosts`: the agent's hostname, when it is known.
function describeCommand(c: CommandInfo, hosts: Map<string, string>): string {
  const host = hosts.get(c.agentId);
  const lines = [
    `id:       ${c.id}`,
    `agent:    ${host ? `${host} (${c.agentId})` : c.agentId}`,
    `type:     ${enumName(CommandType, c.type)}`,
    `state:    ${enumName(CommandState, c.state)}`,
    `sequence: ${c.sequence || "-"}`,
    `delivered: ${c.deliveryCount === 0 ? "not yet" : c.deliveryCount === 1 ? "once" : `${c.deliveryCount} times (no result arrived within the delivery lease)`}`,
    `created:  ${time(c.createTime)?.toISOString()} by ${c.createdBy}`,
  ];
  const r = c.result;
  if (r) {
    lines.push(`result:   ${r.message}`);
    if (r.detail.case === "scanUpdates") {
      const scan = r.detail.value;
      for (const s of scan.subsystems) lines.push(`  ${s.subsystem}: ${enumName({ 1: "ran", 2: "failed", 3: "skipped", 4: "not present" }, s.state)} ${s.message}`);
      if (scan.updateParts > 0) {
        lines.push(`updates:  sent in ${scan.updateParts} parts, too many to list here; \`redflag updates list --agent ${c.agentId}\` shows them`);
      } else {
        lines.push(
          table(
            ["PACKAGE", "CURRENT", "AVAILABLE", "REPOSITORY", "SECURITY"],
            scan.updates.map((u) => [u.name, u.currentVersion, u.availableVersion, u.repository, u.security ? "yes" : ""]),
          ).trimEnd(),
        );
      }
    }
    const detail = r.detail;
    if (detail.case === "installUpdates" || detail.case === "confirmDependencies" || detail.case === "rollbackUpdate") {
      lines.push(
        table(
          ["SOURCE", "PACKAGE", "FROM", "TO", "OUTCOME", "REASON"],
          detail.value.packages.map((p) => [
            p.source,
            p.name,
            p.fromVersion,
            p.toVersion,
            enumName(PackageResultState, p.state),
            p.reason,
          ]),
        ).trimEnd(),
      );
      if (detail.value.rebootRequired) lines.push("the host needs a reboot");
    }
    if (detail.case === "dryRunUpdate") {
      lines.push(
        table(
          ["CHANGE", "SOURCE", "PACKAGE", "FROM", "TO"],
          detail.value.changes.map((ch) => [enumName(PackageChangeKind, ch.kind), ch.source, ch.name, ch.fromVersion, ch.toVersion]),
        ).trimEnd(),
      );
    }
  }
  return lines.join("\n") + "\n";
}

// ---- updates
const SEVERITY_NAMES = ["unknown", "low", "moderate", "important", "critical", "security"] as const;

interface SelectionOptions {
  agent?: string[];
  severity?: string[];
  security?: boolean;
  package?: string;
  source?: string;
  group?: string;
  tag?: string;
  all?: boolean;
}

// Updates of decommissioned agents are gone, so only live agents are candidates for a hostname.
const selection = async (c: Clients, o: SelectionOptions) =>
  create(UpdateSelectionSchema, {
    agentIds: await resolveAgents(c, o.agent, { live: true }),
    severities: (o.severity ?? []).map((s) => (UpdateSeverity as unknown as Record<string, UpdateSeverity>)[s.toUpperCase()]!),
    securityOnly: o.security === true,
    packageName: o.package ?? "",
    source: o.source ?? "",
    group: o.group ?? "",
    tag: o.tag ?? "",
    all: o.all === true,
  });

function severityArg(value: string, previous: string[] = []): string[] {
  if (!(SEVERITY_NAMES as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${SEVERITY_NAMES.join(", ")}`);
  return [...previous, value];
}

const selectionOptions = (cmd: Command) =>
  cmd
    .option("--agent <agent>", `only this agent (${AGENT_ARG}; repeatable)`, collect)
    .option("--severity <level>", `only this severity (repeatable): ${SEVERITY_NAMES.join(", ")}`, severityArg)
    .option("--security", "only security updates")
    .option("--package <name>", "only this package, across agents")
    .option("--source <name>", "only this source (apt, dnf, docker …)")
    .option("--group <group>", "only agents in this group")
    .option("--tag <tag>", "only agents with this tag");

const updatesCmd = program.command("updates").description("pending updates across the fleet: approve, reject, install");

selectionOptions(updatesCmd.command("list"))
  .addOption(new Option("--status <status>", "only this decision").choices(["pending", "approved", "rejected"]))
  .action(async (o: SelectionOptions & { status?: string }) => {
    const status = { pending: UpdateStatus.PENDING, approved: UpdateStatus.APPROVED, rejected: UpdateStatus.REJECTED }[o.status ?? ""] ?? UpdateStatus.UNSPECIFIED;
    const c = await clients();
    const res = await c.updates.listUpdates({ filter: await selection(c, o), status, pageSize: 500 });
    if (json()) return printJson(ListUpdatesResponseSchema, res);
    process.stdout.write(
      table(
        ["HOST", "SOURCE", "PACKAGE", "CURRENT", "AVAILABLE", "SEVERITY", "STATUS", "AGENT"],
        res.updates.map((u) => [
          u.hostname,
          u.update!.source,
          u.update!.name,
          u.update!.currentVersion,
          u.update!.availableVersion,
          enumName(UpdateSeverity, u.update!.severity),
          u.held ? "held" : u.installCommandId ? `${enumName(UpdateStatus, u.status)}, install ${enumName(CommandState, u.installCommandState)}` : enumName(UpdateStatus, u.status),
          u.agentId,
        ]),
      ),
    );
    if (res.total > res.updates.length) process.stdout.write(`(${res.updates.length} of ${res.total} shown)\n`);
  });

selectionOptions(updatesCmd.command("approve"))
  .option("--all", "every pending update (when no other filter is given)")
  .option("--install", "also queue the install on each agent now")
  .action(async (o: SelectionOptions & { install?: boolean }) => {
    const c = await clients();
    if (o.install) {
      const res = await c.updates.installApprovedUpdates({ selection: await selection(c, o), approve: true });
      if (json()) return printJson(InstallApprovedUpdatesResponseSchema, res);
      process.stdout.write(`approved and queued ${plural(res.packages, "package")} in ${plural(res.commands.length, "install command")}\n`);
      return printQueuedInstalls(c, res.commands);
    }
    const res = await c.updates.approveUpdates({ selection: await selection(c, o) });
    if (json()) return printJson(ApproveUpdatesResponseSchema, res);
    process.stdout.write(`approved ${plural(res.approved, "update")}${res.held ? `; ${res.held} held, left as they were` : ""}\n`);
  });

selectionOptions(updatesCmd.command("reject"))
  .option("--all", "every pending update (when no other filter is given)")
  .action(async (o: SelectionOptions) => {
    const c = await clients();
    const res = await c.updates.rejectUpdates({ selection: await selection(c, o) });
    if (json()) return printJson(RejectUpdatesResponseSchema, res);
    process.stdout.write(`rejected ${plural(res.rejected, "update")}\n`);
  });

selectionOptions(updatesCmd.command("install"))
  .option("--all", "every approved update (when no other filter is given)")
  .action(async (o: SelectionOptions) => {
    const c = await clients();
    const res = await c.updates.installApprovedUpdates({ selection: await selection(c, o) });
    if (json()) return printJson(InstallApprovedUpdatesResponseSchema, res);
    process.stdout.write(`queued ${plural(res.packages, "approved package")} in ${plural(res.commands.length, "install command")}\n`);
    await printQueuedInstalls(c, res.commands);
  });

// One line per queued install: agent ID, command ID, then the host (last, so scripts that read
// the first two fields keep working).
async function printQueuedInstalls(c: Clients, commands: CommandInfo[]) {
  const hosts = await hostnames(c, commands.map((cmd) => cmd.agentId));
  for (const cmd of commands) process.stdout.write(`${cmd.agentId}  ${cmd.id}  ${hosts.get(cmd.agentId) ?? ""}\n`);
}

const holdsCmd = program.command("holds").description("packages kept as they are, fleet-wide or per agent");

holdsCmd
  .command("list")
  .option("--agent <agent>", `fleet-wide holds plus this agent's (${AGENT_ARG})`)
  .action(async (o: { agent?: string }) => {
    const c = await clients();
    const res = await c.updates.listHolds({ agentId: o.agent ? await resolveAgent(c, o.agent) : "" });
    if (json()) return printJson(ListHoldsResponseSchema, res);
    const hosts = await hostnames(c, res.holds.map((h) => h.agentId).filter(Boolean));
    process.stdout.write(
      table(
        ["SOURCE", "NAME", "HOST", "AGENT", "REASON", "BY", "ID"],
        res.holds.map((h) => [h.source, h.name, h.agentId ? (hosts.get(h.agentId) ?? "") : "(all)", h.agentId || "(all)", h.reason, h.createdBy, h.id]),
      ),
    );
  });

holdsCmd
  .command("set")
  .requiredOption("--name <pattern>", 'package name; "*" matches anything ("linux-image-*")')
  .option("--source <name>", "one source, or every source (default)", "*")
  .option("--agent <agent>", `only this agent (${AGENT_ARG}; default: every agent)`)
  .option("--reason <text>", "why", "")
  .action(async (o: { name: string; source: string; agent?: string; reason: string }) => {
    const c = await clients();
    const agentId = o.agent ? await resolveAgent(c, o.agent, { live: true }) : "";
    const res = await c.updates.setHold({ name: o.name, source: o.source, agentId, reason: o.reason });
    if (json()) return printJson(SetHoldResponseSchema, res);
    const h = res.hold!;
    const host = h.agentId ? (await hostnames(c, [h.agentId])).get(h.agentId) : undefined;
    process.stdout.write(`holding ${h.source}:${h.name} on ${h.agentId ? (host ? `${host} (${h.agentId})` : h.agentId) : "every agent"}: ${h.id}\n`);
  });

holdsCmd
  .command("remove")
  .argument("<id>", "hold ID")
  .action(async (id: string) => {
    await (await clients()).updates.removeHold({ id });
    process.stdout.write(`hold ${id} removed\n`);
  });

// ---- settings and security
const settingsCmd = program.command("settings").description("operational settings (admins change them)");

settingsCmd
  .command("list")
  .action(async () => {
    const res = await (await clients()).settings.listSettings({});
    if (json()) return printJson(ListSettingsResponseSchema, res);
    process.stdout.write(
      table(
        ["KEY", "VALUE", "DEFAULT", "RANGE", "CHANGED BY", "DESCRIPTION"],
        res.settings.map((x) => [x.key, x.value || "(empty)", x.isDefault ? "yes" : x.defaultValue, x.min || x.max ? `${x.min}..${x.max}` : "", x.updatedBy, x.description]),
      ),
    );
  });

settingsCmd
  .command("set")
  .description("change settings: key=value … (an empty value restores the default)")
  .argument("<key=value...>", "for example poll_interval=2m retention_audit=2y")
  .action(async (pairs: string[]) => {
    const values: Record<string, string> = {};
    for (const pair of pairs) {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new CliError(`"${pair}" is not key=value`);
      values[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    await (await clients()).settings.updateSettings({ values });
    process.stdout.write(`updated ${Object.keys(values).join(", ")}\n`);
  });

settingsCmd
  .command("history")
  .option("--key <key>", "only this setting")
  .action(async (o: { key?: string }) => {
    const res = await (await clients()).settings.listSettingChanges({ key: o.key ?? "", pageSize: 200 });
    if (json()) return printJson(ListSettingChangesResponseSchema, res);
    process.stdout.write(table(["TIME", "KEY", "FROM", "TO", "BY"], res.changes.map((c) => [time(c.changeTime)!.toISOString(), c.key, c.before || "(default)", c.after || "(default)", c.changedBy])));
  });

settingsCmd
  .command("export")
  .description("print the changed settings as JSON")
  .action(async () => {
    process.stdout.write(`${(await (await clients()).settings.exportSettings({})).json}\n`);
  });

settingsCmd
  .command("import")
  .description("apply settings exported as JSON")
  .argument("<file>", "JSON file, or - for stdin")
  .action(async (file: string) => {
    let text = "";
    if (file === "-") for await (const chunk of process.stdin) text += chunk;
    else text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`cannot read ${file}: ${err.code ?? err.message}`);
    });
    const res = await (await clients()).settings.importSettings({ json: text });
    process.stdout.write(`imported: ${plural(res.changed, "setting")} changed\n`);
  });

const securityCmd = program.command("security").description("signing keys, credential lifetimes and security events (admins)");

securityCmd
  .command("overview")
  .action(async () => {
    const o = await (await clients()).security.getSecurityOverview({});
    if (json()) return printJson(GetSecurityOverviewResponseSchema, o);
    const secs = (d: { seconds: bigint } | undefined) => (d ? `${d.seconds}s` : "");
    process.stdout.write(
      `${table(["KEY ID", "STATE", "ALGORITHM", "FINGERPRINT", "RETIRES"], o.signingKeys.map((k) => [k.keyId, k.state, k.algorithm, k.fingerprint, time(k.retireTime)?.toISOString() ?? ""]))}\n` +
        `command expiry ${secs(o.commandExpiry)}, access tokens ${secs(o.accessTokenTtl)}, refresh tokens ${secs(o.refreshTokenTtl)} (at most ${secs(o.refreshTokenMaxAge)})\n` +
        `admin.key ${o.adminKeyActive ? "active (revoke it once people sign in)" : "revoked"}; ${plural(o.admins, "admin")}; ${plural(o.usersWithoutTotp, "password user")} without TOTP\n\n` +
        table(["EVENT", "24H", "30D"], o.eventCounts.map((c) => [c.type, String(c.last24h), String(c.last30d)])),
    );
  });

securityCmd
  .command("events")
  .option("--type <type>", "only this type, for example machine_id_mismatch")
  .option("--severity <severity>", "info, warning or critical")
  .action(async (o: { type?: string; severity?: string }) => {
    const res = await (await clients()).security.listSecurityEvents({ type: o.type ?? "", severity: o.severity ?? "", pageSize: 200 });
    if (json()) return printJson(ListSecurityEventsResponseSchema, res);
    process.stdout.write(table(["TIME", "SEVERITY", "TYPE", "MESSAGE", "FROM"], res.events.map((e) => [time(e.time)!.toISOString(), e.severity, e.type, e.message, e.remoteAddr])));
  });

securityCmd
  .command("rotate-key")
  .description("make a new command-signing key active; agents follow on their next poll")
  .option("--grace <duration>", "how long agents keep trusting the old key (default 7d)", seconds)
  .action(async (o: { grace?: number }) => {
    const res = await (await clients()).security.rotateSigningKey({ grace: o.grace ? durationFromMs(o.grace * 1000) : undefined });
    process.stdout.write(`new signing key ${res.activeKey!.keyId} (${res.activeKey!.fingerprint}); ${res.previousKey?.keyId ?? "the old key"} is trusted until ${time(res.previousKey?.retireTime)?.toISOString()}\n`);
  });

securityCmd
  .command("revoke-admin-key")
  .description("revoke the bootstrap admin.key for good (needs an enabled admin person to sign in afterwards)")
  .option("--yes", "do not ask for confirmation")
  .action(async (o: { yes?: boolean }, command: Command) => {
    if (!o.yes) {
      if (!process.stdin.isTTY) command.error("error: no terminal to confirm on: pass --yes to revoke the admin key", { code: "redflag.confirmation", exitCode: 2 });
      const answer = await ask("Revoke the admin key for good? Scripts using admin.key stop working at once. Type yes to confirm: ");
      if (answer.toLowerCase() !== "yes") throw new CliError("not revoked");
    }
    const res = await (await clients()).security.revokeAdminKey({});
    if (json()) return printJson(RevokeAdminKeyResponseSchema, res);
    process.stdout.write(`admin key revoked at ${time(res.revokeTime)?.toISOString()}; admin.key no longer works, sign in or use a personal API token\n`);
  });

// ---- people
const ROLE_NAMES = ["viewer", "operator", "admin"] as const;
const roleOf = (name: string) => ({ viewer: Role.VIEWER, operator: Role.OPERATOR, admin: Role.ADMIN })[name as (typeof ROLE_NAMES)[number]];

// A password from stdin (--password-stdin, for scripts) or typed at a terminal without echo.
async function readSecret(prompt: string, fromStdin: boolean | undefined): Promise<string> {
  if (fromStdin) {
    let data = "";
    for await (const chunk of process.stdin) data += chunk;
    return data.replace(/\r?\n$/, "");
  }
  if (!process.stdin.isTTY) throw new CliError("no terminal to type a password on: pass --password-stdin and pipe it in");
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const out = rl as unknown as { _writeToOutput?: (s: string) => void };
  process.stderr.write(prompt);
  out._writeToOutput = () => {};
  try {
    return await new Promise<string>((resolve) => rl.question("", resolve));
  } finally {
    rl.close();
    process.stderr.write("\n");
  }
}

async function ask(prompt: string): Promise<string> {
  if (!process.stdin.isTTY) throw new CliError(`${prompt.replace(/: $/, "")} is required`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await new Promise<string>((resolve) => rl.question(prompt, resolve))).trim();
  } finally {
    rl.close();
  }
}

const userRow = (u: User) => [u.username, u.displayName, enumName(Role, u.role), u.totpEnabled ? "on" : "", u.disabled ? "disabled" : "active", ago(time(u.lastLoginTime)), u.id];

async function signedIn(res: LoginResponse | SetupResponse) {
  const server = program.opts<GlobalOptions>().server;
  const where = await saveSession({ server, token: res.sessionToken, username: res.user!.username, expires: time(res.sessionExpireTime)?.toISOString() ?? "" });
  if (json()) return printJson(LoginResponseSchema, create(LoginResponseSchema, { user: res.user, sessionExpireTime: res.sessionExpireTime }));
  process.stdout.write(`signed in to ${server} as ${res.user!.username} (${enumName(Role, res.user!.role)}); session saved in ${where}\n`);
}

program
  .command("setup")
  .description("create the first admin of a new control plane")
  .requiredOption("--username <name>", "the admin's username")
  .option("--display-name <name>", "shown in the console")
  .option("--password-stdin", "read the password from stdin")
  .action(async (o: { username: string; displayName?: string; passwordStdin?: boolean }) => {
    const password = await readSecret("new password: ", o.passwordStdin);
    await signedIn(await anonymousAuth().setup({ username: o.username, password, displayName: o.displayName ?? "" }));
  });

program
  .command("login")
  .description("sign in and keep the session for later commands")
  .option("--username <name>", "your username")
  .option("--password-stdin", "read the password from stdin")
  .option("--totp <code>", "the current code from your authenticator, when TOTP is on")
  .action(async (o: { username?: string; passwordStdin?: boolean; totp?: string }) => {
    const username = o.username ?? (await ask("username: "));
    const password = await readSecret("password: ", o.passwordStdin);
    let totpCode = o.totp ?? "";
    try {
      await signedIn(await anonymousAuth().login({ username, password, totpCode }));
    } catch (err) {
      if (!(err instanceof ConnectError) || !/needs a TOTP code/.test(err.rawMessage) || !process.stdin.isTTY) throw err;
      totpCode = await ask("TOTP code: ");
      await signedIn(await anonymousAuth().login({ username, password, totpCode }));
    }
  });

program
  .command("logout")
  .description("end the stored session")
  .action(async () => {
    const server = program.opts<GlobalOptions>().server;
    const session = await loadSession(server);
    if (session) await createClient(AuthService, transportFor(session.token)).logout({}).catch(() => undefined);
    await removeSession();
    process.stdout.write(session ? `signed out of ${server}\n` : "not signed in\n");
  });

program
  .command("whoami")
  .description("who the current credential acts as")
  .action(async () => {
    const res = await (await clients()).auth.whoAmI({});
    if (json()) return printJson(WhoAmIResponseSchema, res);
    const p = res.principal!;
    const who = p.user ? `${p.user.username} (${p.user.displayName})` : p.credentialName;
    process.stdout.write(`${who}: ${enumName(Role, p.role)} through ${p.kind.replace("_", " ")}\n`);
  });

program
  .command("password")
  .description("change your password (ends your other sessions)")
  .action(async () => {
    const currentPassword = await readSecret("current password: ", false);
    const newPassword = await readSecret("new password: ", false);
    await (await clients()).auth.changePassword({ currentPassword, newPassword });
    process.stdout.write("password changed; your other sessions ended\n");
  });

const totpCmd = program.command("totp").description("your second sign-in factor");

totpCmd
  .command("enroll")
  .description("start: prints the secret and the otpauth:// URI for your authenticator app")
  .option("--password-stdin", "read your password from stdin")
  .action(async (o: { passwordStdin?: boolean }) => {
    const password = await readSecret("password: ", o.passwordStdin);
    const res = await (await clients()).auth.beginTotpEnrollment({ password });
    process.stdout.write(`secret: ${res.secret}\nuri:    ${res.uri}\nthen: redflag totp confirm <code>\n`);
  });

totpCmd
  .command("confirm")
  .argument("<code>", "the current 6-digit code")
  .action(async (code: string) => {
    await (await clients()).auth.confirmTotpEnrollment({ code });
    process.stdout.write("TOTP is on: sign-ins now ask for a code\n");
  });

totpCmd
  .command("disable")
  .argument("<code>", "the current 6-digit code")
  .option("--password-stdin", "read your password from stdin")
  .action(async (code: string, o: { passwordStdin?: boolean }) => {
    const password = await readSecret("password: ", o.passwordStdin);
    await (await clients()).auth.disableTotp({ password, code });
    process.stdout.write("TOTP is off\n");
  });

const usersCmd = program.command("users").description("people who may use RedFlag (admins)");

usersCmd
  .command("list")
  .action(async () => {
    const res = await (await clients()).users.listUsers({ pageSize: 500 });
    if (json()) return printJson(ListUsersResponseSchema, res);
    process.stdout.write(table(["USERNAME", "NAME", "ROLE", "TOTP", "STATE", "LAST SIGN-IN", "ID"], res.users.map(userRow)));
  });

usersCmd
  .command("create")
  .requiredOption("--username <name>", "username")
  .addOption(new Option("--role <role>", "what they may do").choices(ROLE_NAMES).makeOptionMandatory())
  .option("--display-name <name>", "shown in the console")
  .option("--password-stdin", "read the password from stdin")
  .action(async (o: { username: string; role: string; displayName?: string; passwordStdin?: boolean }) => {
    const password = await readSecret("password for the new user: ", o.passwordStdin);
    const res = await (await clients()).users.createUser({ username: o.username, password, role: roleOf(o.role), displayName: o.displayName ?? "" });
    if (json()) return printJson(CreateUserResponseSchema, res);
    process.stdout.write(`${res.user!.username} (${o.role}) created: ${res.user!.id}\n`);
  });

usersCmd
  .command("set-role")
  .argument("<id>", "user ID")
  .addArgument(new Argument("<role>", "new role").choices(ROLE_NAMES))
  .action(async (id: string, role: string) => {
    const res = await (await clients()).users.updateUser({ id, role: roleOf(role) });
    if (json()) return printJson(UpdateUserResponseSchema, res);
    process.stdout.write(`${res.user!.username} is now ${role}\n`);
  });

for (const [name, verb] of [["disable", "disabled"], ["enable", "enabled"]] as const) {
  usersCmd
    .command(name)
    .argument("<id>", "user ID")
    .action(async (id: string) => {
      const c = await clients();
      const user = name === "disable" ? (await c.users.disableUser({ id })).user! : (await c.users.enableUser({ id })).user!;
      if (json()) return printJson(DisableUserResponseSchema, create(DisableUserResponseSchema, { user }));
      process.stdout.write(`${user.username} ${verb}\n`);
    });
}

usersCmd
  .command("reset-password")
  .argument("<id>", "user ID")
  .option("--clear-totp", "also turn their TOTP off")
  .option("--password-stdin", "read the new password from stdin")
  .action(async (id: string, o: { clearTotp?: boolean; passwordStdin?: boolean }) => {
    const newPassword = await readSecret("new password: ", o.passwordStdin);
    const res = await (await clients()).users.resetPassword({ id, newPassword, clearTotp: o.clearTotp === true });
    if (json()) return printJson(ResetPasswordResponseSchema, res);
    process.stdout.write(`password of ${res.user!.username} reset; their sessions ended\n`);
  });

const apiTokensCmd = program.command("api-tokens").description("your personal API tokens for scripts");

apiTokensCmd
  .command("create")
  .requiredOption("--name <name>", "what the token is for")
  .addOption(new Option("--scope <role>", "the most it may do (default: your role)").choices(ROLE_NAMES))
  .option("--expires <duration>", "lifetime, 1h to 2y (default 90d)", seconds)
  .action(async (o: { name: string; scope?: string; expires?: number }) => {
    const res = await (await clients()).apiTokens.createApiToken({
      name: o.name,
      scope: o.scope ? roleOf(o.scope) : Role.UNSPECIFIED,
      ttl: o.expires ? durationFromMs(o.expires * 1000) : undefined,
    });
    if (json()) return printJson(CreateApiTokenResponseSchema, res);
    process.stdout.write(`${res.secret}\n`);
    process.stderr.write(`token ${res.token!.id} (${enumName(Role, res.token!.scope)}) expires ${time(res.token!.expireTime)?.toISOString()}; the secret above is shown only once\n`);
  });

apiTokensCmd
  .command("list")
  .option("--all", "everyone's tokens (admins)")
  .action(async (o: { all?: boolean }) => {
    const res = await (await clients()).apiTokens.listApiTokens({ allUsers: o.all === true });
    if (json()) return printJson(ListApiTokensResponseSchema, res);
    const state = (t: ApiToken) => (t.revokeTime ? "revoked" : time(t.expireTime)! < new Date() ? "expired" : "active");
    process.stdout.write(
      table(
        ["NAME", "OWNER", "SCOPE", "STATE", "LAST USED", "EXPIRES", "ID"],
        res.tokens.map((t) => [t.name, t.username, enumName(Role, t.scope), state(t), ago(time(t.lastUseTime)), time(t.expireTime)?.toISOString().slice(0, 10) ?? "", t.id]),
      ),
    );
  });

apiTokensCmd
  .command("revoke")
  .argument("<id>", "token ID")
  .action(async (id: string) => {
    const res = await (await clients()).apiTokens.revokeApiToken({ id });
    if (json()) return printJson(RevokeApiTokenResponseSchema, res);
    process.stdout.write(`token ${res.token!.name} revoked\n`);
  });

program
  .command("audit")
  .description("who changed what (admins)")
  .option("--actor <name>", "only this person or key")
  .option("--action <text>", "only RPCs containing this, for example CreateUser")
  .option("--target <prefix>", "only targets starting with this, for example user:<id> or agent:<id> (or agent:<hostname>)")
  .option("--since <duration>", "only the last …, for example 24h", seconds)
  .option("--limit <n>", "at most this many (default 50)", positiveInt)
  .action(async (o: { actor?: string; action?: string; target?: string; since?: number; limit?: number }) => {
    const c = await clients();
    const res = await c.audit.listAuditEntries({
      actorName: o.actor ?? "",
      action: o.action ?? "",
      target: o.target ? await auditTarget(c, o.target) : "",
      since: o.since ? timestampFromDate(new Date(Date.now() - o.since * 1000)) : undefined,
      pageSize: Math.min(o.limit ?? 50, 500),
    });
    if (json()) return printJson(ListAuditEntriesResponseSchema, res);
    const agentOf = (target: string) => (target.startsWith("agent:") ? target.slice("agent:".length) : "");
    const hosts = await hostnames(c, res.entries.map((e) => agentOf(e.target)));
    const target = (t: string) => (hosts.has(agentOf(t)) ? `${t} (${hosts.get(agentOf(t))})` : t);
    process.stdout.write(
      table(
        ["TIME", "ACTOR", "ACTION", "TARGET", "FROM", "OUTCOME"],
        res.entries.map((e) => [time(e.time)!.toISOString(), `${e.actorName} (${e.actorKind.replace("_", " ")})`, e.action.replace(/^redflag\.v1\./, ""), target(e.target), e.remoteAddr, e.outcome]),
      ),
    );
  });

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

// ---- reports
program
  .command("report")
  .description("the fleet now: health, pending updates, reboots, recent failures, and daily history")
  .option("--days <n>", "days of history, counting today (default 14, at most 90)", positiveInt)
  .action(async (o: { days?: number }) => {
    const c = await clients();
    const r = await c.reports.getFleetOverview({ days: o.days ?? 0 });
    if (json()) return printJson(GetFleetOverviewResponseSchema, r);
    const hosts = await hostnames(c, r.recentFailures.map((f) => f.agentId));
    const health = r.health.map((h) => `${h.count} ${enumName(AgentHealth, h.health).replace("_", " ")}`).join(", ");
    const severities = r.pendingBySeverity.map((s) => `${s.count} ${enumName(UpdateSeverity, s.severity)}`).join(", ");
    const day = (t: Parameters<typeof time>[0]) => time(t)!.toISOString().slice(0, 10);
    const labels = (rows: { label: string; count: number }[]) => rows.map((l) => [l.label, String(l.count)]);
    process.stdout.write(
      `agents: ${r.totalAgents} (${health})
` +
        `pending updates: ${r.pendingUpdates}, ${r.securityUpdates} security, on ${plural(r.agentsWithUpdates, "agent")}${severities ? `: ${severities}` : ""}
` +
        `needs a reboot: ${r.rebootRequiredCount}${r.rebootRequiredCount > r.rebootRequired.length ? ` (first ${r.rebootRequired.length} shown)` : ""}
` +
        (r.rebootRequired.length > 0 ? table(["HOSTNAME", "ID", "HEALTH"], r.rebootRequired.map((a) => [a.hostname, a.id, enumName(AgentHealth, a.health).replace("_", " ")])) : "") +
        `
recent failures:
` +
        table(
          ["FINISHED", "COMMAND", "HOST", "AGENT", "TYPE", "STATE", "MESSAGE"],
          r.recentFailures.map((c) => [time(c.finishTime)?.toISOString() ?? "", c.id, hosts.get(c.agentId) ?? "", c.agentId, enumName(CommandType, c.type), enumName(CommandState, c.state), c.result?.message ?? ""]),
        ) +
        `
daily (UTC):
` +
        table(
          ["DAY", "FOUND", "INSTALLED", "INSTALL FAILED", "COMMANDS OK", "COMMANDS FAILED"],
          r.daily.map((d) => [day(d.day), d.updatesFound, d.updatesInstalled, d.updatesFailed, d.commandsSucceeded, d.commandsFailed].map(String)),
        ) +
        `
${table(["OS", "AGENTS"], labels(r.agentsByOs))}
${table(["AGENT VERSION", "AGENTS"], labels(r.agentsByVersion))}`,
    );
  });

// ---- releases
const releasesCmd = program.command("releases").description("the registry of agent releases, the only source of agent upgrades (admins publish)");

// What `releases publish` takes: files named as parseArtifactFileName says (domain/releases.ts).
const ARTIFACT_HINT = ARTIFACT_NAME_HINT;
// A publish streams the whole artifact; give a slow link time.
const PUBLISH_TIMEOUT_MS = 60 * 60_000;
const PUBLISH_CHUNK_BYTES = 1024 * 1024;

interface Artifact {
  file: string;
  version: string;
  platform: string;
}

async function artifactsIn(paths: string[]): Promise<Artifact[]> {
  const found: Artifact[] = [];
  for (const p of paths) {
    const info = await stat(p).catch(() => undefined);
    if (!info) throw new CliError(`${p} does not exist`);
    const files = info.isDirectory() ? (await readdir(p)).sort().map((name) => path.join(p, name)) : [p];
    const matching = files.flatMap((file) => {
      const named = parseArtifactFileName(path.basename(file));
      return named ? [{ file, ...named }] : [];
    });
    if (matching.length === 0) {
      throw new CliError(info.isDirectory() ? `${p} holds no agent build named ${ARTIFACT_HINT}` : `${p} is not named ${ARTIFACT_HINT}`);
    }
    found.push(...matching);
  }
  return found;
}

async function digestFile(file: string): Promise<{ size: bigint; sha256: Uint8Array }> {
  const hash = createHash("sha256");
  let size = 0n;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += BigInt(chunk.length);
  }
  return { size, sha256: new Uint8Array(hash.digest()) };
}

// The header, then the file in 1 MiB pieces, read as the upload goes (never all in memory).
async function* publishStream(a: Artifact, size: bigint, sha256: Uint8Array): AsyncGenerator<PublishReleaseRequest> {
  yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version: a.version, platform: a.platform, sizeBytes: size, sha256 } } });
  for await (const chunk of createReadStream(a.file, { highWaterMark: PUBLISH_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: new Uint8Array(chunk) } });
  }
}

async function findRelease(client: Awaited<ReturnType<typeof clients>>["releases"], version: string, platform: string): Promise<AgentRelease | undefined> {
  let pageToken = "";
  do {
    const page = await client.listReleases({ platform, pageSize: 500, pageToken });
    const hit = page.releases.find((r) => r.version === version);
    if (hit) return hit;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return undefined;
}

const shortHash = (sha256: Uint8Array) => Buffer.from(sha256).toString("hex").slice(0, 16);

releasesCmd
  .command("publish")
  .description(`add agent builds to the registry (admins): files named ${ARTIFACT_HINT}, or directories holding them`)
  .argument("<paths...>", "directories or files")
  .action(async (paths: string[]) => {
    const c = await clients();
    const published: AgentRelease[] = [];
    for (const artifact of await artifactsIn(paths)) {
      const digest = await digestFile(artifact.file);
      const known = await findRelease(c.releases, artifact.version, artifact.platform);
      let release: AgentRelease;
      let created = false;
      if (known && Buffer.from(known.sha256).equals(Buffer.from(digest.sha256))) {
        release = known;
      } else {
        const res = await c.releases.publishRelease(publishStream(artifact, digest.size, digest.sha256), { timeoutMs: PUBLISH_TIMEOUT_MS });
        release = res.release!;
        created = res.created;
      }
      published.push(release);
      if (!json()) {
        process.stdout.write(
          `${created ? "published" : "already published"}: ${release.version} for ${release.platform} (${size(release.sizeBytes)}, sha256 ${shortHash(release.sha256)}…) from ${artifact.file}\n`,
        );
      }
    }
    if (json()) printJson(ListReleasesResponseSchema, create(ListReleasesResponseSchema, { releases: published }));
    else process.stdout.write("agents upgrade with `redflag agents upgrade <agent-id> --version <version>`\n");
  });

releasesCmd
  .command("list")
  .description("the published agent releases, most recent first")
  .option("--platform <os-arch>", 'only this platform ("linux-x64", "any" …)')
  .action(async (o: { platform?: string }) => {
    const c = await clients();
    const all: AgentRelease[] = [];
    let pageToken = "";
    do {
      const page = await c.releases.listReleases({ platform: o.platform ?? "", pageSize: 500, pageToken });
      all.push(...page.releases);
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (json()) return printJson(ListReleasesResponseSchema, create(ListReleasesResponseSchema, { releases: all }));
    process.stdout.write(
      table(
        ["VERSION", "PLATFORM", "SIZE", "SHA-256", "PUBLISHED", "BY"],
        all.map((r) => [r.version, r.platform, size(r.sizeBytes), Buffer.from(r.sha256).toString("hex"), ago(time(r.publishTime)), r.publishedBy]),
      ),
    );
  });

releasesCmd
  .command("delete")
  .description("remove one release (one version for one platform) from the registry (admins)")
  .argument("<version>", "release version")
  .requiredOption("--platform <os-arch>", 'its platform ("linux-x64", "any" …)')
  .action(async (version: string, o: { platform: string }) => {
    await (await clients()).releases.deleteRelease({ version, platform: o.platform });
    process.stdout.write(`release ${version} for ${o.platform} deleted\n`);
  });

// ---- run
// `redflag --version` (or -V) alone, before any command: commander's own version option would also
// take the `--version <version>` of `agents upgrade` and `releases delete`.
const [first] = process.argv.slice(2);
if (first === "--version" || first === "-V") {
  process.stdout.write(`${pkg.version}\n`);
} else {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    process.exitCode = report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (err instanceof CliError) {
    process.stderr.write(`redflag: ${err.message}\n`);
    return 1;
  }
  if (err instanceof ConnectError) {
    const server = program.opts<GlobalOptions>().server;
    const message =
      err.code === Code.Unavailable || err.code === Code.Unknown
        ? `cannot reach the control plane at ${server}: ${err.rawMessage}`
        : err.rawMessage;
    process.stderr.write(`redflag: ${Code[err.code]}: ${message}\n`);
    return 1;
  }
  process.stderr.write(`redflag: ${(err as Error).message ?? String(err)}\n`);
  return 1;
}

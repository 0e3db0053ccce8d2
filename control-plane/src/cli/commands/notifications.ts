import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  ChannelKind,
  CreateChannelResponseSchema,
  CreateRuleResponseSchema,
  ListChannelsResponseSchema,
  ListDeliveriesResponseSchema,
  ListRulesResponseSchema,
  SendTestMessageResponseSchema,
  type NotificationChannel,
} from "@redflag/gen/notification_service_pb";
import { NOTIFICATION_EVENTS } from "@redflag/common/notification-events";
import { InvalidArgumentError, type Command } from "commander";
import { readFileSync } from "node:fs";
import { CliError, type CliContext } from "../context.ts";
import { collect, positiveInt, seconds } from "../options.ts";
import { table, time } from "../output.ts";

const KINDS: Record<string, ChannelKind> = {
  webhook: ChannelKind.WEBHOOK,
  slack: ChannelKind.SLACK,
  discord: ChannelKind.DISCORD,
  teams: ChannelKind.TEAMS,
  ntfy: ChannelKind.NTFY,
  gotify: ChannelKind.GOTIFY,
  email: ChannelKind.EMAIL,
};
const kindName = (kind: ChannelKind) => Object.entries(KINDS).find(([, k]) => k === kind)?.[0] ?? "?";

function kind(value: string): ChannelKind {
  const k = KINDS[value];
  if (k === undefined) throw new InvalidArgumentError(`must be one of ${Object.keys(KINDS).join(", ")}`);
  return k;
}

// A secret from its option or from the file its -file option names (keeps it out of shell
// history and the process list).
function secret(value: string | undefined, file: string | undefined, what: string): string {
  if (value !== undefined && file !== undefined) throw new CliError(`give ${what} once: either the option or its -file form`);
  if (file === undefined) return value ?? "";
  try {
    return readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new CliError(`cannot read ${what} from ${file}: ${(err as Error).message}`);
  }
}

interface ChannelOptions {
  kind: ChannelKind;
  url?: string;
  urlFile?: string;
  token?: string;
  tokenFile?: string;
  signingSecret?: string;
  signingSecretFile?: string;
  smtpPassword?: string;
  smtpPasswordFile?: string;
  smtpHost?: string;
  smtpPort?: number;
  smtpSecurity?: string;
  smtpUsername?: string;
  from?: string;
  to?: string[];
  priority?: number;
  disabled?: boolean;
}

// redflag notifications: channels, rules and the delivery log (admins). See docs/notifications.md.
export function registerNotifications(program: Command, cli: CliContext): void {
  const notifications = program.command("notifications").description("where and when people are told about failed installs, security events and new critical updates (admins)");
  const client = async () => (await cli.clients()).notifications;

  const channelByName = async (ref: string): Promise<NotificationChannel> => {
    const { channels } = await (await client()).listChannels({});
    const found = channels.find((c) => c.id === ref || c.name === ref);
    if (!found) throw new CliError(`no notification channel is called "${ref}" (see \`redflag notifications channels list\`)`);
    return found;
  };

  const channels = notifications.command("channels").description("where messages go: webhook, slack, discord, teams, ntfy, gotify, email");

  channels
    .command("create")
    .argument("<name>")
    .requiredOption("--kind <kind>", `one of ${Object.keys(KINDS).join(", ")}`, kind)
    .option("--url <url>", "the webhook, topic or server URL (a secret)")
    .option("--url-file <file>")
    .option("--token <token>", "ntfy access token or Gotify application token (a secret)")
    .option("--token-file <file>")
    .option("--signing-secret <secret>", "webhook HMAC key, 16..256 characters (a secret)")
    .option("--signing-secret-file <file>")
    .option("--smtp-host <host>")
    .option("--smtp-port <port>", "default 587", positiveInt)
    .option("--smtp-security <mode>", "starttls (default), tls or none")
    .option("--smtp-username <name>")
    .option("--smtp-password <password>", "(a secret)")
    .option("--smtp-password-file <file>")
    .option("--from <address>")
    .option("--to <address>", "a recipient (repeat for more)", collect)
    .option("--priority <1-5>", "ntfy priority (default 3)", positiveInt)
    .option("--disabled", "create it disabled")
    .action(async (name: string, o: ChannelOptions) => {
      const email = o.kind === ChannelKind.EMAIL;
      const res = await (await client()).createChannel({
        name,
        kind: o.kind,
        secrets: {
          url: secret(o.url, o.urlFile, "--url"),
          token: secret(o.token, o.tokenFile, "--token"),
          signingSecret: secret(o.signingSecret, o.signingSecretFile, "--signing-secret"),
          smtpPassword: secret(o.smtpPassword, o.smtpPasswordFile, "--smtp-password"),
        },
        email: email
          ? { smtpHost: o.smtpHost ?? "", smtpPort: o.smtpPort ?? 0, smtpSecurity: o.smtpSecurity ?? "", smtpUsername: o.smtpUsername ?? "", from: o.from ?? "", to: o.to ?? [] }
          : undefined,
        ntfyPriority: o.priority ?? 0,
        disabled: o.disabled === true,
      });
      if (cli.json()) return cli.printJson(CreateChannelResponseSchema, res);
      cli.out(`created ${kindName(res.channel!.kind)} channel ${res.channel!.name} (${res.channel!.id}); try it with \`redflag notifications channels test ${res.channel!.name}\`\n`);
    });

  channels.command("list").action(async () => {
    const res = await (await client()).listChannels({});
    if (cli.json()) return cli.printJson(ListChannelsResponseSchema, res);
    cli.out(table(["NAME", "KIND", "ENABLED", "SECRETS", "ID"], res.channels.map((c) => [c.name, kindName(c.kind), c.enabled ? "yes" : "no", c.secretHint, c.id])));
  });

  channels
    .command("delete")
    .argument("<name>", "the channel's name or ID")
    .action(async (ref: string) => {
      const channel = await channelByName(ref);
      await (await client()).deleteChannel({ id: channel.id });
      cli.out(`deleted channel ${channel.name}\n`);
    });

  channels
    .command("test")
    .description("send a test message now")
    .argument("<name>", "the channel's name or ID")
    .action(async (ref: string) => {
      const channel = await channelByName(ref);
      const res = await (await client()).sendTestMessage({ channelId: channel.id });
      if (cli.json()) return cli.printJson(SendTestMessageResponseSchema, res);
      if (!res.delivered) throw new CliError(`the test message to ${channel.name} was not delivered: ${res.error}`);
      cli.out(`test message delivered to ${channel.name}\n`);
    });

  const rules = notifications.command("rules").description("which events go to which channels, with quiet hours and grouping");

  rules
    .command("create")
    .argument("<name>")
    .requiredOption("--event <event>", `${NOTIFICATION_EVENTS.slice(0, -1).join(", ")} or ${NOTIFICATION_EVENTS.at(-1)} (repeat for more)`, collect)
    .requiredOption("--channel <name>", "a channel's name or ID (repeat for more)", collect)
    .option("--min-severity <severity>", "info (default), warning or critical")
    .option("--group <group>", "only agents of this group (repeat for more)", collect)
    .option("--quiet-hours <HH:MM-HH:MM>", "hold messages back between these local times")
    .option("--time-zone <zone>", "the IANA zone of the quiet hours, for example Europe/Berlin")
    .option("--group-window <duration>", "events of one kind within this window become one message (default 60s)", seconds)
    .option("--disabled", "create it disabled")
    .action(async (name: string, o: { event: string[]; channel: string[]; minSeverity?: string; group?: string[]; quietHours?: string; timeZone?: string; groupWindow?: number; disabled?: boolean }) => {
      let quietHours: { start: string; end: string; timeZone: string } | undefined;
      if (o.quietHours !== undefined || o.timeZone !== undefined) {
        const [start, end, ...rest] = (o.quietHours ?? "").split("-");
        if (!start || !end || rest.length > 0 || !o.timeZone) throw new CliError("quiet hours need --quiet-hours HH:MM-HH:MM and --time-zone ZONE");
        quietHours = { start, end, timeZone: o.timeZone };
      }
      const channelIds = [];
      for (const ref of o.channel) channelIds.push((await channelByName(ref)).id);
      const res = await (await client()).createRule({
        rule: {
          name,
          enabled: o.disabled !== true,
          events: o.event,
          minSeverity: o.minSeverity ?? "",
          groups: o.group ?? [],
          channelIds,
          quietHours,
          groupWindow: o.groupWindow !== undefined ? durationFromMs(o.groupWindow * 1000) : undefined,
        },
      });
      if (cli.json()) return cli.printJson(CreateRuleResponseSchema, res);
      cli.out(`created rule ${res.rule!.name} (${res.rule!.id})\n`);
    });

  rules.command("list").action(async () => {
    const c = await client();
    const [res, { channels: all }] = await Promise.all([c.listRules({}), c.listChannels({})]);
    if (cli.json()) return cli.printJson(ListRulesResponseSchema, res);
    const channelName = (id: string) => all.find((ch) => ch.id === id)?.name ?? id;
    cli.out(
      table(
        ["NAME", "ENABLED", "EVENTS", "MIN SEVERITY", "GROUPS", "CHANNELS", "QUIET HOURS"],
        res.rules.map((r) => [
          r.name,
          r.enabled ? "yes" : "no",
          r.events.join(","),
          r.minSeverity,
          r.groups.join(",") || "all",
          r.channelIds.map(channelName).join(","),
          r.quietHours ? `${r.quietHours.start}-${r.quietHours.end} ${r.quietHours.timeZone}` : "",
        ]),
      ),
    );
  });

  rules
    .command("delete")
    .argument("<name>", "the rule's name or ID")
    .action(async (ref: string) => {
      const c = await client();
      const rule = (await c.listRules({})).rules.find((r) => r.id === ref || r.name === ref);
      if (!rule) throw new CliError(`no notification rule is called "${ref}" (see \`redflag notifications rules list\`)`);
      await c.deleteRule({ id: rule.id });
      cli.out(`deleted rule ${rule.name}\n`);
    });

  notifications
    .command("deliveries")
    .description("the delivery log, newest first")
    .option("--channel <name>", "only this channel")
    .option("--status <status>", "waiting, sent or failed")
    .option("--limit <n>", "at most this many (default 50)", positiveInt)
    .action(async (o: { channel?: string; status?: string; limit?: number }) => {
      const channelId = o.channel ? (await channelByName(o.channel)).id : "";
      const res = await (await client()).listDeliveries({ channelId, status: o.status ?? "", pageSize: Math.min(o.limit ?? 50, 500) });
      if (cli.json()) return cli.printJson(ListDeliveriesResponseSchema, res);
      cli.out(
        table(
          ["CREATED", "CHANNEL", "EVENT", "STATUS", "ATTEMPTS", "TITLE", "LAST ERROR"],
          res.deliveries.map((d) => [time(d.createTime)!.toISOString(), d.channelName, d.event, d.status, String(d.attempts), d.title, d.lastError]),
        ),
      );
    });
}

import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { plural } from "@redflag/common/plural";
import { GetSecurityOverviewResponseSchema, ListSecurityEventsResponseSchema, RevokeAdminKeyResponseSchema } from "@redflag/gen/security_service_pb";
import type { Command } from "commander";
import { CliError, type CliContext } from "../context.ts";
import { seconds } from "../options.ts";
import { table, time } from "../output.ts";
import { ask } from "../prompt.ts";

// redflag security: signing keys, credential lifetimes and security events (admins).
export function registerSecurity(program: Command, cli: CliContext): void {
  const security = program.command("security").description("signing keys, credential lifetimes and security events (admins)");

  security
    .command("overview")
    .action(async () => {
      const o = await (await cli.clients()).security.getSecurityOverview({});
      if (cli.json()) return cli.printJson(GetSecurityOverviewResponseSchema, o);
      const secs = (d: { seconds: bigint } | undefined) => (d ? `${d.seconds}s` : "");
      cli.out(
        `${table(["KEY ID", "STATE", "ALGORITHM", "FINGERPRINT", "RETIRES"], o.signingKeys.map((k) => [k.keyId, k.state, k.algorithm, k.fingerprint, time(k.retireTime)?.toISOString() ?? ""]))}\n` +
          `command expiry ${secs(o.commandExpiry)}, access tokens ${secs(o.accessTokenTtl)}, refresh tokens ${secs(o.refreshTokenTtl)} (at most ${secs(o.refreshTokenMaxAge)})\n` +
          `admin.key ${o.adminKeyActive ? "active (revoke it once people sign in)" : "revoked"}; ${plural(o.admins, "admin")}; ${plural(o.usersWithoutTotp, "password user")} without TOTP\n\n` +
          table(["EVENT", "24H", "30D"], o.eventCounts.map((c) => [c.type, String(c.last24h), String(c.last30d)])),
      );
    });

  security
    .command("events")
    .option("--type <type>", "only this type, for example machine_id_mismatch")
    .option("--severity <severity>", "info, warning or critical")
    .action(async (o: { type?: string; severity?: string }) => {
      const res = await (await cli.clients()).security.listSecurityEvents({ type: o.type ?? "", severity: o.severity ?? "", pageSize: 200 });
      if (cli.json()) return cli.printJson(ListSecurityEventsResponseSchema, res);
      cli.out(table(["TIME", "SEVERITY", "TYPE", "MESSAGE", "FROM"], res.events.map((e) => [time(e.time)!.toISOString(), e.severity, e.type, e.message, e.remoteAddr])));
    });

  security
    .command("rotate-key")
    .description("make a new command-signing key active; agents follow on their next poll")
    .option("--grace <duration>", "how long agents keep trusting the old key (default 7d)", seconds)
    .action(async (o: { grace?: number }) => {
      const res = await (await cli.clients()).security.rotateSigningKey({ grace: o.grace ? durationFromMs(o.grace * 1000) : undefined });
      cli.out(`new signing key ${res.activeKey!.keyId} (${res.activeKey!.fingerprint}); ${res.previousKey?.keyId ?? "the old key"} is trusted until ${time(res.previousKey?.retireTime)?.toISOString()}\n`);
    });

  security
    .command("revoke-admin-key")
    .description("revoke the bootstrap admin.key for good (needs an enabled admin person to sign in afterwards)")
    .option("--yes", "do not ask for confirmation")
    .action(async (o: { yes?: boolean }, command: Command) => {
      if (!o.yes) {
        if (!cli.io.stdin.isTTY) command.error("error: no terminal to confirm on: pass --yes to revoke the admin key", { code: "redflag.confirmation", exitCode: 2 });
        const answer = await ask(cli.io, "Revoke the admin key for good? Scripts using admin.key stop working at once. Type yes to confirm: ");
        if (answer.toLowerCase() !== "yes") throw new CliError("not revoked");
      }
      const res = await (await cli.clients()).security.revokeAdminKey({});
      if (cli.json()) return cli.printJson(RevokeAdminKeyResponseSchema, res);
      cli.out(`admin key revoked at ${time(res.revokeTime)?.toISOString()}; admin.key no longer works, sign in or use a personal API token\n`);
    });
}

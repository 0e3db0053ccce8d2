import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { plural } from "@redflag/common/plural";
import {
  CreateRegistrationTokenResponseSchema,
  ListRegistrationTokensResponseSchema,
  RegistrationTokenState,
  RevokeRegistrationTokenResponseSchema,
} from "@redflag/gen/token_service_pb";
import type { Command } from "commander";
import type { CliContext } from "../context.ts";
import { positiveInt, seconds } from "../options.ts";
import { enumName, table, time } from "../output.ts";

// redflag tokens: registration tokens that let agents enrol.
export function registerTokens(program: Command, cli: CliContext): void {
  const tokens = program.command("tokens").description("registration tokens that let agents enrol");

  tokens
    .command("create")
    .description("create a registration token; its secret is printed once")
    .requiredOption("--seats <n>", "how many agents may register with it", positiveInt)
    .option("--expires <duration>", "lifetime, for example 24h or 7d (default: never)", seconds)
    .option("--note <text>", "what the token is for", "")
    .action(async (o: { seats: number; expires?: number; note: string }) => {
      const res = await (await cli.clients()).tokens.createRegistrationToken({
        seats: o.seats,
        note: o.note,
        ttl: o.expires ? durationFromMs(o.expires * 1000) : undefined,
      });
      // On stderr, ahead of everything: `redflag tokens create | …` still reads only the token.
      if (res.serverUrlWarning) cli.err(`redflag: warning: ${res.serverUrlWarning}\n`);
      if (cli.json()) return cli.printJson(CreateRegistrationTokenResponseSchema, res);
      const t = res.token!;
      cli.out(
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
      const res = await (await cli.clients()).tokens.listRegistrationTokens({ pageSize: 500 });
      if (cli.json()) return cli.printJson(ListRegistrationTokensResponseSchema, res);
      cli.out(
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
      const res = await (await cli.clients()).tokens.revokeRegistrationToken({ id });
      if (cli.json()) return cli.printJson(RevokeRegistrationTokenResponseSchema, res);
      cli.out(`token ${id} revoked\n`);
    });

  tokens
    .command("delete")
    .description("remove a revoked, expired or used-up token")
    .argument("<id>", "token ID")
    .action(async (id: string) => {
      await (await cli.clients()).tokens.deleteRegistrationToken({ id });
      cli.out(`token ${id} deleted\n`);
    });
}

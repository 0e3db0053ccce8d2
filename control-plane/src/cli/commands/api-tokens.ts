import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type ApiToken, CreateApiTokenResponseSchema, ListApiTokensResponseSchema, RevokeApiTokenResponseSchema } from "@redflag/gen/api_token_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { ROLES, roleToProto } from "@redflag/common/roles";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.ts";
import { seconds } from "../options.ts";
import { ago, enumName, table, time } from "../output.ts";

// redflag api-tokens: the caller's personal API tokens for scripts.
export function registerApiTokens(program: Command, cli: CliContext): void {
  const apiTokens = program.command("api-tokens").description("your personal API tokens for scripts");

  apiTokens
    .command("create")
    .requiredOption("--name <name>", "what the token is for")
    .addOption(new Option("--scope <role>", "the most it may do (default: your role)").choices(ROLES))
    .option("--expires <duration>", "lifetime, 1h to 2y (default 90d)", seconds)
    .action(async (o: { name: string; scope?: string; expires?: number }) => {
      const res = await (await cli.clients()).apiTokens.createApiToken({
        name: o.name,
        scope: o.scope ? roleToProto(o.scope) : Role.UNSPECIFIED,
        ttl: o.expires ? durationFromMs(o.expires * 1000) : undefined,
      });
      if (cli.json()) return cli.printJson(CreateApiTokenResponseSchema, res);
      cli.out(`${res.secret}\n`);
      cli.err(`token ${res.token!.id} (${enumName(Role, res.token!.scope)}) expires ${time(res.token!.expireTime)?.toISOString()}; the secret above is shown only once\n`);
    });

  apiTokens
    .command("list")
    .option("--all", "everyone's tokens (admins)")
    .action(async (o: { all?: boolean }) => {
      const res = await (await cli.clients()).apiTokens.listApiTokens({ allUsers: o.all === true });
      if (cli.json()) return cli.printJson(ListApiTokensResponseSchema, res);
      const state = (t: ApiToken) => (t.revokeTime ? "revoked" : time(t.expireTime)! < new Date() ? "expired" : "active");
      cli.out(
        table(
          ["NAME", "OWNER", "SCOPE", "STATE", "LAST USED", "EXPIRES", "ID"],
          res.tokens.map((t) => [t.name, t.username, enumName(Role, t.scope), state(t), ago(time(t.lastUseTime)), time(t.expireTime)?.toISOString().slice(0, 10) ?? "", t.id]),
        ),
      );
    });

  apiTokens
    .command("revoke")
    .argument("<id>", "token ID")
    .action(async (id: string) => {
      const res = await (await cli.clients()).apiTokens.revokeApiToken({ id });
      if (cli.json()) return cli.printJson(RevokeApiTokenResponseSchema, res);
      cli.out(`token ${res.token!.name} revoked\n`);
    });
}

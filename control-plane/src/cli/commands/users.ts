import { create } from "@bufbuild/protobuf";
import { Role, type User } from "@redflag/gen/identity_pb";
import {
  CreateUserResponseSchema,
  DisableUserResponseSchema,
  ListUsersResponseSchema,
  ResetPasswordResponseSchema,
  UpdateUserResponseSchema,
} from "@redflag/gen/user_service_pb";
import { ROLES, roleToProto } from "@redflag/common/roles";
import { Argument, Option, type Command } from "commander";
import type { CliContext } from "../context.ts";
import { ago, enumName, table, time } from "../output.ts";
import { readSecret } from "../prompt.ts";

const userRow = (u: User) => [u.username, u.displayName, enumName(Role, u.role), u.totpEnabled ? "on" : "", u.disabled ? "disabled" : "active", ago(time(u.lastLoginTime)), u.id];

// redflag users: people who may use RedFlag (admins).
export function registerUsers(program: Command, cli: CliContext): void {
  const users = program.command("users").description("people who may use RedFlag (admins)");

  users
    .command("list")
    .action(async () => {
      const res = await (await cli.clients()).users.listUsers({ pageSize: 500 });
      if (cli.json()) return cli.printJson(ListUsersResponseSchema, res);
      cli.out(table(["USERNAME", "NAME", "ROLE", "TOTP", "STATE", "LAST SIGN-IN", "ID"], res.users.map(userRow)));
    });

  users
    .command("create")
    .requiredOption("--username <name>", "username")
    .addOption(new Option("--role <role>", "what they may do").choices(ROLES).makeOptionMandatory())
    .option("--display-name <name>", "shown in the console")
    .option("--password-stdin", "read the password from stdin")
    .action(async (o: { username: string; role: string; displayName?: string; passwordStdin?: boolean }) => {
      const password = await readSecret(cli.io, "password for the new user: ", o.passwordStdin);
      const res = await (await cli.clients()).users.createUser({ username: o.username, password, role: roleToProto(o.role), displayName: o.displayName ?? "" });
      if (cli.json()) return cli.printJson(CreateUserResponseSchema, res);
      cli.out(`${res.user!.username} (${o.role}) created: ${res.user!.id}\n`);
    });

  users
    .command("set-role")
    .argument("<id>", "user ID")
    .addArgument(new Argument("<role>", "new role").choices(ROLES))
    .action(async (id: string, role: string) => {
      const res = await (await cli.clients()).users.updateUser({ id, role: roleToProto(role) });
      if (cli.json()) return cli.printJson(UpdateUserResponseSchema, res);
      cli.out(`${res.user!.username} is now ${role}\n`);
    });

  for (const [name, verb] of [["disable", "disabled"], ["enable", "enabled"]] as const) {
    users
      .command(name)
      .argument("<id>", "user ID")
      .action(async (id: string) => {
        const c = await cli.clients();
        const user = name === "disable" ? (await c.users.disableUser({ id })).user! : (await c.users.enableUser({ id })).user!;
        if (cli.json()) return cli.printJson(DisableUserResponseSchema, create(DisableUserResponseSchema, { user }));
        cli.out(`${user.username} ${verb}\n`);
      });
  }

  users
    .command("reset-password")
    .argument("<id>", "user ID")
    .option("--clear-totp", "also turn their TOTP off")
    .option("--password-stdin", "read the new password from stdin")
    .action(async (id: string, o: { clearTotp?: boolean; passwordStdin?: boolean }) => {
      const newPassword = await readSecret(cli.io, "new password: ", o.passwordStdin);
      const res = await (await cli.clients()).users.resetPassword({ id, newPassword, clearTotp: o.clearTotp === true });
      if (cli.json()) return cli.printJson(ResetPasswordResponseSchema, res);
      cli.out(`password of ${res.user!.username} reset; their sessions ended\n`);
    });
}

import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { type LoginResponse, LoginResponseSchema, type SetupResponse, WhoAmIResponseSchema } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import type { Command } from "commander";
import type { CliContext } from "../context.ts";
import { enumName, time } from "../output.ts";
import { ask, readSecret } from "../prompt.ts";
import { loadSession, removeSession, saveSession } from "../session-file.ts";

// The signed-in person: setup, login, logout, whoami, password, and totp (their second factor).
export function registerSession(program: Command, cli: CliContext): void {
  async function signedIn(res: LoginResponse | SetupResponse) {
    const server = cli.server();
    const where = await saveSession({ server, token: res.sessionToken, username: res.user!.username, expires: time(res.sessionExpireTime)?.toISOString() ?? "" }, cli.env);
    if (cli.json()) return cli.printJson(LoginResponseSchema, create(LoginResponseSchema, { user: res.user, sessionExpireTime: res.sessionExpireTime }));
    cli.out(`signed in to ${server} as ${res.user!.username} (${enumName(Role, res.user!.role)}); session saved in ${where}\n`);
  }

  // Sign-in and setup need no credential.
  const anonymousAuth = () => cli.clientsWith(undefined).auth;

  program
    .command("setup")
    .description("create the first admin of a new control plane")
    .requiredOption("--username <name>", "the admin's username")
    .option("--display-name <name>", "shown in the console")
    .option("--password-stdin", "read the password from stdin")
    .action(async (o: { username: string; displayName?: string; passwordStdin?: boolean }) => {
      const password = await readSecret(cli.io, "new password: ", o.passwordStdin);
      await signedIn(await anonymousAuth().setup({ username: o.username, password, displayName: o.displayName ?? "" }));
    });

  program
    .command("login")
    .description("sign in and keep the session for later commands")
    .option("--username <name>", "your username")
    .option("--password-stdin", "read the password from stdin")
    .option("--totp <code>", "the current code from your authenticator, when TOTP is on")
    .action(async (o: { username?: string; passwordStdin?: boolean; totp?: string }) => {
      const username = o.username ?? (await ask(cli.io, "username: "));
      const password = await readSecret(cli.io, "password: ", o.passwordStdin);
      let totpCode = o.totp ?? "";
      try {
        await signedIn(await anonymousAuth().login({ username, password, totpCode }));
      } catch (err) {
        if (!(err instanceof ConnectError) || !/needs a TOTP code/.test(err.rawMessage) || !cli.io.stdin.isTTY) throw err;
        totpCode = await ask(cli.io, "TOTP code: ");
        await signedIn(await anonymousAuth().login({ username, password, totpCode }));
      }
    });

  program
    .command("logout")
    .description("end the stored session")
    .action(async () => {
      const server = cli.server();
      const session = await loadSession(server, cli.env);
      if (session) await cli.clientsWith(session.token).auth.logout({}).catch(() => undefined);
      await removeSession(cli.env);
      cli.out(session ? `signed out of ${server}\n` : "not signed in\n");
    });

  program
    .command("whoami")
    .description("who the current credential acts as")
    .action(async () => {
      const res = await (await cli.clients()).auth.whoAmI({});
      if (cli.json()) return cli.printJson(WhoAmIResponseSchema, res);
      const p = res.principal!;
      const who = p.user ? `${p.user.username} (${p.user.displayName})` : p.credentialName;
      cli.out(`${who}: ${enumName(Role, p.role)} through ${p.kind.replace("_", " ")}\n`);
    });

  program
    .command("password")
    .description("change your password (ends your other sessions)")
    .action(async () => {
      const currentPassword = await readSecret(cli.io, "current password: ", false);
      const newPassword = await readSecret(cli.io, "new password: ", false);
      await (await cli.clients()).auth.changePassword({ currentPassword, newPassword });
      cli.out("password changed; your other sessions ended\n");
    });

  const totp = program.command("totp").description("your second sign-in factor");

  totp
    .command("enroll")
    .description("start: prints the secret and the otpauth:// URI for your authenticator app")
    .option("--password-stdin", "read your password from stdin")
    .action(async (o: { passwordStdin?: boolean }) => {
      const password = await readSecret(cli.io, "password: ", o.passwordStdin);
      const res = await (await cli.clients()).auth.beginTotpEnrollment({ password });
      cli.out(`secret: ${res.secret}\nuri:    ${res.uri}\nthen: redflag totp confirm <code>\n`);
    });

  totp
    .command("confirm")
    .argument("<code>", "the current 6-digit code")
    .action(async (code: string) => {
      await (await cli.clients()).auth.confirmTotpEnrollment({ code });
      cli.out("TOTP is on: sign-ins now ask for a code\n");
    });

  totp
    .command("disable")
    .argument("<code>", "the current 6-digit code")
    .option("--password-stdin", "read your password from stdin")
    .action(async (code: string, o: { passwordStdin?: boolean }) => {
      const password = await readSecret(cli.io, "password: ", o.passwordStdin);
      await (await cli.clients()).auth.disableTotp({ password, code });
      cli.out("TOTP is off\n");
    });
}

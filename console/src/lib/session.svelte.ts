import { CommandType } from "@redflag/gen/command_pb";
import { Role, type Principal } from "@redflag/gen/identity_pb";

// Who is signed in, as WhoAmI said. The server checks every call; these only decide what the
// console offers, so nobody is shown a button that can only fail.
class Session {
  principal: Principal | undefined = $state();
  get role(): Role {
    return this.principal?.role ?? Role.UNSPECIFIED;
  }
  get name(): string {
    return this.principal?.user?.displayName || this.principal?.user?.username || this.principal?.credentialName || "";
  }
  get canOperate() {
    return this.role >= Role.OPERATOR;
  }
  get isAdmin() {
    return this.role >= Role.ADMIN;
  }
  // A retry is a new command of this person's: an agent upgrade is queued by admins only.
  mayRetry(type: CommandType): boolean {
    return this.canOperate && (type !== CommandType.UPDATE_AGENT || this.isAdmin);
  }
  // Credential changes (password, TOTP) work only from a signed-in person's own session.
  get isPerson() {
    return this.principal?.kind === "session";
  }
}

export const session = new Session();

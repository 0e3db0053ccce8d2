import { Code, ConnectError } from "@connectrpc/connect";
import { plural } from "@redflag/common/plural";
import { decoyHash, verifyPassword } from "../auth/passwords.ts";
import { createLoginThrottle } from "../auth/rate-limit.ts";
import type { Settings } from "../settings.ts";
import { inTransaction } from "../store/db.ts";
import { updateUser, userByName, type UserRow } from "../store/people.ts";
import { recordSecurityEvent } from "../store/security-events.ts";
import type { Prisma } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { openSession, spendTotpCode, totpSecret, type NewSession, type SessionClient } from "./people.ts";

// Signing in with a username and password (and a TOTP code when the account has one).

const unauthorised = () => new ConnectError("wrong username or password", Code.Unauthenticated);
// Once a code was sent, one answer for a wrong password, a wrong code or both: a right password
// is never told apart (a password oracle) while the second factor is missing or wrong.
const unauthorisedWithCode = () => new ConnectError("wrong username, password or TOTP code", Code.Unauthenticated);
const needsCode = () => new ConnectError("this account needs a TOTP code: send totp_code", Code.Unauthenticated);
// The longest a guessing address or username-at-address is made to wait between attempts.
const MAX_LOGIN_DELAY_MS = 15 * 60_000;
// Failures are forgotten after this long without another.
const FORGET_LOGIN_FAILURES_MS = 60 * 60_000;

export interface SignInAttempt {
  username: string;
  password: string;
  totpCode: string;
  client: SessionClient;
}

// What the audit entry of an attempt names: the person when known, else the name tried; the
// outcome is unset for a sign-in that succeeded.
export interface SignInRecord {
  name: string;
  user: UserRow | undefined;
  outcome?: string;
}

export type PasswordSignIn = (attempt: SignInAttempt, record: AuditHook<SignInRecord>) => Promise<{ user: UserRow; session: NewSession }>;

export function createPasswordSignIn(deps: { db: Prisma; masterKey: Buffer; settings: Pick<Settings, "loginFailuresPerAddress" | "loginFailuresPerUser"> }): PasswordSignIn {
  const { db } = deps;
  // Sign-ins are slowed down, never locked (auth/rate-limit.ts): per client address, and per
  // username at that address, so guessing from one place cannot lock the person out elsewhere.
  const throttle = (free: () => number) =>
    createLoginThrottle({ free, maxDelayMs: MAX_LOGIN_DELAY_MS, forgetMs: FORGET_LOGIN_FAILURES_MS });
  const byAddress = throttle(() => deps.settings.loginFailuresPerAddress);
  const byUserAtAddress = throttle(() => deps.settings.loginFailuresPerUser);

  return async (attempt, record) => {
    const address = attempt.client.remoteAddr || "unknown";
    const name = attempt.username.trim().toLowerCase().slice(0, 64);
    if (!name || !attempt.password) throw new ConnectError("username and password are required", Code.InvalidArgument);
    const userAtAddress = `${name}\n${address}`;
    const waitMs = Math.max(byAddress.wait(address), byUserAtAddress.wait(userAtAddress));
    if (waitMs > 0) {
      const seconds = Math.ceil(waitMs / 1000);
      throw new ConnectError(`too many failed sign-ins from this address; try again in ${plural(seconds, "second")}`, Code.ResourceExhausted, { "retry-after": String(seconds) });
    }

    const user = await userByName(db, name);
    const code = attempt.totpCode.trim();
    // The code is asked for before anything is checked, so the answer says only that this
    // account has a second factor, never whether the password was right. Nothing was guessed,
    // so nothing is counted.
    if (user?.totpEnabled && !code) throw needsCode();
    // Unknown users cost as much as known ones, so timing tells nothing.
    const passwordOk = user?.passwordHash ? await verifyPassword(attempt.password, user.passwordHash) : (await verifyPassword(attempt.password, await decoyHash()), false);
    const fail = async (reason: string, error: ConnectError) => {
      byAddress.fail(address);
      byUserAtAddress.fail(userAtAddress);
      await inTransaction(db, async (tx) => {
        await recordSecurityEvent(tx, { type: "login_failed", severity: "warning", message: `sign-in failed for "${name}": ${reason}`, remoteAddr: address, detail: { username: name, reason } });
        await record(tx, { name, user, outcome: reason });
      });
      return error;
    };
    const wrong = code ? unauthorisedWithCode : unauthorised;
    if (!user || !passwordOk) throw await fail(user?.totpEnabled ? "wrong password or TOTP code" : "wrong username or password", wrong());
    if (user.totpEnabled) {
      // Checked only with the right password, so a code is never spent by someone guessing.
      const secret = totpSecret(deps.masterKey, user);
      if (!secret || !(await spendTotpCode(db, user, secret, code))) throw await fail("wrong password or TOTP code", wrong());
    }
    if (user.disabledAt) throw await fail("account disabled", new ConnectError("this account is disabled; ask an admin", Code.PermissionDenied));
    byUserAtAddress.reset(userAtAddress);
    const now = new Date();
    return inTransaction(db, async (tx) => {
      const updated = await updateUser(tx, user.id, { lastLoginAt: now });
      await record(tx, { name, user: updated });
      return { user: updated, session: await openSession(tx, updated, attempt.client, now) };
    });
  };
}

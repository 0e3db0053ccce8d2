import { Code, ConnectError } from "@connectrpc/connect";
import type { Principal } from "../auth/context.ts";
import { atLeast, isRoleName, type RoleName } from "@redflag/common/roles";
import { inTransaction } from "../store/db.ts";
import { apiTokenById, createApiToken, listApiTokens, revokeApiToken, type ApiTokenRow, type UserRow } from "../store/people.ts";
import type { Prisma } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { person } from "./people.ts";

// Personal API tokens: they belong to a person, never do more than that person may, and only
// their owner or an admin revokes them.

// The most tokens a list returns.
const LIST_LIMIT = 1000;

// The person who is to own a new token: the caller, signed in as a person.
export async function tokenOwner(db: Prisma, caller: Principal): Promise<UserRow> {
  if (!caller.userId) throw new ConnectError("API tokens belong to people: sign in as a person to create one", Code.FailedPrecondition);
  if (caller.kind === "api_token") throw new ConnectError("an API token cannot create other tokens; sign in", Code.PermissionDenied);
  return person(db, caller.userId);
}

// The scope a new token gets: the one asked for (undefined: the owner's role; null: a value
// that names no role), never more than the owner's role.
export function tokenScope(owner: UserRow, requested: RoleName | undefined | null): RoleName {
  if (!isRoleName(owner.role)) throw new ConnectError(`${owner.username} has no valid role`, Code.FailedPrecondition);
  const scope = requested === undefined ? owner.role : requested;
  if (!scope) throw new ConnectError("scope must be viewer, operator or admin", Code.InvalidArgument);
  if (!atLeast(owner.role, scope)) throw new ConnectError(`a token cannot do more than its owner: ${owner.username} is ${owner.role}`, Code.PermissionDenied);
  return scope;
}

export async function issueApiToken(
  db: Prisma,
  input: { owner: UserRow; name: string; scope: RoleName; expiresAt: Date },
  record: AuditHook<ApiTokenRow>,
): Promise<{ row: ApiTokenRow; secret: string }> {
  return inTransaction(db, async (tx) => {
    const created = await createApiToken(tx, { userId: input.owner.id, name: input.name, scope: input.scope, expiresAt: input.expiresAt });
    await record(tx, created.row);
    return created;
  });
}

// The caller's own tokens, or everyone's (admins only).
export async function visibleApiTokens(db: Prisma, caller: Principal, allUsers: boolean): Promise<ApiTokenRow[]> {
  if (allUsers && caller.role !== "admin") throw new ConnectError("listing everyone's tokens needs the admin role", Code.PermissionDenied);
  if (!allUsers && !caller.userId) return [];
  return listApiTokens(db, allUsers ? undefined : caller.userId, LIST_LIMIT);
}

// Revokes a personal token (again: a revoked one keeps its time); the owner or an admin may.
export async function revokePersonalToken(
  db: Prisma,
  caller: Principal,
  id: string,
  now: Date,
  record: AuditHook<{ before: ApiTokenRow; after: ApiTokenRow }>,
): Promise<ApiTokenRow> {
  return inTransaction(db, async (tx) => {
    const before = await apiTokenById(tx, id);
    if (!before || before.kind !== "personal") throw new ConnectError(`API token ${id} does not exist`, Code.NotFound);
    if (before.userId !== caller.userId && caller.role !== "admin") throw new ConnectError("only the owner or an admin can revoke this token", Code.PermissionDenied);
    const after = await revokeApiToken(tx, id, before.revokedAt ?? now);
    await record(tx, { before, after });
    return after;
  });
}

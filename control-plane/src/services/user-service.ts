import { toJson } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Role, UserSchema } from "@redflag/gen/identity_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { kPrincipal } from "../auth/context.ts";
import type { PrincipalResolver } from "../auth/principals.ts";
import { roleFromProto } from "@redflag/common/roles";
import { createPerson, disablePerson, enablePerson, newPassword, person, resetPassword, updatePerson, username } from "../domain/people.ts";
import { listUsers, type UserRow } from "../store/people.ts";
import type { Prisma, Tx } from "../store/types.ts";
import { audit } from "./audit.ts";
import { userToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";

export function createUserService(db: Prisma, principals: PrincipalResolver): ServiceImpl<typeof UserService> {
  const role = (value: Role, field = "role") => {
    const name = roleFromProto(value);
    if (!name) throw invalid(`${field} must be viewer, operator or admin`);
    return name;
  };
  const json = (user: UserRow) => toJson(UserSchema, userToProto(user));
  // The audit entry of a change to a person: the person before and after.
  const changed = (ctx: HandlerContext, before: UserRow, extra: object = {}) => (tx: Tx, user: UserRow) =>
    audit(tx, ctx, { target: `user:${user.id}`, before: json(before), after: { ...(json(user) as object), ...extra } });

  return {
    async listUsers(req) {
      const after = pageToken(req.pageToken);
      const { rows, next } = await listUsers(db, pageSize(req.pageSize), after);
      return { users: rows.map(userToProto), nextPageToken: nextPageToken(next) };
    },

    async createUser(req, ctx) {
      const name = username(req.username);
      const password = newPassword(req.password, name);
      const displayName = text("display_name", req.displayName.trim(), { max: 100 }) || name;
      const user = await createPerson(db, { username: name, displayName, role: role(req.role), password }, (tx, user) =>
        audit(tx, ctx, { target: `user:${user.id}`, after: json(user) }),
      );
      return { user: userToProto(user) };
    },

    async updateUser(req, ctx) {
      const before = await person(db, uuid("id", req.id));
      const nextRole = req.role === Role.UNSPECIFIED ? before.role : role(req.role);
      const displayName = req.displayName ? text("display_name", req.displayName.trim(), { max: 100 }) : before.displayName;
      const user = await updatePerson(db, before, { role: nextRole, displayName }, changed(ctx, before));
      principals.forget();
      return { user: userToProto(user) };
    },

    async disableUser(req, ctx) {
      const before = await person(db, uuid("id", req.id));
      const user = await disablePerson(db, before, ctx.values.get(kPrincipal)?.userId, new Date(), changed(ctx, before));
      principals.forget();
      return { user: userToProto(user) };
    },

    async enableUser(req, ctx) {
      const before = await person(db, uuid("id", req.id));
      const user = await enablePerson(db, before, changed(ctx, before));
      principals.forget();
      return { user: userToProto(user) };
    },

    async resetPassword(req, ctx) {
      const before = await person(db, uuid("id", req.id));
      const user = await resetPassword(db, before, { password: req.newPassword, clearTotp: req.clearTotp, now: new Date() }, changed(ctx, before, { passwordReset: true }));
      principals.forget();
      return { user: userToProto(user) };
    },
  };
}

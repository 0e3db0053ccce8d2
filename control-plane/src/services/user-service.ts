import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Role, UserSchema } from "@redflag/gen/identity_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { kPrincipal } from "../auth/context.ts";
import { hashPassword } from "../auth/passwords.ts";
import type { PrincipalResolver } from "../auth/principals.ts";
import { roleFromProto } from "../auth/roles.ts";
import { newId } from "../ids.ts";
import { activeAdmins, revokeSessions, userById } from "../store/people.ts";
import type { Prisma } from "../store/types.ts";
import { audit } from "./audit.ts";
import { newPassword, username } from "./auth-service.ts";
import { userToProto } from "./convert.ts";
import { invalid, nextPageToken, pageSize, pageToken, text, uuid } from "./validate.ts";

export function createUserService(db: Prisma, principals: PrincipalResolver): ServiceImpl<typeof UserService> {
  const role = (value: Role, field = "role") => {
    const name = roleFromProto(value);
    if (!name) throw invalid(`${field} must be viewer, operator or admin`);
    return name;
  };
  // The last enabled admin can be neither demoted nor disabled: nobody could manage people.
  const keepAnAdmin = async (user: { role: string; disabledAt: Date | null }, what: string) => {
    if (user.role === "admin" && !user.disabledAt && (await activeAdmins(db)) <= 1) {
      throw new ConnectError(`cannot ${what} the last admin; make someone else admin first`, Code.FailedPrecondition);
    }
  };

  return {
    async listUsers(req) {
      const after = pageToken(req.pageToken);
      const size = pageSize(req.pageSize);
      const rows = await db.user.findMany({ orderBy: [{ username: "asc" }], take: size + 1, ...(after ? { cursor: { id: after }, skip: 1 } : {}) });
      return { users: rows.slice(0, size).map(userToProto), nextPageToken: nextPageToken(rows.length > size ? rows[size - 1]!.id : undefined) };
    },

    async createUser(req, ctx) {
      const name = username(req.username);
      const password = newPassword(req.password, name);
      const displayName = text("display_name", req.displayName.trim(), { max: 100 }) || name;
      const data = { id: newId(), username: name, displayName, role: role(req.role), passwordHash: await hashPassword(password), passwordChangedAt: new Date() };
      const user = await db.user.create({ data }).catch((err: { code?: string }) => {
        if (err.code === "P2002") throw new ConnectError(`the username "${name}" is taken`, Code.AlreadyExists);
        throw err;
      });
      await audit(db, ctx, { target: `user:${user.id}`, after: toJson(UserSchema, userToProto(user)) });
      return { user: userToProto(user) };
    },

    async updateUser(req, ctx) {
      const before = await userById(db, uuid("id", req.id));
      const nextRole = req.role === Role.UNSPECIFIED ? before.role : role(req.role);
      const displayName = req.displayName ? text("display_name", req.displayName.trim(), { max: 100 }) : before.displayName;
      if (nextRole !== "admin") await keepAnAdmin(before, "demote");
      const user = await db.user.update({ where: { id: before.id }, data: { role: nextRole, displayName } });
      principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, before: toJson(UserSchema, userToProto(before)), after: toJson(UserSchema, userToProto(user)) });
      return { user: userToProto(user) };
    },

    async disableUser(req, ctx) {
      const before = await userById(db, uuid("id", req.id));
      if (before.id === ctx.values.get(kPrincipal)?.userId) throw new ConnectError("you cannot disable yourself", Code.FailedPrecondition);
      await keepAnAdmin(before, "disable");
      const now = new Date();
      const user = await db.user.update({ where: { id: before.id }, data: { disabledAt: before.disabledAt ?? now } });
      // Sessions end now; API tokens stop working while the owner is disabled.
      await revokeSessions(db, user.id, now);
      principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, before: toJson(UserSchema, userToProto(before)), after: toJson(UserSchema, userToProto(user)) });
      return { user: userToProto(user) };
    },

    async enableUser(req, ctx) {
      const before = await userById(db, uuid("id", req.id));
      const user = await db.user.update({ where: { id: before.id }, data: { disabledAt: null } });
      principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, before: toJson(UserSchema, userToProto(before)), after: toJson(UserSchema, userToProto(user)) });
      return { user: userToProto(user) };
    },

    async resetPassword(req, ctx) {
      const before = await userById(db, uuid("id", req.id));
      const password = newPassword(req.newPassword, before.username);
      const now = new Date();
      const user = await db.user.update({
        where: { id: before.id },
        data: { passwordHash: await hashPassword(password), passwordChangedAt: now, ...(req.clearTotp ? { totpEnabled: false, totpSecretEnc: null, totpLastStep: null } : {}) },
      });
      await revokeSessions(db, user.id, now);
      principals.forget();
      await audit(db, ctx, { target: `user:${user.id}`, before: toJson(UserSchema, userToProto(before)), after: { ...(toJson(UserSchema, userToProto(user)) as object), passwordReset: true } });
      return { user: userToProto(user) };
    },
  };
}

import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { ApiTokenSchema, ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { kPrincipal } from "../auth/context.ts";
import type { PrincipalResolver } from "../auth/principals.ts";
import { atLeast, isRoleName, roleFromProto } from "../auth/roles.ts";
import { createApiToken, userById } from "../store/people.ts";
import type { Prisma } from "../store/types.ts";
import { audit } from "./audit.ts";
import { apiTokenToProto } from "./convert.ts";
import { invalid, text, uuid } from "./validate.ts";

const DEFAULT_TTL_SECONDS = 90 * 86_400;
const MIN_TTL_SECONDS = 3600;
const MAX_TTL_SECONDS = 2 * 365 * 86_400;

export function createApiTokenService(db: Prisma, principals: PrincipalResolver): ServiceImpl<typeof ApiTokenService> {
  return {
    async createApiToken(req, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      if (!principal.userId) throw new ConnectError("API tokens belong to people: sign in as a person to create one", Code.FailedPrecondition);
      if (principal.kind === "api_token") throw new ConnectError("an API token cannot create other tokens; sign in", Code.PermissionDenied);
      const user = await userById(db, principal.userId);
      const name = text("name", req.name.trim(), { max: 100, required: true });
      if (!isRoleName(user.role)) throw new ConnectError(`${user.username} has no valid role`, Code.FailedPrecondition);
      const scope = req.scope === Role.UNSPECIFIED ? user.role : roleFromProto(req.scope);
      if (!scope) throw invalid("scope must be viewer, operator or admin");
      if (!atLeast(user.role, scope)) throw new ConnectError(`a token cannot do more than its owner: ${user.username} is ${user.role}`, Code.PermissionDenied);
      let ttl = DEFAULT_TTL_SECONDS;
      if (req.ttl) {
        ttl = Number(req.ttl.seconds) + req.ttl.nanos / 1e9;
        if (!(ttl >= MIN_TTL_SECONDS && ttl <= MAX_TTL_SECONDS)) throw invalid("ttl must be from 1 hour to 2 years");
      }
      const { row, secret } = await createApiToken(db, { userId: user.id, name, scope, expiresAt: new Date(Date.now() + ttl * 1000) });
      await audit(db, ctx, { target: `api_token:${row.id}`, after: toJson(ApiTokenSchema, apiTokenToProto(row)) });
      return { token: apiTokenToProto(row), secret };
    },

    async listApiTokens(req, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      if (req.allUsers && principal.role !== "admin") throw new ConnectError("listing everyone's tokens needs the admin role", Code.PermissionDenied);
      if (!req.allUsers && !principal.userId) return { tokens: [] };
      const rows = await db.apiKey.findMany({
        where: { kind: "personal", ...(req.allUsers ? {} : { userId: principal.userId! }) },
        include: { user: true },
        orderBy: { createdAt: "desc" },
        take: 1000,
      });
      return { tokens: rows.map(apiTokenToProto) };
    },

    async revokeApiToken(req, ctx) {
      const principal = ctx.values.get(kPrincipal)!;
      const id = uuid("id", req.id);
      const before = await db.apiKey.findUnique({ where: { id }, include: { user: true } });
      if (!before || before.kind !== "personal") throw new ConnectError(`API token ${id} does not exist`, Code.NotFound);
      if (before.userId !== principal.userId && principal.role !== "admin") {
        throw new ConnectError("only the owner or an admin can revoke this token", Code.PermissionDenied);
      }
      const row = await db.apiKey.update({ where: { id }, data: { revokedAt: before.revokedAt ?? new Date() }, include: { user: true } });
      principals.forget();
      await audit(db, ctx, { target: `api_token:${id}`, before: toJson(ApiTokenSchema, apiTokenToProto(before)), after: toJson(ApiTokenSchema, apiTokenToProto(row)) });
      return { token: apiTokenToProto(row) };
    },
  };
}

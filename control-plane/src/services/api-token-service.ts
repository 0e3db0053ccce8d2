import { toJson } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ApiTokenSchema, ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { kPrincipal } from "../auth/context.ts";
import type { PrincipalResolver } from "../auth/principals.ts";
import { roleFromProto } from "@redflag/common/roles";
import { issueApiToken, revokePersonalToken, tokenOwner, tokenScope, visibleApiTokens } from "../domain/api-tokens.ts";
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
      const owner = await tokenOwner(db, ctx.values.get(kPrincipal)!);
      const name = text("name", req.name.trim(), { max: 100, required: true });
      const scope = tokenScope(owner, req.scope === Role.UNSPECIFIED ? undefined : (roleFromProto(req.scope) ?? null));
      let ttl = DEFAULT_TTL_SECONDS;
      if (req.ttl) {
        ttl = Number(req.ttl.seconds) + req.ttl.nanos / 1e9;
        if (!(ttl >= MIN_TTL_SECONDS && ttl <= MAX_TTL_SECONDS)) throw invalid("ttl must be from 1 hour to 2 years");
      }
      const { row, secret } = await issueApiToken(db, { owner, name, scope, expiresAt: new Date(Date.now() + ttl * 1000) }, (tx, row) =>
        audit(tx, ctx, { target: `api_token:${row.id}`, after: toJson(ApiTokenSchema, apiTokenToProto(row)) }),
      );
      return { token: apiTokenToProto(row), secret };
    },

    async listApiTokens(req, ctx) {
      const rows = await visibleApiTokens(db, ctx.values.get(kPrincipal)!, req.allUsers);
      return { tokens: rows.map(apiTokenToProto) };
    },

    async revokeApiToken(req, ctx) {
      const id = uuid("id", req.id);
      const row = await revokePersonalToken(db, ctx.values.get(kPrincipal)!, id, new Date(), (tx, { before, after }) =>
        audit(tx, ctx, { target: `api_token:${id}`, before: toJson(ApiTokenSchema, apiTokenToProto(before)), after: toJson(ApiTokenSchema, apiTokenToProto(after)) }),
      );
      principals.forget();
      return { token: apiTokenToProto(row) };
    },
  };
}

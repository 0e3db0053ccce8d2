import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { SecurityEventSchema, SecurityService, SigningKeyInfoSchema } from "@redflag/gen/security_service_pb";
import type { Config } from "../config.ts";
import { fingerprint } from "../signing/keys.ts";
import type { Prisma } from "../store/types.ts";
import { invalid, pageSize, text } from "./validate.ts";

const EVENT_TYPES = ["machine_id_mismatch", "refresh_token_reuse", "renew_bad_signature", "result_for_foreign_command", "registration_token_invalid", "login_failed", "machine_id_rebound"];

export function createSecurityService(db: Prisma, config: Config): ServiceImpl<typeof SecurityService> {
  return {
    async getSecurityOverview() {
      const now = Date.now();
      const day = new Date(now - 86_400_000);
      const month = new Date(now - 30 * 86_400_000);
      const [keys, recent, older, adminKeys, withoutTotp, admins] = await Promise.all([
        db.signingKey.findMany({ orderBy: { createdAt: "desc" } }),
        db.securityEvent.groupBy({ by: ["type"], where: { createdAt: { gte: day } }, _count: { _all: true } }),
        db.securityEvent.groupBy({ by: ["type"], where: { createdAt: { gte: month } }, _count: { _all: true } }),
        db.apiKey.count({ where: { kind: "bootstrap", revokedAt: null } }),
        db.user.count({ where: { totpEnabled: false, disabledAt: null, authSource: "password" } }),
        db.user.count({ where: { role: "admin", disabledAt: null } }),
      ]);
      const count = (rows: typeof recent, type: string) => rows.find((r) => r.type === type)?._count._all ?? 0;
      return {
        signingKeys: keys.map((k) =>
          create(SigningKeyInfoSchema, {
            keyId: k.id,
            fingerprint: fingerprint(k.publicKey),
            algorithm: k.algorithm === "ed25519" ? "Ed25519" : k.algorithm,
            state: k.active ? "active" : !k.retiredAt || k.retiredAt.getTime() > now ? "trusted" : "retired",
            createTime: timestampFromDate(k.createdAt),
            retireTime: k.retiredAt ? timestampFromDate(k.retiredAt) : undefined,
          }),
        ),
        commandExpiry: durationFromMs(config.commandExpirySeconds * 1000),
        accessTokenTtl: durationFromMs(config.accessTokenTtlSeconds * 1000),
        refreshTokenTtl: durationFromMs(config.refreshTokenSlidingSeconds * 1000),
        refreshTokenMaxAge: durationFromMs(config.refreshTokenAbsoluteSeconds * 1000),
        eventCounts: EVENT_TYPES.map((type) => ({ type, last24h: count(recent, type), last30d: count(older, type) })),
        adminKeyActive: adminKeys > 0,
        usersWithoutTotp: withoutTotp,
        admins,
      };
    },

    async listSecurityEvents(req) {
      let before: bigint | undefined;
      if (req.pageToken) {
        const decoded = Buffer.from(req.pageToken, "base64url").toString("utf8");
        if (!/^\d{1,19}$/.test(decoded)) throw invalid("page_token is not valid; pass the next_page_token of a previous page");
        before = BigInt(decoded);
      }
      const type = text("type", req.type, { max: 64 });
      if (type && !EVENT_TYPES.includes(type)) throw invalid(`type "${type}" is not an event type (${EVENT_TYPES.join(", ")})`);
      if (req.severity && !["info", "warning", "critical"].includes(req.severity)) throw invalid("severity must be info, warning or critical");
      const size = pageSize(req.pageSize);
      const rows = await db.securityEvent.findMany({
        where: { ...(type ? { type } : {}), ...(req.severity ? { severity: req.severity } : {}), ...(before !== undefined ? { id: { lt: before } } : {}) },
        orderBy: { id: "desc" },
        take: size + 1,
      });
      const page = rows.slice(0, size);
      return {
        events: page.map((e) =>
          create(SecurityEventSchema, {
            id: e.id.toString(),
            time: timestampFromDate(e.createdAt),
            type: e.type,
            severity: e.severity,
            message: e.message,
            agentId: e.agentId ?? "",
            machineId: e.machineId ?? "",
            remoteAddr: e.remoteAddr ?? "",
            detailJson: JSON.stringify(e.detail ?? {}),
          }),
        ),
        nextPageToken: rows.length > size ? Buffer.from(page.at(-1)!.id.toString()).toString("base64url") : "",
      };
    },
  };
}

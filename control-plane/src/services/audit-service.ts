import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { listAudit } from "../store/audit.ts";
import type { Prisma } from "../store/types.ts";
import { auditToProto } from "./convert.ts";
import { invalid, pageSize, text } from "./validate.ts";

export function createAuditService(db: Prisma): ServiceImpl<typeof AuditService> {
  return {
    async listAuditEntries(req) {
      let before: bigint | undefined;
      if (req.pageToken) {
        const decoded = Buffer.from(req.pageToken, "base64url").toString("utf8");
        if (!/^\d{1,19}$/.test(decoded)) throw invalid("page_token is not valid; pass the next_page_token of a previous page");
        before = BigInt(decoded);
      }
      const since = req.since ? timestampDate(req.since) : undefined;
      const until = req.until ? timestampDate(req.until) : undefined;
      if (since && until && since >= until) throw invalid("since must be before until");
      const { rows, next } = await listAudit(
        db,
        {
          actorName: text("actor_name", req.actorName, { max: 100 }) || undefined,
          action: text("action", req.action, { max: 200 }) || undefined,
          target: text("target", req.target, { max: 200 }) || undefined,
          since,
          until,
        },
        pageSize(req.pageSize),
        before,
      );
      return { entries: rows.map(auditToProto), nextPageToken: next === undefined ? "" : Buffer.from(next.toString()).toString("base64url") };
    },
  };
}

import type { ServiceImpl } from "@connectrpc/connect";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { listAudit } from "../store/audit.ts";
import type { Prisma } from "../store/types.ts";
import { auditToProto } from "./convert.ts";
import { idPageToken, invalid, nextIdPageToken, pageSize, text, time } from "./validate.ts";

export function createAuditService(db: Prisma): ServiceImpl<typeof AuditService> {
  return {
    async listAuditEntries(req) {
      const before = idPageToken(req.pageToken);
      const since = req.since ? time("since", req.since) : undefined;
      const until = req.until ? time("until", req.until) : undefined;
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
      return { entries: rows.map(auditToProto), nextPageToken: nextIdPageToken(next) };
    },
  };
}

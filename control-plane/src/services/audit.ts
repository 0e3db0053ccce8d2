import type { HandlerContext } from "@connectrpc/connect";
import { kPrincipal, kRemoteAddr } from "../auth/context.ts";
import { recordAudit } from "../store/audit.ts";
import type { Prisma } from "../store/types.ts";

// Records one change made by the caller of this RPC: who (from the verified principal, or the
// name given for an anonymous caller such as Setup or a failed login), what (the RPC), on
// what, from where, and the state before and after. Never pass secrets in before/after.
export async function audit(
  db: Prisma,
  ctx: HandlerContext,
  entry: { target: string; before?: unknown; after?: unknown; outcome?: string; anonymousName?: string },
): Promise<void> {
  const principal = ctx.values.get(kPrincipal);
  await recordAudit(db, {
    actorKind: principal?.kind ?? "anonymous",
    actorId: principal?.userId ?? principal?.credentialId ?? "",
    actorName: principal?.name ?? entry.anonymousName ?? "",
    action: `${ctx.service.typeName}/${ctx.method.name}`,
    target: entry.target,
    remoteAddr: ctx.values.get(kRemoteAddr),
    before: entry.before,
    after: entry.after,
    outcome: entry.outcome,
  });
}

// The caller's name for "created by" columns.
export const callerName = (ctx: HandlerContext) => ctx.values.get(kPrincipal)?.name ?? "anonymous";

import type { HandlerContext } from "@connectrpc/connect";
import { kPrincipal, kRemoteAddr, type Principal } from "../auth/context.ts";
import type { CommandCreator } from "../store/types.ts";
import { recordAudit } from "../store/audit.ts";
import type { Prisma, Tx } from "../store/types.ts";

// Records one change made by the caller of this RPC: who (from the verified principal, or the
// name given for an anonymous caller such as Setup or a failed login), what (the RPC), on
// what, from where, and the state before and after. Never pass secrets in before/after. db may
// be a transaction's client, so the entry commits with the change it records.
export async function audit(
  db: Prisma | Tx,
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

const CREATOR_KINDS: Record<Principal["kind"], CommandCreator> = { session: "person", api_token: "api_token", admin_key: "admin_key" };

// Who queues a command, from the verified principal: its name for display and its kind, which
// tells a person from a key. Without a principal it is the control plane itself (the policy
// lets no anonymous caller queue commands).
export function commandCreator(ctx: HandlerContext): { createdBy: string; createdByKind: CommandCreator } {
  const principal = ctx.values.get(kPrincipal);
  if (!principal) return { createdBy: "system", createdByKind: "system" };
  return { createdBy: principal.name, createdByKind: CREATOR_KINDS[principal.kind] };
}

import type { HandlerContext } from "@connectrpc/connect";
import { audit } from "../services/audit.ts";
import type { Prisma, Tx } from "../store/types.ts";

// services/audit.ts's audit() inside a transaction: the entry commits, or rolls back, with the
// change it records. audit() only inserts the entry, which the transaction's client does too.
export const auditIn = (tx: Tx, ctx: HandlerContext, entry: Parameters<typeof audit>[2]): Promise<void> => audit(tx as Prisma, ctx, entry);

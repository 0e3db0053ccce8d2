import type { Tx } from "../store/types.ts";

// Records the audit entry of a change inside the change's own transaction, so the change and
// its record commit together or not at all. The adapter supplies it: it knows the caller and
// the wire form the entry keeps (services/audit.ts).
export type AuditHook<T> = (tx: Tx, done: T) => Promise<void>;

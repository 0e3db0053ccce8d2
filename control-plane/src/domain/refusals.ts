import { Code, ConnectError } from "@connectrpc/connect";
import { StoreRefusal, type RefusalKind } from "../store/refusal.ts";

const CODES: Record<RefusalKind, Code> = {
  invalid: Code.InvalidArgument,
  retry: Code.Unavailable,
  unauthenticated: Code.Unauthenticated,
  forbidden: Code.PermissionDenied,
  exhausted: Code.ResourceExhausted,
};

// A store refusal as the RPC error with its message; anything else as it is. For .catch().
export function refusalAsRpcError(err: unknown): never {
  if (err instanceof StoreRefusal) throw new ConnectError(err.message, CODES[err.kind]);
  throw err;
}

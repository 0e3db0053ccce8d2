// A request the store turns down: an expected outcome (a bad registration token, a scan that
// is too big, a lease someone else holds), not a fault. Thrown where a transaction must stop
// there; domain/refusals.ts turns it into the RPC error the caller sees.
export type RefusalKind =
  // The request itself is wrong (InvalidArgument).
  | "invalid"
  // Nothing was kept; sending it again later can succeed (Unavailable).
  | "retry"
  // The credential is not valid (Unauthenticated).
  | "unauthenticated"
  // The caller may not do this (PermissionDenied).
  | "forbidden"
  // A limit is used up (ResourceExhausted).
  | "exhausted";

export class StoreRefusal extends Error {
  readonly kind: RefusalKind;
  constructor(kind: RefusalKind, message: string) {
    super(message);
    this.kind = kind;
    this.name = "StoreRefusal";
  }
}

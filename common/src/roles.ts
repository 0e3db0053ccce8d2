import { Role } from "@redflag/gen/identity_pb";

// Stored role names, lowest first: each role can do what the ones before it can.
export const ROLES = ["viewer", "operator", "admin"] as const;
export type RoleName = (typeof ROLES)[number];

export const rank = (role: RoleName) => ROLES.indexOf(role);
export const atLeast = (role: RoleName, needed: RoleName) => rank(role) >= rank(needed);
export const lower = (a: RoleName, b: RoleName): RoleName => (rank(a) <= rank(b) ? a : b);

export function isRoleName(text: string): text is RoleName {
  return (ROLES as readonly string[]).includes(text);
}

const TO_PROTO: Record<RoleName, Role> = { viewer: Role.VIEWER, operator: Role.OPERATOR, admin: Role.ADMIN };
export const roleToProto = (role: string): Role => (isRoleName(role) ? TO_PROTO[role] : Role.UNSPECIFIED);
export function roleFromProto(role: Role): RoleName | undefined {
  return (Object.entries(TO_PROTO) as [RoleName, Role][]).find(([, v]) => v === role)?.[0];
}

import { ROLES, type RoleName } from "@redflag/common/roles";
import type { RoleMap } from "../config.ts";

// The highest role the claim grants, or undefined when it grants none.
export function roleFor(claims: Record<string, unknown>, cfg: { roleClaim: string; roleMap: RoleMap }): RoleName | undefined {
  const raw = claims[cfg.roleClaim];
  const values = Array.isArray(raw) ? raw.map(String) : typeof raw === "string" ? raw.split(/[ ,]+/) : [];
  let best: RoleName | undefined;
  for (const { role, value } of cfg.roleMap) {
    if (value === "*" || values.includes(value)) {
      if (!best || ROLES.indexOf(role) > ROLES.indexOf(best)) best = role;
    }
  }
  return best;
}

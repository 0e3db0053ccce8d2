import { ROLES, type RoleName } from "./roles.ts";

// Which value of a single sign-on claim grants which role
// ("admin=redflag-admins,operator=redflag-ops,viewer=*"): parsed once from the environment by
// config.ts, applied at every sign-in by oidc.ts.
export type RoleMap = { role: RoleName; value: string }[];

export function parseRoleMap(text: string): RoleMap | string {
  const out: RoleMap = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [role, value] = part.split("=").map((s) => s?.trim());
    if (!role || !value || !(ROLES as readonly string[]).includes(role)) return `"${part}" must be role=value with role viewer, operator or admin`;
    out.push({ role: role as RoleName, value });
  }
  return out.length > 0 ? out : "the role map is empty";
}

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

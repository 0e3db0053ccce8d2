import { Prisma as Sql } from "../generated/prisma/client.ts";
import { newId } from "../ids.ts";
import { isUniqueViolation } from "./db.ts";
import type { Prisma, Tx } from "./types.ts";

// Auto-approval rules (domain/policies.ts has the rules about them) and their evaluation, which
// the database does over whole sets: a rule is never checked update by update in this process.
//
// Name patterns are globs (common/glob.ts: "*" is any run of characters, everything else itself)
// matched by the database as LIKE patterns: "*" becomes "%", and "%", "_" and "\" are escaped.
// PostgreSQL's LIKE matches the way common/glob.ts does: at a "%" it tries each later place for
// the literal run that follows and, once the text runs out, gives up on every earlier "%" too
// (like_match.c's LIKE_ABORT), so nothing is retried and the work stays within text length ×
// pattern length. Patterns are bounded where they are accepted (at most 255 characters, at most
// MAX_POLICY_PATTERNS per list); store/policies.test on both databases checks the two matchers
// agree and that a pathological pattern returns at once.

export interface PolicyDefinition {
  name: string;
  enabled: boolean;
  severities: string[];
  securityOnly: boolean;
  sources: string[];
  namePatterns: string[];
  groups: string[];
  tags: string[];
  exclusions: string[];
  delaySeconds: number;
  position: number;
}

export interface PolicyRow extends PolicyDefinition {
  id: string;
  createdBy: string;
  createdAt: Date;
  updatedBy: string;
  updatedAt: Date;
}

// The glob in `pattern` (an SQL expression) as a LIKE pattern with "\" as its escape character.
const likeOf = (pattern: Sql.Sql) => Sql.sql`replace(replace(replace(replace(${pattern}, '\\', '\\\\'), '%', '\\%'), '_', '\\_'), '*', '%')`;
const nameMatchesAny = (patterns: Sql.Sql) =>
  Sql.sql`EXISTS (SELECT 1 FROM unnest(${patterns}) AS g(p) WHERE u.name LIKE ${likeOf(Sql.raw("g.p"))} ESCAPE '\\')`;
const unset = (list: Sql.Sql) => Sql.sql`coalesce(cardinality(${list}), 0) = 0`;

// A rule's fields as SQL expressions: the columns of a saved rule (alias p), or parameters.
interface RuleSql {
  severities: Sql.Sql;
  securityOnly: Sql.Sql;
  sources: Sql.Sql;
  namePatterns: Sql.Sql;
  groups: Sql.Sql;
  tags: Sql.Sql;
  exclusions: Sql.Sql;
  delaySeconds: Sql.Sql;
}

const SAVED: RuleSql = {
  severities: Sql.raw("p.severities"),
  securityOnly: Sql.raw("p.security_only"),
  sources: Sql.raw("p.sources"),
  namePatterns: Sql.raw("p.name_patterns"),
  groups: Sql.raw("p.groups"),
  tags: Sql.raw("p.tags"),
  exclusions: Sql.raw("p.exclusions"),
  delaySeconds: Sql.raw("p.delay_seconds"),
};

const texts = (list: string[]) => Sql.sql`${list}::text[]`;
function given(d: PolicyDefinition): RuleSql {
  return {
    severities: texts(d.severities),
    securityOnly: Sql.sql`${d.securityOnly}::boolean`,
    sources: texts(d.sources),
    namePatterns: texts(d.namePatterns),
    groups: texts(d.groups),
    tags: texts(d.tags),
    exclusions: texts(d.exclusions),
    delaySeconds: Sql.sql`${d.delaySeconds}::int`,
  };
}

// A pending update (alias u, its agent a) that the rule chooses, whatever its delay and holds.
function chooses(r: RuleSql): Sql.Sql {
  return Sql.sql`a.decommissioned_at IS NULL AND u.status = 'pending'
    AND (${unset(r.severities)} OR u.severity = ANY (${r.severities}))
    AND (NOT ${r.securityOnly} OR u.security)
    AND (${unset(r.sources)} OR u.source = ANY (${r.sources}))
    AND (${unset(r.groups)} OR a."group" = ANY (${r.groups}))
    AND (${unset(r.tags)} OR a.tags && ${r.tags})
    AND (${unset(r.namePatterns)} OR ${nameMatchesAny(r.namePatterns)})
    AND NOT ${nameMatchesAny(r.exclusions)}`;
}

// The rule's delay has passed for the update at `now`: to the second, from when its current
// version was first seen.
const due = (r: RuleSql, now: Date) => Sql.sql`u.version_seen_at + ${r.delaySeconds} * interval '1 second' <= ${now}::timestamptz`;

// A hold keeps the update (the same rule as domain/holds.ts heldBy: fleet-wide or the agent's
// own, its source or every source, its name pattern).
const held = Sql.sql`EXISTS (SELECT 1 FROM holds h
  WHERE (h.agent_id IS NULL OR h.agent_id = u.agent_id) AND (h.source IN ('', '*') OR h.source = u.source)
    AND u.name LIKE ${likeOf(Sql.raw("h.name"))} ESCAPE '\\')`;

// Whether `name` matches the glob, as the database matches it (for tests of the translation).
export async function databaseGlobMatches(db: Prisma, name: string, pattern: string): Promise<boolean> {
  const [row] = await db.$queryRaw<{ m: boolean }[]>`SELECT ${name}::text LIKE ${likeOf(Sql.sql`${pattern}::text`)} ESCAPE '\\' AS m`;
  return row!.m;
}

export function listPolicies(db: Prisma): Promise<PolicyRow[]> {
  return db.policy.findMany({ orderBy: [{ position: "asc" }, { createdAt: "asc" }, { id: "asc" }] });
}

export function getPolicy(db: Prisma | Tx, id: string): Promise<PolicyRow | null> {
  return db.policy.findUnique({ where: { id } });
}

export const countPolicies = (db: Prisma | Tx) => db.policy.count();

// Adds a rule; `taken` when another rule has its name.
export async function insertPolicy(tx: Tx, d: PolicyDefinition, by: string, now: Date): Promise<PolicyRow | "taken"> {
  try {
    return await tx.policy.create({ data: { id: newId(), ...d, createdBy: by, createdAt: now, updatedBy: by, updatedAt: now } });
  } catch (err) {
    if (isUniqueViolation(err)) return "taken";
    throw err;
  }
}

// Replaces a rule's definition; null when it does not exist, `taken` when another has the name.
export async function replacePolicy(tx: Tx, id: string, d: PolicyDefinition, by: string, now: Date): Promise<PolicyRow | "taken" | null> {
  try {
    const { count } = await tx.policy.updateMany({ where: { id }, data: { ...d, updatedBy: by, updatedAt: now } });
    return count === 0 ? null : await getPolicy(tx, id);
  } catch (err) {
    if (isUniqueViolation(err)) return "taken";
    throw err;
  }
}

export async function deletePolicy(tx: Tx, id: string): Promise<void> {
  await tx.policy.deleteMany({ where: { id } });
}

export interface PolicyMatchRow {
  agentId: string;
  hostname: string;
  source: string;
  name: string;
  architecture: string;
  availableVersion: string;
  severity: string;
  security: boolean;
  versionSeenAt: Date;
}

// What one rule would approve at `now` (counted by the database), what it matches but waits
// for its delay, and what a hold keeps; with the first `limit` approvable updates by hostname.
export async function previewPolicy(db: Prisma, d: PolicyDefinition, now: Date, limit: number) {
  const r = given(d);
  const [counts] = await db.$queryRaw<{ approvable: bigint; agents: bigint; waiting: bigint; held: bigint }[]>`
    SELECT count(*) FILTER (WHERE ready AND NOT held) AS approvable,
           count(DISTINCT agent_id) FILTER (WHERE ready AND NOT held) AS agents,
           count(*) FILTER (WHERE NOT ready AND NOT held) AS waiting,
           count(*) FILTER (WHERE held) AS held
      FROM (SELECT u.agent_id, ${due(r, now)} AS ready, ${held} AS held
              FROM package_updates u JOIN agents a ON a.id = u.agent_id
             WHERE ${chooses(r)}) m`;
  const matches = await db.$queryRaw<PolicyMatchRow[]>`
    SELECT u.agent_id AS "agentId", a.hostname, u.source, u.name, u.architecture, u.available_version AS "availableVersion",
           u.severity, u.security, u.version_seen_at AS "versionSeenAt"
      FROM package_updates u JOIN agents a ON a.id = u.agent_id
     WHERE ${chooses(r)} AND ${due(r, now)} AND NOT ${held}
     ORDER BY a.hostname, u.agent_id, u.source, u.name, u.architecture
     LIMIT ${limit}`;
  return {
    approvable: Number(counts?.approvable ?? 0),
    agents: Number(counts?.agents ?? 0),
    waiting: Number(counts?.waiting ?? 0),
    held: Number(counts?.held ?? 0),
    matches,
  };
}

export interface AutoApproved {
  agentId: string;
  source: string;
  name: string;
  architecture: string;
  availableVersion: string;
  policyId: string;
  policyName: string;
}

// Approves at most `limit` pending updates that an enabled rule chooses and whose delay has
// passed at `now`, never a held one, each credited to the first such rule in order; returns what
// it approved. One statement over the whole set. Runs inside the caller's transaction, which
// first takes the holds' advisory lock (store/holds.ts createHold): a hold being added waits
// for this approval to commit, or commits first and is seen by it. An update already decided,
// or whose version changed since it was chosen, is left alone (safe on every replica at once).
export async function approveByPolicies(tx: Tx, now: Date, limit: number): Promise<AutoApproved[]> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_holds'))`;
  return tx.$queryRaw<AutoApproved[]>`
    WITH chosen AS (
      SELECT DISTINCT ON (u.agent_id, u.source, u.name, u.architecture)
             u.agent_id, u.source, u.name, u.architecture, u.available_version, p.id AS policy_id, p.name AS policy_name
        FROM package_updates u JOIN agents a ON a.id = u.agent_id JOIN policies p ON p.enabled
       WHERE ${chooses(SAVED)} AND ${due(SAVED, now)} AND NOT ${held}
       ORDER BY u.agent_id, u.source, u.name, u.architecture, p.position, p.created_at, p.id
       LIMIT ${limit}
    )
    UPDATE package_updates u
       SET status = 'approved', decided_by = 'policy: ' || c.policy_name, decided_at = ${now}::timestamptz
      FROM chosen c
     WHERE u.agent_id = c.agent_id AND u.source = c.source AND u.name = c.name AND u.architecture = c.architecture
       AND u.status = 'pending' AND u.available_version = c.available_version
    RETURNING u.agent_id AS "agentId", u.source, u.name, u.architecture, u.available_version AS "availableVersion",
              c.policy_id AS "policyId", c.policy_name AS "policyName"`;
}

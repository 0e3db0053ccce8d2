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
// MAX_POLICY_PATTERNS per list); control-plane/test/domain/policies.test.ts checks on both
// databases that the two matchers agree and that a pathological pattern returns at once.

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
// `name` (an SQL expression) matches one of the globs in the array `patterns`.
const matchesAny = (name: Sql.Sql, patterns: Sql.Sql) =>
  Sql.sql`EXISTS (SELECT 1 FROM unnest(${patterns}) AS g(p) WHERE ${name} LIKE ${likeOf(Sql.raw("g.p"))} ESCAPE '\\')`;
const unset = (list: Sql.Sql) => Sql.sql`coalesce(cardinality(${list}), 0) = 0`;
// A hold of `scope` keeps package `name` of `source` (the rule of domain/holds.ts heldBy: its
// source or every source, its name pattern).
const holdKeeps = (scope: Sql.Sql, source: Sql.Sql, name: Sql.Sql) =>
  Sql.sql`EXISTS (SELECT 1 FROM holds h WHERE ${scope} AND (h.source IN ('', '*') OR h.source = ${source})
    AND ${name} LIKE ${likeOf(Sql.raw("h.name"))} ESCAPE '\\')`;

// The rules to evaluate as a relation: the enabled saved ones, or one definition as parameters.
const ENABLED = Sql.sql`SELECT id, name, position, created_at, severities, security_only, sources, name_patterns, groups, tags, exclusions, delay_seconds
  FROM policies WHERE enabled`;
const texts = (list: string[]) => Sql.sql`${list}::text[]`;
const unsaved = (d: PolicyDefinition) =>
  Sql.sql`SELECT '00000000-0000-0000-0000-000000000000'::uuid AS id, ${d.name}::text AS name, 0 AS position, now() AS created_at,
    ${texts(d.severities)} AS severities, ${d.securityOnly}::boolean AS security_only, ${texts(d.sources)} AS sources,
    ${texts(d.namePatterns)} AS name_patterns, ${texts(d.groups)} AS groups, ${texts(d.tags)} AS tags,
    ${texts(d.exclusions)} AS exclusions, ${d.delaySeconds}::int AS delay_seconds`;

// The pending updates of live agents that the rules choose, one row per update and rule (`m`),
// with whether the rule's delay has passed at `now` (to the second, from when the update's
// current version was first seen) and whether a hold keeps it. Name patterns, exclusions and
// fleet-wide holds are matched once per distinct package name, not once per update (a fleet has
// far fewer names than updates); an agent's own holds are looked up by its ID.
function evaluated(rules: Sql.Sql, now: Date): Sql.Sql {
  return Sql.sql`
    r AS MATERIALIZED (${rules}),
    names AS MATERIALIZED (SELECT DISTINCT source, name FROM package_updates WHERE status = 'pending'),
    fleet_held AS MATERIALIZED (
      SELECT n.source, n.name FROM names n WHERE ${holdKeeps(Sql.raw("h.agent_id IS NULL"), Sql.raw("n.source"), Sql.raw("n.name"))}),
    named AS MATERIALIZED (
      SELECT r.id AS rule_id, n.source, n.name FROM r JOIN names n ON ${unset(Sql.raw("r.sources"))} OR n.source = ANY (r.sources)
       WHERE (${unset(Sql.raw("r.name_patterns"))} OR ${matchesAny(Sql.raw("n.name"), Sql.raw("r.name_patterns"))})
         AND NOT ${matchesAny(Sql.raw("n.name"), Sql.raw("r.exclusions"))}),
    m AS (
      SELECT u.agent_id, a.hostname, u.source, u.name, u.architecture, u.available_version, u.severity, u.security, u.version_seen_at,
             r.id AS rule_id, r.name AS rule_name, r.position, r.created_at,
             u.version_seen_at + r.delay_seconds * interval '1 second' <= ${now}::timestamptz AS ready,
             (f.name IS NOT NULL OR ${holdKeeps(Sql.raw("h.agent_id = u.agent_id"), Sql.raw("u.source"), Sql.raw("u.name"))}) AS held
        FROM named c
        JOIN r ON r.id = c.rule_id
        JOIN package_updates u ON u.source = c.source AND u.name = c.name AND u.status = 'pending'
        JOIN agents a ON a.id = u.agent_id AND a.decommissioned_at IS NULL
        LEFT JOIN fleet_held f ON f.source = u.source AND f.name = u.name
       WHERE (${unset(Sql.raw("r.severities"))} OR u.severity = ANY (r.severities))
         AND (NOT r.security_only OR u.security)
         AND (${unset(Sql.raw("r.groups"))} OR a."group" = ANY (r.groups))
         AND (${unset(Sql.raw("r.tags"))} OR a.tags && r.tags))`;
}

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
  const [counts] = await db.$queryRaw<{ approvable: bigint; agents: bigint; waiting: bigint; held: bigint }[]>`
    WITH ${evaluated(unsaved(d), now)}
    SELECT count(*) FILTER (WHERE ready AND NOT held) AS approvable,
           count(DISTINCT agent_id) FILTER (WHERE ready AND NOT held) AS agents,
           count(*) FILTER (WHERE NOT ready AND NOT held) AS waiting,
           count(*) FILTER (WHERE held) AS held
      FROM m`;
  const matches = await db.$queryRaw<PolicyMatchRow[]>`
    WITH ${evaluated(unsaved(d), now)}
    SELECT agent_id AS "agentId", hostname, source, name, architecture, available_version AS "availableVersion",
           severity, security, version_seen_at AS "versionSeenAt"
      FROM m WHERE ready AND NOT held
     ORDER BY hostname, agent_id, source, name, architecture
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
    WITH ${evaluated(ENABLED, now)},
    chosen AS (
      SELECT DISTINCT ON (agent_id, source, name, architecture) agent_id, source, name, architecture, available_version, rule_id, rule_name
        FROM m WHERE ready AND NOT held
       ORDER BY agent_id, source, name, architecture, position, created_at, rule_id
       LIMIT ${limit}
    )
    UPDATE package_updates u
       SET status = 'approved', decided_by = 'policy: ' || c.rule_name, decided_at = ${now}::timestamptz
      FROM chosen c
     WHERE u.agent_id = c.agent_id AND u.source = c.source AND u.name = c.name AND u.architecture = c.architecture
       AND u.status = 'pending' AND u.available_version = c.available_version
    RETURNING u.agent_id AS "agentId", u.source, u.name, u.architecture, u.available_version AS "availableVersion",
              c.rule_id AS "policyId", c.rule_name AS "policyName"`;
}

// Serialises policy creation until the transaction ends, so a count then an insert cannot
// overshoot the limit when two run at once.
export async function lockPolicies(tx: Tx): Promise<void> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('redflag_policies'))`;
}

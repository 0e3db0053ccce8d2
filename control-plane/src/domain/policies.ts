import { Code, ConnectError } from "@connectrpc/connect";
import { HOLD_NAME } from "@redflag/common/holds";
import { LABEL, LABEL_RULE } from "@redflag/common/labels";
import { PACKAGE_SOURCES } from "@redflag/common/sources";
import { recordAudit } from "../store/audit.ts";
import { inTransaction } from "../store/db.ts";
import {
  approveByPolicies,
  countPolicies,
  lockPolicies,
  deletePolicy,
  getPolicy,
  insertPolicy,
  previewPolicy,
  replacePolicy,
  type AutoApproved,
  type PolicyDefinition,
  type PolicyRow,
} from "../store/policies.ts";
import type { Prisma } from "../store/types.ts";
import type { AuditHook } from "./audit.ts";
import { invalid, text } from "./input.ts";

// Auto-approval rules: which pending updates are approved without a person, and after how long.
// The leader's scheduler applies the enabled ones (autoApprove below); holds always win.

// Bounds: every rule is evaluated against every pending update on each scheduler tick, and each
// pattern list is matched against every candidate's name.
export const MAX_POLICIES = 100;
export const MAX_POLICY_PATTERNS = 50;
export const MAX_POLICY_LABELS = 32;
export const MAX_POLICY_NAME = 100;
export const MAX_DELAY_SECONDS = 365 * 86_400;
const MAX_ORDER = 1_000_000;
export const SEVERITIES = ["critical", "important", "security", "moderate", "low", "unknown"];

// A definition checked against the rules above; every problem is an InvalidArgument naming the
// field. Returns it with its lists de-duplicated.
export function checkDefinition(d: PolicyDefinition): PolicyDefinition {
  const name = text("definition.name", d.name.trim(), { max: MAX_POLICY_NAME, required: true });
  const list = (field: string, values: string[], max: number, ok: (v: string) => boolean, what: string) => {
    if (values.length > max) throw invalid(`${field} has ${values.length} entries; at most ${max} are allowed`);
    values.forEach((v, i) => {
      if (!ok(v)) throw invalid(`${field}[${i}] "${v.slice(0, 64)}${v.length > 64 ? "…" : ""}" is not ${what}`);
    });
    return [...new Set(values)];
  };
  const patterns = (field: string, values: string[]) =>
    list(field, values, MAX_POLICY_PATTERNS, (v) => HOLD_NAME.test(v), `a package name pattern (a package name in which "*" stands for any run of characters, at most 255 characters)`);
  const out: PolicyDefinition = {
    name,
    enabled: d.enabled,
    severities: list("definition.criteria.severities", d.severities, SEVERITIES.length, (v) => SEVERITIES.includes(v), "a severity"),
    securityOnly: d.securityOnly,
    sources: list("definition.criteria.sources", d.sources, PACKAGE_SOURCES.length, (v) => (PACKAGE_SOURCES as readonly string[]).includes(v), `a package source (${PACKAGE_SOURCES.join(", ")})`),
    namePatterns: patterns("definition.criteria.name_patterns", d.namePatterns),
    groups: list("definition.criteria.groups", d.groups, MAX_POLICY_LABELS, (v) => LABEL.test(v), `a group (${LABEL_RULE})`),
    tags: list("definition.criteria.tags", d.tags, MAX_POLICY_LABELS, (v) => LABEL.test(v), `a tag (${LABEL_RULE})`),
    exclusions: patterns("definition.exclusions", d.exclusions),
    delaySeconds: d.delaySeconds,
    position: d.position,
  };
  if (!Number.isInteger(out.delaySeconds) || out.delaySeconds < 0 || out.delaySeconds > MAX_DELAY_SECONDS) {
    throw invalid(`definition.delay_seconds must be between 0 and ${MAX_DELAY_SECONDS} (365 days)`);
  }
  if (!Number.isInteger(out.position) || Math.abs(out.position) > MAX_ORDER) throw invalid(`definition.order must be between -${MAX_ORDER} and ${MAX_ORDER}`);
  const criteria = out.severities.length + out.sources.length + out.namePatterns.length + out.groups.length + out.tags.length;
  if (criteria === 0 && !out.securityOnly) {
    throw invalid(`definition.criteria is empty: a rule needs at least one of severities, security_only, sources, name_patterns, groups or tags (name pattern "*" approves every update)`);
  }
  return out;
}

const taken = (name: string) => new ConnectError(`a policy named "${name}" already exists`, Code.AlreadyExists);
const missing = (id: string) => new ConnectError(`policy ${id} does not exist`, Code.NotFound);

// Adds a rule and its audit entry in one transaction. At most MAX_POLICIES rules exist (counted
// under a transaction-scoped advisory lock, so concurrent calls cannot overshoot).
export async function createPolicy(db: Prisma, input: PolicyDefinition, by: string, now: Date, record: AuditHook<PolicyRow>): Promise<PolicyRow> {
  const d = checkDefinition(input);
  return inTransaction(db, async (tx) => {
    await lockPolicies(tx);
    const count = await countPolicies(tx);
    if (count >= MAX_POLICIES) throw new ConnectError(`there are ${count} policies, the most allowed (${MAX_POLICIES}); delete one first, or widen an existing one`, Code.ResourceExhausted);
    const row = await insertPolicy(tx, d, by, now);
    if (row === "taken") throw taken(d.name);
    await record(tx, row);
    return row;
  });
}

// Replaces a rule's definition; the audit entry keeps it before and after.
export async function updatePolicy(
  db: Prisma,
  id: string,
  input: PolicyDefinition,
  by: string,
  now: Date,
  record: AuditHook<{ before: PolicyRow; after: PolicyRow }>,
): Promise<PolicyRow> {
  const d = checkDefinition(input);
  return inTransaction(db, async (tx) => {
    const before = await getPolicy(tx, id);
    if (!before) throw missing(id);
    const after = await replacePolicy(tx, id, d, by, now);
    if (after === "taken") throw taken(d.name);
    if (!after) throw missing(id);
    await record(tx, { before, after });
    return after;
  });
}

// Removes a rule (what it approved stays approved) and records it as it was.
export async function removePolicy(db: Prisma, id: string, record: AuditHook<PolicyRow>): Promise<void> {
  await inTransaction(db, async (tx) => {
    const row = await getPolicy(tx, id);
    if (!row) throw missing(id);
    await deletePolicy(tx, id);
    await record(tx, row);
  });
}

// What a saved rule (by ID) or a checked definition would approve at `now`; changes nothing.
export async function preview(db: Prisma, rule: { id: string } | { definition: PolicyDefinition }, now: Date, limit: number) {
  let d: PolicyDefinition;
  if ("id" in rule) {
    const row = await getPolicy(db, rule.id);
    if (!row) throw missing(rule.id);
    d = row;
  } else {
    d = checkDefinition(rule.definition);
  }
  return previewPolicy(db, d, now, limit);
}

// An audit entry lists at most this many updates (a batch may need several per rule).
const AUDIT_CHUNK = 200;

export interface AutoApproveLimits {
  // Updates approved per transaction, each evaluating every rule over the whole pending set.
  batch: number;
  // Transactions per run: a fleet's backlog is approved over several scheduler ticks.
  maxBatches: number;
}

// The scheduler's job: approves what enabled rules choose and whose delay has passed at `now`,
// in bounded batches. Each batch commits with the audit entries of the rules that approved in it:
// the rule (ID and name) as the actor, every update it approved listed (AUDIT_CHUNK per entry). Idempotent: only
// pending updates at the version a rule chose are changed, so a second run, a restart or a
// second replica finds nothing left to do.
export async function autoApprove(db: Prisma, now: Date, limits: AutoApproveLimits): Promise<AutoApproved[]> {
  const done: AutoApproved[] = [];
  for (let i = 0; i < limits.maxBatches; i++) {
    const approved = await inTransaction(db, async (tx) => {
      const rows = await approveByPolicies(tx, now, limits.batch);
      const byPolicy = new Map<string, AutoApproved[]>();
      for (const r of rows) byPolicy.set(r.policyId, [...(byPolicy.get(r.policyId) ?? []), r]);
      for (const [policyId, all] of byPolicy) {
        for (let at = 0; at < all.length; at += AUDIT_CHUNK) {
          const list = all.slice(at, at + AUDIT_CHUNK);
          await recordAudit(tx, {
            actorKind: "policy",
            actorId: policyId,
            actorName: list[0]!.policyName,
            action: "scheduler/AutoApprove",
            target: `policy:${policyId}`,
            remoteAddr: "",
            after: { status: "approved", count: list.length, updates: list.map((r) => `${r.agentId}/${r.source}/${r.name}=${r.availableVersion}`) },
          });
        }
      }
      return rows;
    });
    done.push(...approved);
    if (approved.length < limits.batch) break;
  }
  return done;
}

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import {
  type Policy,
  type PolicyDefinition as PolicyDefinitionMessage,
  PolicyCriteriaSchema,
  PolicyDefinitionSchema,
  PolicyMatchSchema,
  PolicySchema,
  PolicyService,
} from "@redflag/gen/policy_service_pb";
import { createPolicy, preview, removePolicy, updatePolicy } from "../domain/policies.ts";
import { listPolicies, type PolicyDefinition, type PolicyRow } from "../store/policies.ts";
import type { Prisma } from "../store/types.ts";
import { audit, callerName } from "./audit.ts";
import { invalid, uuid } from "./validate.ts";

const MAX_PREVIEW_PAGE = 500;

function severityName(s: UpdateSeverity, i: number): string {
  const name = UpdateSeverity[s];
  if (!name || s === UpdateSeverity.UNSPECIFIED) throw invalid(`definition.criteria.severities[${i}] (${s}) is not a severity`);
  return name.toLowerCase();
}
const severityProto = (name: string) => (UpdateSeverity as unknown as Record<string, UpdateSeverity>)[name.toUpperCase()] ?? UpdateSeverity.UNKNOWN;

// The wire definition as the domain's; the domain checks the rest (patterns, labels, bounds).
function definitionOf(d: PolicyDefinitionMessage | undefined): PolicyDefinition {
  if (!d) throw invalid("definition is required");
  const c = d.criteria ?? create(PolicyCriteriaSchema);
  return {
    name: d.name,
    enabled: d.enabled,
    severities: c.severities.map(severityName),
    securityOnly: c.securityOnly,
    sources: c.sources,
    namePatterns: c.namePatterns,
    groups: c.groups,
    tags: c.tags,
    exclusions: d.exclusions,
    delaySeconds: d.delaySeconds,
    position: d.order,
  };
}

export function policyToProto(row: PolicyRow): Policy {
  return create(PolicySchema, {
    id: row.id,
    definition: create(PolicyDefinitionSchema, {
      name: row.name,
      enabled: row.enabled,
      criteria: create(PolicyCriteriaSchema, {
        severities: row.severities.map(severityProto),
        securityOnly: row.securityOnly,
        sources: row.sources,
        namePatterns: row.namePatterns,
        groups: row.groups,
        tags: row.tags,
      }),
      exclusions: row.exclusions,
      delaySeconds: row.delaySeconds,
      order: row.position,
    }),
    createdBy: row.createdBy,
    createTime: timestampFromDate(row.createdAt),
    updatedBy: row.updatedBy,
    updateTime: timestampFromDate(row.updatedAt),
  });
}

// What an audit entry keeps of a rule: its whole definition.
const kept = (row: PolicyRow) => {
  const { createdAt: _c, updatedAt: _u, createdBy: _b, updatedBy: _ub, ...definition } = row;
  return definition;
};

export function createPolicyService(db: Prisma, now: () => Date = () => new Date()): ServiceImpl<typeof PolicyService> {
  return {
    async listPolicies() {
      return { policies: (await listPolicies(db)).map(policyToProto) };
    },

    async createPolicy(req, ctx) {
      const row = await createPolicy(db, definitionOf(req.definition), callerName(ctx), now(), (tx, row) =>
        audit(tx, ctx, { target: `policy:${row.id}`, after: kept(row) }),
      );
      return { policy: policyToProto(row) };
    },

    async updatePolicy(req, ctx) {
      const id = uuid("id", req.id);
      const row = await updatePolicy(db, id, definitionOf(req.definition), callerName(ctx), now(), (tx, { before, after }) =>
        audit(tx, ctx, { target: `policy:${id}`, before: kept(before), after: kept(after) }),
      );
      return { policy: policyToProto(row) };
    },

    async deletePolicy(req, ctx) {
      const id = uuid("id", req.id);
      await removePolicy(db, id, (tx, row) => audit(tx, ctx, { target: `policy:${id}`, before: kept(row) }));
      return {};
    },

    async previewPolicy(req) {
      const size = req.pageSize === 0 ? 50 : req.pageSize;
      if (size < 0 || size > MAX_PREVIEW_PAGE) throw invalid(`page_size must be between 1 and ${MAX_PREVIEW_PAGE}`);
      let rule: { id: string } | { definition: PolicyDefinition };
      if (req.rule.case === "id") rule = { id: uuid("id", req.rule.value) };
      else if (req.rule.case === "definition") rule = { definition: definitionOf(req.rule.value) };
      else throw invalid("name a saved policy (id) or give a definition to preview");
      const found = await preview(db, rule, now(), size);
      return {
        approvable: BigInt(found.approvable),
        agents: BigInt(found.agents),
        waiting: BigInt(found.waiting),
        held: BigInt(found.held),
        matches: found.matches.map((m) =>
          create(PolicyMatchSchema, {
            agentId: m.agentId,
            hostname: m.hostname,
            source: m.source,
            name: m.name,
            architecture: m.architecture,
            availableVersion: m.availableVersion,
            severity: severityProto(m.severity),
            security: m.security,
            firstSeenTime: timestampFromDate(m.versionSeenAt),
          }),
        ),
      };
    },
  };
}

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import {
  type CreatePolicyRequest,
  type Policy,
  type PolicyDefinition,
  PolicyMatchSchema,
  PolicySchema,
  PolicyService,
  type PreviewPolicyRequest,
  type UpdatePolicyRequest,
} from "@redflag/gen/policy_service_pb";
import { checkPolicyCriteria, checkPolicyPatterns, notFound, policyNameTaken } from "./server-rules.ts";

// An in-memory PolicyService like the control plane's (domain/policies.ts): the same checks and
// messages for patterns, empty criteria, taken names and unknown IDs, each refusal changing
// nothing; a preview that changes nothing and answers from a fixed fleet.
export function policyServer(initial: Policy[] = []) {
  const policies = [...initial];
  const creates: CreatePolicyRequest[] = [];
  const previews: PreviewPolicyRequest[] = [];
  const updates: UpdatePolicyRequest[] = [];
  const seen = timestampFromDate(new Date(Date.now() - 3 * 86_400_000));
  let n = 0;
  function check(d: PolicyDefinition | undefined) {
    checkPolicyPatterns("definition.criteria.name_patterns", d?.criteria?.namePatterns ?? []);
    checkPolicyPatterns("definition.exclusions", d?.exclusions ?? []);
    checkPolicyCriteria(d?.criteria);
  }
  const routes = (router: ConnectRouter) =>
    router.service(PolicyService, {
      listPolicies: () => ({ policies }),
      createPolicy(req) {
        creates.push(req);
        check(req.definition);
        if (policies.some((p) => p.definition?.name === req.definition?.name)) throw policyNameTaken(req.definition!.name);
        const policy = create(PolicySchema, { id: `00000000-0000-4000-8000-00000000000${++n}`, definition: req.definition, createdBy: "olu" });
        policies.push(policy);
        return { policy };
      },
      updatePolicy(req) {
        updates.push(req);
        check(req.definition);
        const i = policies.findIndex((x) => x.id === req.id);
        if (i < 0) throw notFound("policy", req.id);
        if (policies.some((p) => p.id !== req.id && p.definition?.name === req.definition?.name)) throw policyNameTaken(req.definition!.name);
        const policy = create(PolicySchema, { id: req.id, definition: req.definition, createdBy: policies[i]!.createdBy, updatedBy: "olu" });
        policies.splice(i, 1, policy);
        return { policy };
      },
      deletePolicy(req) {
        const i = policies.findIndex((x) => x.id === req.id);
        if (i < 0) throw notFound("policy", req.id);
        policies.splice(i, 1);
        return {};
      },
      previewPolicy(req) {
        previews.push(req);
        if (req.rule.case === "definition") check(req.rule.value);
        return {
          approvable: 2n,
          agents: 2n,
          waiting: 1n,
          held: 3n,
          matches: ["web-1", "web-2"].map((hostname, i) =>
            create(PolicyMatchSchema, { agentId: `a${i}`, hostname, source: "apt", name: "openssl", architecture: "amd64", availableVersion: "3.0.15", severity: UpdateSeverity.SECURITY, security: true, firstSeenTime: seen }),
          ),
        };
      },
    });
  return { routes, policies, creates, previews, updates };
}

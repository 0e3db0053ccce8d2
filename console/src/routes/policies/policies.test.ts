import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import { Role } from "@redflag/gen/identity_pb";
import {
  type CreatePolicyRequest,
  type Policy,
  PolicyMatchSchema,
  PolicySchema,
  PolicyService,
  type PreviewPolicyRequest,
  type UpdatePolicyRequest,
} from "@redflag/gen/policy_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { checkPolicyPatterns, notFound } from "#lib/testing/server-rules.ts";
import Policies from "./+page.svelte";

const seen = timestampFromDate(new Date(Date.now() - 3 * 86_400_000));

// A PolicyService like the control plane's: the same pattern checks and messages; a preview
// that changes nothing and answers from a fixed fleet.
function fakeServer(initial: Policy[] = []) {
  const policies = [...initial];
  const creates: CreatePolicyRequest[] = [];
  const previews: PreviewPolicyRequest[] = [];
  const updates: UpdatePolicyRequest[] = [];
  let n = 0;
  const routes = (router: ConnectRouter) =>
    router.service(PolicyService, {
      listPolicies: () => ({ policies }),
      createPolicy(req) {
        creates.push(req);
        checkPolicyPatterns("definition.criteria.name_patterns", req.definition?.criteria?.namePatterns ?? []);
        const policy = create(PolicySchema, { id: `00000000-0000-4000-8000-00000000000${++n}`, definition: req.definition, createdBy: "olu" });
        policies.push(policy);
        return { policy };
      },
      updatePolicy(req) {
        updates.push(req);
        const p = policies.find((x) => x.id === req.id);
        if (!p) throw notFound("policy", req.id);
        p.definition = req.definition;
        return { policy: p };
      },
      deletePolicy(req) {
        const i = policies.findIndex((x) => x.id === req.id);
        if (i < 0) throw notFound("policy", req.id);
        policies.splice(i, 1);
        return {};
      },
      previewPolicy(req) {
        previews.push(req);
        if (req.rule.case === "definition") checkPolicyPatterns("definition.criteria.name_patterns", req.rule.value.criteria?.namePatterns ?? []);
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

const policy = (over: { enabled?: boolean } = {}) =>
  create(PolicySchema, {
    id: "11111111-1111-4111-8111-111111111111",
    definition: { name: "security after 2 days", enabled: true, criteria: { securityOnly: true }, exclusions: ["linux-image-*"], delaySeconds: 172_800, ...over },
    createdBy: "olu",
  });

describe("the policies page", () => {
  beforeEach(() => {
    setTestUrl("/policies");
    notices.list = [];
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
  });

  it("lists policies in words, and previews a saved one", async () => {
    const server = fakeServer([policy()]);
    renderWithApi(Policies, server.routes);
    const row = await screen.findByTestId("policy");
    expect(row.textContent).toContain("security after 2 days");
    expect(row.textContent).toContain("security updates; except linux-image-*");
    expect(row.textContent).toContain("2 d after first seen");
    await fireEvent.click(screen.getByRole("button", { name: "Preview security after 2 days" }));
    const shown = await screen.findByTestId("policy-preview");
    expect(server.previews[0]!.rule).toEqual({ case: "id", value: policy().id });
    expect(shown.textContent).toMatch(/Would approve 2 updates on 2 hosts now;\s+1 more update once the delay has passed; 3 updates kept by holds\./);
    expect(within(shown).getAllByTestId("preview-match").map((r) => r.textContent)).toEqual([expect.stringContaining("web-1"), expect.stringContaining("web-2")]);
  });

  it("previews a new policy before it is saved, then saves exactly that", async () => {
    const server = fakeServer();
    renderWithApi(Policies, server.routes);
    await screen.findByText(/No policies yet/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "openssl soon" } });
    await fireEvent.click(screen.getByLabelText("critical"));
    await fireEvent.input(screen.getByLabelText("Package patterns"), { target: { value: "openssl\nlibssl*" } });
    await fireEvent.input(screen.getByLabelText("Except packages"), { target: { value: "libssl-dev" } });
    await fireEvent.input(screen.getByLabelText("Groups"), { target: { value: "web, db" } });
    await fireEvent.input(screen.getByLabelText("Delay after first seen"), { target: { value: "12h" } });
    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    expect((await screen.findByTestId("policy-preview")).textContent).toContain("Would approve 2 updates on 2 hosts now");
    expect(server.creates).toEqual([]);
    const previewed = server.previews[0]!.rule;
    expect(previewed.case).toBe("definition");
    expect(previewed.value).toMatchObject({
      name: "openssl soon",
      enabled: true,
      criteria: { severities: [UpdateSeverity.CRITICAL], namePatterns: ["openssl", "libssl*"], groups: ["web", "db"] },
      exclusions: ["libssl-dev"],
      delaySeconds: 43_200,
    });

    const save = screen.getByRole<HTMLButtonElement>("button", { name: "Save policy" });
    await waitFor(() => expect(save.disabled).toBe(false));
    await fireEvent.click(save);
    await waitFor(() => expect(server.creates).toHaveLength(1));
    expect(server.creates[0]!.definition).toMatchObject({ name: "openssl soon", delaySeconds: 43_200, criteria: { namePatterns: ["openssl", "libssl*"] } });
    expect(await screen.findByTestId("policy")).toBeTruthy();
    expect(notices.list.map((x) => x.text)).toContain("Policy openssl soon saved.");
  });

  it("shows the server's refusal and an unreadable delay, and saves nothing", async () => {
    const server = fakeServer();
    renderWithApi(Policies, server.routes);
    await screen.findByText(/No policies yet/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "bad" } });
    await fireEvent.input(screen.getByLabelText("Package patterns"), { target: { value: "a".repeat(256) } });
    await fireEvent.click(screen.getByRole("button", { name: "Save policy" }));
    expect(await screen.findByText(/name_patterns\[0\] "a+…" is not a package name pattern/)).toBeTruthy();
    await fireEvent.input(screen.getByLabelText("Package patterns"), { target: { value: "curl" } });
    await fireEvent.input(screen.getByLabelText("Delay after first seen"), { target: { value: "soon" } });
    await fireEvent.click(screen.getByRole("button", { name: "Save policy" }));
    expect(await screen.findByText(/"soon" is not a delay/)).toBeTruthy();
    expect(server.policies).toEqual([]);
  });

  it("disables and deletes for operators; viewers see and preview only", async () => {
    const server = fakeServer([policy()]);
    const { unmount } = renderWithApi(Policies, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Disable security after 2 days" }));
    await waitFor(() => expect(server.updates[0]?.definition?.enabled).toBe(false));
    expect(server.updates[0]!.definition).toMatchObject({ name: "security after 2 days", exclusions: ["linux-image-*"], delaySeconds: 172_800 });
    expect(await screen.findByText("disabled")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: "Delete security after 2 days" }));
    await fireEvent.click(await screen.findByRole("button", { name: "Delete policy" }));
    expect(await screen.findByText(/No policies yet/)).toBeTruthy();
    unmount();

    session.principal = { kind: "session", role: Role.VIEWER, user: { username: "vi" } } as never;
    renderWithApi(Policies, fakeServer([policy()]).routes);
    expect(await screen.findByRole("button", { name: "Preview security after 2 days" })).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Delete security after 2 days" })).toBeNull();
    expect(screen.queryByRole("form", { name: "New policy" })).toBeNull();
  });
});

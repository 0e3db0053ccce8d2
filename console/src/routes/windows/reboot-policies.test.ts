import { create } from "@bufbuild/protobuf";
import { type ConnectRouter } from "@connectrpc/connect";
import { HOOK_NAME, HOOK_NAME_RULE } from "@redflag/common/reboot-hooks";
import { Role } from "@redflag/gen/identity_pb";
import { MaintenanceService, RebootMode, type RebootPolicy, RebootPolicySchema, type RebootPolicySpec } from "@redflag/gen/maintenance_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { invalid, notFound } from "#lib/testing/server-rules.ts";
import RebootPolicies from "./RebootPolicies.svelte";

// A MaintenanceService keeping reboot policies like the control plane: a hook that is not a name
// is refused with its message.
function fakeServer(initial: RebootPolicy[] = []) {
  const policies = [...initial];
  const created: RebootPolicySpec[] = [];
  let n = 0;
  const routes = (router: ConnectRouter) =>
    router.service(MaintenanceService, {
      listRebootPolicies: () => ({ policies }),
      createRebootPolicy(req) {
        const spec = req.policy!;
        for (const [field, name] of [["pre_hook", spec.preHook], ["post_hook", spec.postHook]] as const) {
          if (name !== "" && !HOOK_NAME.test(name)) throw invalid(`policy.${field} "${name}" is not a hook name (the name of an executable in the agent's hooks directory): ${HOOK_NAME_RULE}`);
        }
        created.push(spec);
        const p = create(RebootPolicySchema, { id: `00000000-0000-4000-8000-00000000000${++n}`, spec });
        policies.push(p);
        return { policy: p };
      },
      deleteRebootPolicy(req) {
        const i = policies.findIndex((p) => p.id === req.id);
        if (i < 0) throw notFound("reboot policy", req.id);
        policies.splice(i, 1);
        return {};
      },
    });
  return { routes, policies, created };
}

const web = create(RebootPolicySchema, {
  id: "11111111-1111-4111-8111-111111111111",
  spec: { name: "web nightly", mode: RebootMode.ALWAYS, targets: { groups: ["web"] }, windowOnly: true, preHook: "drain", postHook: "undrain", hookTimeout: { seconds: 120n }, returnTimeout: { seconds: 900n }, enabled: true },
});

describe("reboot policies on the windows page", () => {
  beforeEach(() => {
    setTestUrl("/windows");
    notices.list = [];
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
  });

  it("lists policies with their mode, targets, timing and hooks", async () => {
    renderWithApi(RebootPolicies, fakeServer([web]).routes);
    const row = await screen.findByTestId("reboot-policy");
    const cells = within(row).getAllByRole("cell").map((c) => c.textContent?.trim());
    expect(cells.slice(0, 7)).toEqual(["web nightly", "always", "group web", "in a maintenance window", "before: drain, after: undrain (2 min each)", "15 min", "enabled"]);
  });

  it("creates a policy, shows the server's refusal of a hook that is a path, and deletes", async () => {
    const server = fakeServer();
    renderWithApi(RebootPolicies, server.routes);
    await screen.findByText(/No reboot policies/);
    await fireEvent.input(screen.getByLabelText("Reboot policy"), { target: { value: "db" } });
    await fireEvent.change(screen.getByLabelText("Mode"), { target: { value: "always" } });
    await fireEvent.input(screen.getByLabelText("Group(s)"), { target: { value: "db" } });
    await fireEvent.input(screen.getByLabelText("Pre-reboot hook"), { target: { value: "../bin/sh" } });
    await fireEvent.click(screen.getByRole("button", { name: "Create reboot policy" }));
    expect((await screen.findByRole("alert")).textContent).toContain('policy.pre_hook "../bin/sh" is not a hook name');
    expect(server.created).toEqual([]);

    await fireEvent.input(screen.getByLabelText("Pre-reboot hook"), { target: { value: "drain" } });
    await fireEvent.click(screen.getByLabelText("Only in a maintenance window"));
    await fireEvent.input(screen.getByLabelText("Back within"), { target: { value: "30m" } });
    await fireEvent.click(screen.getByRole("button", { name: "Create reboot policy" }));
    await waitFor(() => expect(server.created).toHaveLength(1));
    expect(server.created[0]).toMatchObject({ name: "db", mode: RebootMode.ALWAYS, targets: { groups: ["db"] }, windowOnly: true, preHook: "drain", postHook: "" });
    expect(server.created[0]!.returnTimeout?.seconds).toBe(1800n);
    expect(server.created[0]!.hookTimeout?.seconds).toBe(300n);
    expect(notices.list.at(-1)?.text).toBe("Reboot policy db created.");

    const row = await screen.findByTestId("reboot-policy");
    await fireEvent.click(within(row).getByRole("button", { name: "Delete reboot policy db" }));
    await fireEvent.click(screen.getByRole("button", { name: "Yes" }));
    await screen.findByText(/No reboot policies/);
    expect(server.policies).toEqual([]);
  });

  it("lets viewers read but not change", async () => {
    session.principal = { kind: "session", role: Role.VIEWER, user: { username: "vic" } } as never;
    renderWithApi(RebootPolicies, fakeServer([web]).routes);
    const row = await screen.findByTestId("reboot-policy");
    expect(within(row).queryByRole("button", { name: /Delete/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Create reboot policy" })).toBeNull();
  });
});

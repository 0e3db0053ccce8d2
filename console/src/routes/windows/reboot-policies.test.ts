import { create } from "@bufbuild/protobuf";
import { Role } from "@redflag/gen/identity_pb";
import { RebootMode, type RebootPolicy, RebootPolicySchema } from "@redflag/gen/maintenance_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { maintenanceServer } from "#lib/testing/maintenance-server.ts";
import RebootPolicies from "./RebootPolicies.svelte";

// The in-memory MaintenanceService keeps reboot policies like the control plane: a hook that is
// not a name, a limit out of bounds or a name another policy has is refused with its message.
const fakeServer = (initial: RebootPolicy[] = []) => {
  const server = maintenanceServer([], initial);
  return { routes: server.routes, policies: server.rebootPolicies, created: server.createdRebootPolicies, updates: server.rebootPolicyUpdates };
};

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

  it("edits a policy in the same form, prefilled, and saves it; focus goes back to its Edit button", async () => {
    const server = fakeServer([web]);
    renderWithApi(RebootPolicies, server.routes);
    const row = await screen.findByTestId("reboot-policy");
    await fireEvent.click(within(row).getByRole("button", { name: "Edit reboot policy web nightly" }));
    const form = screen.getByRole("form", { name: "Edit reboot policy web nightly" });
    expect(screen.queryByRole("form", { name: "New reboot policy" })).toBeNull();
    const name = within(form).getByLabelText<HTMLInputElement>("Reboot policy");
    expect(document.activeElement).toBe(name);
    expect(name.value).toBe("web nightly");
    expect(within(form).getByLabelText<HTMLSelectElement>("Mode").value).toBe("always");
    expect(within(form).getByLabelText<HTMLInputElement>("Group(s)").value).toBe("web");
    expect(within(form).getByLabelText<HTMLInputElement>("Tag(s)").value).toBe("");
    expect(within(form).getByLabelText<HTMLInputElement>("Every agent").checked).toBe(false);
    expect(within(form).getByLabelText<HTMLInputElement>("Only in a maintenance window").checked).toBe(true);
    expect(within(form).getByLabelText<HTMLInputElement>("Pre-reboot hook").value).toBe("drain");
    expect(within(form).getByLabelText<HTMLInputElement>("Post-reboot hook").value).toBe("undrain");
    expect(within(form).getByLabelText<HTMLInputElement>("Hook time limit").value).toBe("2m");
    expect(within(form).getByLabelText<HTMLInputElement>("Back within").value).toBe("15m");
    expect(within(form).getByLabelText<HTMLInputElement>("In force", { exact: false }).checked).toBe(true);

    await fireEvent.change(within(form).getByLabelText("Mode"), { target: { value: "when required" } });
    await fireEvent.input(within(form).getByLabelText("Tag(s)"), { target: { value: "canary" } });
    await fireEvent.click(within(form).getByLabelText("Only in a maintenance window"));
    await fireEvent.input(within(form).getByLabelText("Post-reboot hook"), { target: { value: "" } });
    await fireEvent.input(within(form).getByLabelText("Hook time limit"), { target: { value: "10m" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(server.updates).toHaveLength(1));
    expect(server.updates[0]!.id).toBe(web.id);
    expect(server.updates[0]!.policy).toMatchObject({ name: "web nightly", mode: RebootMode.WHEN_REQUIRED, targets: { groups: ["web"], tags: ["canary"], allAgents: false }, windowOnly: false, preHook: "drain", postHook: "", enabled: true });
    expect(server.updates[0]!.policy!.hookTimeout?.seconds).toBe(600n);
    expect(server.updates[0]!.policy!.returnTimeout?.seconds).toBe(900n);
    await waitFor(() => expect(screen.getByRole("form", { name: "New reboot policy" })).toBeTruthy());
    expect(notices.list.at(-1)?.text).toBe("Reboot policy web nightly saved.");
    const saved = await screen.findByTestId("reboot-policy");
    await waitFor(() => expect(within(saved).getAllByRole("cell").map((c) => c.textContent?.trim()).slice(0, 5)).toEqual(["web nightly", "when required", "group web, tag canary", "at once", "before: drain (10 min each)"]));
    await waitFor(() => expect(document.activeElement).toBe(within(saved).getByRole("button", { name: "Edit reboot policy web nightly" })));
    expect(server.created).toEqual([]);
    expect(server.policies).toHaveLength(1);
  });

  it("shows a refused edit in the server's words and changes nothing; Escape and Cancel leave the policy as it was", async () => {
    const db = create(RebootPolicySchema, {
      id: "22222222-2222-4222-8222-222222222222",
      spec: { name: "db", mode: RebootMode.NEVER, targets: { allAgents: true }, hookTimeout: { seconds: 300n }, returnTimeout: { seconds: 3600n }, enabled: false },
    });
    const server = fakeServer([web, db]);
    renderWithApi(RebootPolicies, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Edit reboot policy web nightly" }));
    let form = screen.getByRole("form", { name: "Edit reboot policy web nightly" });
    await fireEvent.input(within(form).getByLabelText("Reboot policy"), { target: { value: "db" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    expect((await within(form).findByRole("alert")).textContent).toBe('a reboot policy named "db" already exists; pick another name or update that one');
    await fireEvent.input(within(form).getByLabelText("Reboot policy"), { target: { value: "web nightly" } });
    await fireEvent.input(within(form).getByLabelText("Pre-reboot hook"), { target: { value: "/usr/bin/drain" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(within(form).getByRole("alert").textContent).toContain('policy.pre_hook "/usr/bin/drain" is not a hook name'));
    await fireEvent.input(within(form).getByLabelText("Pre-reboot hook"), { target: { value: "drain" } });
    await fireEvent.input(within(form).getByLabelText("Hook time limit"), { target: { value: "2h" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(within(form).getByRole("alert").textContent).toBe("policy.hook_timeout must be from 1 second to 30 minutes"));
    await fireEvent.input(within(form).getByLabelText("Hook time limit"), { target: { value: "soon" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(within(form).getByRole("alert").textContent).toBe('Hook time limit: "soon" is not a duration; write it like 30s, 5m or 1h'));
    expect(server.updates).toHaveLength(3);
    expect(server.policies).toEqual([web, db]);

    await fireEvent.keyDown(within(form).getByLabelText("Group(s)"), { key: "Escape" });
    await waitFor(() => expect(screen.getByRole("form", { name: "New reboot policy" })).toBeTruthy());
    await waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Edit reboot policy web nightly" })));

    // A disabled policy for every agent comes back as it was: still disabled, still for all.
    await fireEvent.click(screen.getByRole("button", { name: "Edit reboot policy db" }));
    form = screen.getByRole("form", { name: "Edit reboot policy db" });
    expect(within(form).getByLabelText<HTMLSelectElement>("Mode").value).toBe("never");
    expect(within(form).getByLabelText<HTMLInputElement>("Every agent").checked).toBe(true);
    expect(within(form).getByLabelText<HTMLInputElement>("Back within").value).toBe("1h");
    expect(within(form).getByLabelText<HTMLInputElement>("In force", { exact: false }).checked).toBe(false);
    await fireEvent.click(within(form).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("form", { name: "Edit reboot policy db" })).toBeNull();
    expect(server.policies).toEqual([web, db]);
  });

  it("keeps the agents a policy names by ID when it is edited", async () => {
    const byId = create(RebootPolicySchema, {
      id: "33333333-3333-4333-8333-333333333333",
      spec: { name: "two hosts", mode: RebootMode.WHEN_REQUIRED, targets: { agentIds: ["a1a1a1a1-0000-4000-8000-000000000001", "a1a1a1a1-0000-4000-8000-000000000002"] }, hookTimeout: { seconds: 300n }, returnTimeout: { seconds: 900n }, enabled: true },
    });
    const server = fakeServer([byId]);
    renderWithApi(RebootPolicies, server.routes);
    const row = await screen.findByTestId("reboot-policy");
    expect(row.textContent).toContain("2 agents");
    await fireEvent.click(within(row).getByRole("button", { name: "Edit reboot policy two hosts" }));
    const form = screen.getByRole("form", { name: "Edit reboot policy two hosts" });
    expect(form.textContent).toContain("Also applies to 2 agents named by ID; they are kept as they are.");
    await fireEvent.input(within(form).getByLabelText("Back within"), { target: { value: "30m" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(server.updates).toHaveLength(1));
    expect(server.updates[0]!.policy).toMatchObject({ targets: { agentIds: byId.spec!.targets!.agentIds, groups: [], tags: [], allAgents: false } });
    expect(server.updates[0]!.policy!.returnTimeout?.seconds).toBe(1800n);
  });

  it("forgets the edit of a policy that is deleted", async () => {
    const server = fakeServer([web]);
    renderWithApi(RebootPolicies, server.routes);
    const row = await screen.findByTestId("reboot-policy");
    await fireEvent.click(within(row).getByRole("button", { name: "Edit reboot policy web nightly" }));
    screen.getByRole("form", { name: "Edit reboot policy web nightly" });
    await fireEvent.click(within(row).getByRole("button", { name: "Delete reboot policy web nightly" }));
    await fireEvent.click(screen.getByRole("button", { name: "Yes" }));
    await screen.findByText(/No reboot policies/);
    expect(screen.queryByRole("form", { name: "Edit reboot policy web nightly" })).toBeNull();
    expect(screen.getByRole("form", { name: "New reboot policy" })).toBeTruthy();
    expect(server.updates).toEqual([]);
  });

  it("lets viewers read but not change", async () => {
    session.principal = { kind: "session", role: Role.VIEWER, user: { username: "vic" } } as never;
    renderWithApi(RebootPolicies, fakeServer([web]).routes);
    const row = await screen.findByTestId("reboot-policy");
    expect(within(row).queryByRole("button", { name: /Delete/ })).toBeNull();
    expect(within(row).queryByRole("button", { name: /Edit/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Create reboot policy" })).toBeNull();
  });
});

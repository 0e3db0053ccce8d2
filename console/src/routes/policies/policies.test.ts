import { create } from "@bufbuild/protobuf";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import { Role } from "@redflag/gen/identity_pb";
import { PolicySchema } from "@redflag/gen/policy_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { policyServer as fakeServer } from "#lib/testing/policy-server.ts";
import Policies from "./+page.svelte";

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
    expect(screen.queryByRole("button", { name: "Edit security after 2 days" })).toBeNull();
    expect(screen.queryByRole("form", { name: "New policy" })).toBeNull();
  });

  it("edits a policy in the same form, prefilled, previews the change, and saves exactly that", async () => {
    const server = fakeServer([policy()]);
    renderWithApi(Policies, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Edit security after 2 days" }));
    const form = screen.getByRole("form", { name: "Edit policy security after 2 days" });
    expect(screen.queryByRole("form", { name: "New policy" })).toBeNull();
    const name = within(form).getByLabelText<HTMLInputElement>("Name");
    expect(document.activeElement).toBe(name);
    expect(name.value).toBe("security after 2 days");
    expect(within(form).getByLabelText<HTMLInputElement>("Security updates only").checked).toBe(true);
    expect(within(form).getByLabelText<HTMLTextAreaElement>("Except packages").value).toBe("linux-image-*");
    expect(within(form).getByLabelText<HTMLInputElement>("Delay after first seen").value).toBe("2d");
    expect(within(form).getByLabelText<HTMLInputElement>("Enabled").checked).toBe(true);

    await fireEvent.input(within(form).getByLabelText("Delay after first seen"), { target: { value: "1w" } });
    await fireEvent.input(within(form).getByLabelText("Groups"), { target: { value: "web" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Preview" }));
    expect((await within(form).findByTestId("policy-preview")).textContent).toContain("Would approve 2 updates");
    expect(server.previews.at(-1)!.rule).toMatchObject({ case: "definition", value: { delaySeconds: 604_800, criteria: { groups: ["web"] } } });

    const save = within(form).getByRole<HTMLButtonElement>("button", { name: "Save changes" });
    await waitFor(() => expect(save.disabled).toBe(false));
    await fireEvent.click(save);
    await waitFor(() => expect(server.updates).toHaveLength(1));
    expect(server.updates[0]!.id).toBe(policy().id);
    expect(server.updates[0]!.definition).toMatchObject({ name: "security after 2 days", enabled: true, criteria: { securityOnly: true, groups: ["web"] }, exclusions: ["linux-image-*"], delaySeconds: 604_800 });
    await waitFor(() => expect(screen.getByRole("form", { name: "New policy" })).toBeTruthy());
    expect(notices.list.at(-1)?.text).toBe("Policy security after 2 days saved.");
    await waitFor(() => expect(screen.getByTestId("policy").textContent).toContain("7 d after first seen"));
    await waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Edit security after 2 days" })));
    expect(server.creates).toEqual([]);
  });

  it("shows a refused edit in the server's words, changes nothing, and Escape leaves it as it was", async () => {
    const other = create(PolicySchema, { id: "22222222-2222-4222-8222-222222222222", definition: { name: "web at once", enabled: true, criteria: { groups: ["web"] } } });
    const server = fakeServer([policy(), other]);
    renderWithApi(Policies, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Edit security after 2 days" }));
    const form = screen.getByRole("form", { name: "Edit policy security after 2 days" });
    await fireEvent.input(within(form).getByLabelText("Name"), { target: { value: "web at once" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    expect((await within(form).findByRole("alert")).textContent).toBe('a policy named "web at once" already exists');
    await fireEvent.input(within(form).getByLabelText("Name"), { target: { value: "nothing chosen" } });
    await fireEvent.click(within(form).getByLabelText("Security updates only"));
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(within(form).getByRole("alert").textContent).toMatch(/^definition.criteria is empty/));
    expect(server.policies.map((p) => p.definition?.name)).toEqual(["security after 2 days", "web at once"]);

    await fireEvent.keyDown(within(form).getByLabelText("Name"), { key: "Escape" });
    await waitFor(() => expect(screen.getByRole("form", { name: "New policy" })).toBeTruthy());
    expect(screen.getAllByTestId("policy")[0]!.textContent).toContain("security after 2 days");
    await waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Edit security after 2 days" })));
  });
});

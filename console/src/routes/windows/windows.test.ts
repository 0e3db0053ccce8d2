import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Role } from "@redflag/gen/identity_pb";
import { WindowKind, WindowSchema } from "@redflag/gen/maintenance_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { maintenanceServer as fakeServer } from "#lib/testing/maintenance-server.ts";
import Windows from "./+page.svelte";

const saturdays = create(WindowSchema, {
  id: "11111111-1111-4111-8111-111111111111",
  spec: { name: "db saturdays", kind: WindowKind.MAINTENANCE, rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-01-03T22:00:00", duration: { seconds: 14_400n }, timeZone: "Europe/Berlin", targets: { groups: ["db"] }, enabled: true },
  nextStartTime: timestampFromDate(new Date("2026-03-28T21:00:00Z")),
});
const freeze = create(WindowSchema, {
  id: "22222222-2222-4222-8222-222222222222",
  spec: { name: "freeze", kind: WindowKind.BLACKOUT, rrule: "FREQ=YEARLY", dtstart: "2026-12-20T00:00:00", duration: { seconds: 16n * 86_400n }, timeZone: "UTC", targets: { allAgents: true }, enabled: true },
  openUntil: timestampFromDate(new Date("2027-01-05T00:00:00Z")),
});

describe("the maintenance windows page", () => {
  beforeEach(() => {
    setTestUrl("/windows");
    notices.list = [];
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
  });

  it("lists windows with what they apply to and whether they are open", async () => {
    renderWithApi(Windows, fakeServer([saturdays, freeze]).routes);
    const rows = await screen.findAllByTestId("window");
    expect(rows.map((r) => within(r).getAllByRole("cell")[0]!.textContent)).toEqual(["db saturdays", "freeze"]);
    expect(rows[0]!.textContent).toContain("group db");
    expect(rows[0]!.textContent).toContain("closed");
    expect(rows[1]!.textContent).toContain("blackout");
    expect(rows[1]!.textContent).toContain("all agents");
    expect(rows[1]!.textContent).toMatch(/open until/);
  });

  it("previews a definition before it is saved, then creates it", async () => {
    const server = fakeServer();
    renderWithApi(Windows, server.routes);
    await screen.findByText(/No windows yet/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "db saturdays" } });
    await fireEvent.input(screen.getByLabelText("First start (local)"), { target: { value: "2026-01-03T22:00" } });
    await fireEvent.input(screen.getByLabelText("Time zone"), { target: { value: "Europe/Berlin" } });
    await fireEvent.input(screen.getByLabelText("Groups"), { target: { value: "db, web" } });

    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    const shown = await screen.findAllByTestId("occurrence");
    expect(shown.map((o) => o.textContent)).toEqual(["2026-03-28T22:00:00+01:00 → 2026-03-29T03:00:00+02:00", "2026-04-04T22:00:00+02:00 → 2026-04-05T02:00:00+02:00"]);
    expect(server.previews[0]!.window).toMatchObject({ case: "spec", value: { rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-01-03T22:00", timeZone: "Europe/Berlin" } });
    expect(server.previews[0]!.count).toBe(10);

    await fireEvent.click(screen.getByRole("button", { name: "Create window" }));
    await waitFor(() => expect(server.created).toHaveLength(1));
    expect(server.created[0]).toMatchObject({ name: "db saturdays", kind: WindowKind.MAINTENANCE, targets: { groups: ["db", "web"], allAgents: false }, autoInstall: false });
    expect(server.created[0]!.duration?.seconds).toBe(14_400n);
    expect(await screen.findByTestId("window")).toBeTruthy();
    expect(notices.list.at(-1)?.text).toBe("Window db saturdays created.");
  });

  it("creates a maintenance window that installs approved updates while open, and says so in the list", async () => {
    const server = fakeServer();
    renderWithApi(Windows, server.routes);
    await screen.findByText(/No windows yet/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "web nights" } });
    await fireEvent.input(screen.getByLabelText("First start (local)"), { target: { value: "2026-01-06T01:00" } });
    await fireEvent.input(screen.getByLabelText("Groups"), { target: { value: "web" } });
    await fireEvent.click(screen.getByLabelText("Install approved updates while open"));
    await fireEvent.click(screen.getByRole("button", { name: "Create window" }));
    await waitFor(() => expect(server.created).toHaveLength(1));
    expect(server.created[0]).toMatchObject({ name: "web nights", kind: WindowKind.MAINTENANCE, autoInstall: true });
    expect((await screen.findByTestId("window")).textContent).toContain("maintenance (installs approved updates)");
  });

  it("shows the server's reason and a bad duration without saving", async () => {
    const server = fakeServer();
    renderWithApi(Windows, server.routes);
    await screen.findByText(/No windows yet/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "x" } });
    await fireEvent.input(screen.getByLabelText("First start (local)"), { target: { value: "2026-01-03T22:00" } });
    await fireEvent.input(screen.getByLabelText("Time zone"), { target: { value: "Mars/Olympus" } });
    await fireEvent.input(screen.getByLabelText("Tags"), { target: { value: "frozen" } });
    await fireEvent.click(screen.getByRole("button", { name: "Create window" }));
    expect((await screen.findByRole("alert")).textContent).toContain('time_zone "Mars/Olympus" is not an IANA time zone');
    await fireEvent.input(screen.getByLabelText("Lasts"), { target: { value: "four hours" } });
    await fireEvent.click(screen.getByRole("button", { name: "Create window" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toContain('"four hours" is not a duration'));
    expect(server.created).toEqual([]);
  });

  it("previews and deletes a saved window; viewers see windows but cannot change them", async () => {
    const server = fakeServer([saturdays]);
    const { unmount } = renderWithApi(Windows, server.routes);
    const row = await screen.findByTestId("window");
    await fireEvent.click(within(row).getByRole("button", { name: "Preview" }));
    expect(await screen.findByRole("heading", { name: "Next occurrences of db saturdays" })).toBeTruthy();
    expect(server.previews[0]!.window).toEqual({ case: "id", value: saturdays.id });
    await fireEvent.click(within(row).getByRole("button", { name: "Delete db saturdays" }));
    await fireEvent.click(screen.getByRole("button", { name: "Yes" }));
    await screen.findByText(/No windows yet/);
    expect(server.windows).toEqual([]);
    unmount();

    session.principal = { kind: "session", role: Role.VIEWER, user: { username: "vic" } } as never;
    renderWithApi(Windows, fakeServer([saturdays]).routes);
    const viewerRow = await screen.findByTestId("window");
    expect(within(viewerRow).queryByRole("button", { name: /Delete/ })).toBeNull();
    expect(within(viewerRow).queryByRole("button", { name: /Edit/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Create window" })).toBeNull();
  });

  it("edits a window in the same form, prefilled, previews the change and saves it; focus goes back to its Edit button", async () => {
    const server = fakeServer([saturdays, freeze]);
    renderWithApi(Windows, server.routes);
    const row = (await screen.findAllByTestId("window"))[0]!;
    const editButton = within(row).getByRole("button", { name: "Edit db saturdays" });
    await fireEvent.click(editButton);
    const form = screen.getByRole("form", { name: "Edit window db saturdays" });
    expect(screen.queryByRole("form", { name: "New window" })).toBeNull();
    const name = within(form).getByLabelText<HTMLInputElement>("Name");
    expect(document.activeElement).toBe(name);
    expect(name.value).toBe("db saturdays");
    expect(within(form).getByLabelText<HTMLInputElement>("First start (local)").value).toBe("2026-01-03T22:00");
    expect(within(form).getByLabelText<HTMLInputElement>("Lasts").value).toBe("4h");
    expect(within(form).getByLabelText<HTMLInputElement>("Time zone").value).toBe("Europe/Berlin");
    expect(within(form).getByLabelText<HTMLInputElement>("Groups").value).toBe("db");
    expect(within(form).getByLabelText<HTMLInputElement>("Enabled", { exact: false }).checked).toBe(true);

    await fireEvent.input(within(form).getByLabelText("Lasts"), { target: { value: "5h" } });
    await fireEvent.input(within(form).getByLabelText("Tags"), { target: { value: "frozen" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Preview" }));
    expect(await screen.findByRole("heading", { name: "Next occurrences of the changes to db saturdays" })).toBeTruthy();
    expect(server.previews.at(-1)!.window).toMatchObject({ case: "spec", value: { duration: { seconds: 18_000n }, targets: { groups: ["db"], tags: ["frozen"] } } });

    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(server.updates).toHaveLength(1));
    expect(server.updates[0]!.id).toBe(saturdays.id);
    expect(server.updates[0]!.window).toMatchObject({ name: "db saturdays", rrule: "FREQ=WEEKLY;BYDAY=SA", timeZone: "Europe/Berlin", enabled: true, targets: { groups: ["db"], tags: ["frozen"] } });
    expect(server.updates[0]!.window!.duration?.seconds).toBe(18_000n);
    await waitFor(() => expect(screen.getByRole("form", { name: "New window" })).toBeTruthy());
    expect(notices.list.at(-1)?.text).toBe("Window db saturdays saved.");
    expect(screen.queryByTestId("preview")).toBeNull();
    const saved = (await screen.findAllByTestId("window"))[0]!;
    await waitFor(() => expect(saved.textContent).toContain("5 h"));
    expect(saved.textContent).toContain("group db, tag frozen");
    await waitFor(() => expect(document.activeElement).toBe(within(saved).getByRole("button", { name: "Edit db saturdays" })));
    expect(server.created).toEqual([]);
  });

  it("shows a refused edit in the server's words and changes nothing; Escape and Cancel leave the window as it was", async () => {
    const server = fakeServer([saturdays, freeze]);
    renderWithApi(Windows, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Edit db saturdays" }));
    let form = screen.getByRole("form", { name: "Edit window db saturdays" });
    await fireEvent.input(within(form).getByLabelText("Name"), { target: { value: "freeze" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    expect((await within(form).findByRole("alert")).textContent).toBe('a window named "freeze" already exists; pick another name or update that one');
    await fireEvent.input(within(form).getByLabelText("Groups"), { target: { value: "" } });
    await fireEvent.input(within(form).getByLabelText("Name"), { target: { value: "db saturdays" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(within(form).getByRole("alert").textContent).toBe("window.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet"));
    expect(server.windows[0]).toBe(saturdays);

    await fireEvent.keyDown(within(form).getByLabelText("Groups"), { key: "Escape" });
    await waitFor(() => expect(screen.getByRole("form", { name: "New window" })).toBeTruthy());
    await waitFor(() => expect(document.activeElement).toBe(screen.getByRole("button", { name: "Edit db saturdays" })));

    await fireEvent.click(screen.getByRole("button", { name: "Edit freeze" }));
    form = screen.getByRole("form", { name: "Edit window freeze" });
    expect(within(form).getByLabelText<HTMLInputElement>("Lasts").value).toBe("16d");
    expect(within(form).getByLabelText<HTMLInputElement>("All agents").checked).toBe(true);
    await fireEvent.click(within(form).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("form", { name: "Edit window freeze" })).toBeNull();
    expect(server.updates.map((u) => u.id)).toEqual([saturdays.id, saturdays.id]);
    expect(server.windows).toEqual([saturdays, freeze]);
  });

  it("keeps the agents a window names by ID when it is edited, and a disabled window stays disabled", async () => {
    const byId = create(WindowSchema, {
      id: "33333333-3333-4333-8333-333333333333",
      spec: { name: "two hosts", kind: WindowKind.MAINTENANCE, rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-01-03T22:00:00", duration: { seconds: 3600n }, timeZone: "UTC", enabled: false, targets: { agentIds: ["a1a1a1a1-0000-4000-8000-000000000001", "a1a1a1a1-0000-4000-8000-000000000002"] } },
    });
    const server = fakeServer([byId]);
    renderWithApi(Windows, server.routes);
    const row = await screen.findByTestId("window");
    expect(row.textContent).toContain("2 agents");
    await fireEvent.click(within(row).getByRole("button", { name: "Edit two hosts" }));
    const form = screen.getByRole("form", { name: "Edit window two hosts" });
    expect(form.textContent).toContain("Also applies to 2 agents named by ID; they are kept as they are.");
    await fireEvent.input(within(form).getByLabelText("Rule (RRULE)"), { target: { value: "FREQ=WEEKLY;BYDAY=SU" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(server.updates).toHaveLength(1));
    expect(server.updates[0]!.window).toMatchObject({ rrule: "FREQ=WEEKLY;BYDAY=SU", enabled: false, targets: { agentIds: byId.spec!.targets!.agentIds, groups: [], tags: [] } });
  });
});

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ConnectRouter } from "@connectrpc/connect";
import { Role } from "@redflag/gen/identity_pb";
import {
  MaintenanceService,
  type PreviewWindowRequest,
  type Window,
  WindowKind,
  WindowOccurrenceSchema,
  WindowSchema,
  type WindowSpec,
} from "@redflag/gen/maintenance_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { checkWindowSpec, notFound } from "#lib/testing/server-rules.ts";
import Windows from "./+page.svelte";

// A MaintenanceService like the control plane's for what the page uses: it keeps windows,
// refuses an unknown time zone or a definition without targets with the control plane's
// messages, and answers previews with the Berlin spring-forward weekend.
function fakeServer(initial: Window[] = []) {
  const windows = [...initial];
  const created: WindowSpec[] = [];
  const previews: PreviewWindowRequest[] = [];
  let n = 0;
  const routes = (router: ConnectRouter) =>
    router.service(MaintenanceService, {
      listWindows: () => ({ windows }),
      // The page's reboot policies (RebootPolicies.svelte, tested in reboot-policies.test.ts).
      listRebootPolicies: () => ({ policies: [] }),
      createWindow(req) {
        checkWindowSpec(req.window!);
        created.push(req.window!);
        const w = create(WindowSchema, { id: `00000000-0000-4000-8000-00000000000${++n}`, spec: { ...req.window!, dtstart: `${req.window!.dtstart}:00` } });
        windows.push(w);
        return { window: w };
      },
      updateWindow: () => ({}),
      deleteWindow(req) {
        const i = windows.findIndex((w) => w.id === req.id);
        if (i < 0) throw notFound("window", req.id);
        windows.splice(i, 1);
        return {};
      },
      previewWindow(req) {
        previews.push(req);
        if (req.window.case === "spec") checkWindowSpec({ timeZone: req.window.value.timeZone, targets: { allAgents: true, groups: [], tags: [], agentIds: [] } });
        return {
          occurrences: [
            create(WindowOccurrenceSchema, { localStart: "2026-03-28T22:00:00+01:00", localEnd: "2026-03-29T03:00:00+02:00" }),
            create(WindowOccurrenceSchema, { localStart: "2026-04-04T22:00:00+02:00", localEnd: "2026-04-05T02:00:00+02:00" }),
          ],
        };
      },
    });
  return { routes, windows, created, previews };
}

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
    expect(screen.queryByRole("button", { name: "Create window" })).toBeNull();
  });
});

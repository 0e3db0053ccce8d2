import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { CommandOutcome, CommandType, PackageChangeKind, UpdateSeverity, type PackageChange } from "@redflag/gen/command_pb";
import { CommandService, CommandState, type CommandInfo, type CreateCommandRequest } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import {
  UpdateService,
  UpdateStatus,
  type ApproveUpdatesRequest,
  type InstallApprovedUpdatesRequest,
  type ListUpdatesRequest,
  type RejectUpdatesRequest,
  type SetHoldRequest,
  type UpdateSelection,
} from "@redflag/gen/update_service_pb";
import { create } from "@bufbuild/protobuf";
import { PackageChangeSchema } from "@redflag/gen/command_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { takeHandedOverUpdates } from "#lib/rollout-handover.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Updates from "./+page.svelte";
import { AGENTS, ago, command, DB, EventFeed, evolve, signIn, WEB } from "#lib/testing/fixtures.ts";
import { checkSelection, notFound } from "#lib/testing/server-rules.ts";

const DRY = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const CONFIRM = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const INSTALL = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
const HOLD = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";

interface Row {
  agentId: string;
  hostname: string;
  source: string;
  name: string;
  current: string;
  available: string;
  severity: UpdateSeverity;
  status: UpdateStatus;
  held?: boolean;
  installCommandId?: string;
}
const fleet = (): Row[] => [
  { agentId: DB, hostname: "db-1", source: "apt", name: "openssl", current: "3.0.15-1", available: "3.0.16-1", severity: UpdateSeverity.SECURITY, status: UpdateStatus.PENDING },
  { agentId: WEB, hostname: "web-1", source: "apt", name: "linux-image-amd64", current: "6.1.112-1", available: "6.1.115-1", severity: UpdateSeverity.IMPORTANT, status: UpdateStatus.PENDING, held: true },
  { agentId: WEB, hostname: "web-1", source: "apt", name: "openssl", current: "3.0.15-1", available: "3.0.16-1", severity: UpdateSeverity.CRITICAL, status: UpdateStatus.PENDING },
  { agentId: WEB, hostname: "web-1", source: "docker", name: "nginx", current: "1.27.1", available: "1.27.3", severity: UpdateSeverity.MODERATE, status: UpdateStatus.APPROVED, installCommandId: INSTALL },
];

const CHANGES: PackageChange[] = [
  create(PackageChangeSchema, { kind: PackageChangeKind.UPGRADE, source: "apt", name: "openssl", fromVersion: "3.0.15-1", toVersion: "3.0.16-1", architecture: "amd64" }),
  create(PackageChangeSchema, { kind: PackageChangeKind.UPGRADE, source: "apt", name: "libssl3", fromVersion: "3.0.15-1", toVersion: "3.0.16-1", architecture: "amd64" }),
  create(PackageChangeSchema, { kind: PackageChangeKind.INSTALL, source: "apt", name: "libssl-extra", toVersion: "1.2-1", architecture: "amd64" }),
];

// A control plane that treats selections as update-service.ts does (an empty selection is
// refused, held updates are never approved, installs are one command per agent).
function server(opts: { approveError?: ConnectError; dryRun?: "succeeds" | "fails"; changes?: PackageChange[] } = {}) {
  let rows = fleet();
  const lists: ListUpdatesRequest[] = [];
  const approvals: ApproveUpdatesRequest[] = [];
  const rejections: RejectUpdatesRequest[] = [];
  const installs: InstallApprovedUpdatesRequest[] = [];
  const created: CreateCommandRequest[] = [];
  const holdsSet: SetHoldRequest[] = [];
  const holdsRemoved: string[] = [];
  const feed = new EventFeed();
  const commands = new Map<string, CommandInfo>();
  let holds = [{ id: HOLD, agentId: "", source: "apt", name: "linux-image-*", reason: "kernel pinned until the driver is certified", createdBy: "ana", createTime: ago(86_400_000) }];

  const matches = (sel: UpdateSelection | undefined, r: Row) => {
    if (!sel) return true;
    if (sel.keys.length && !sel.keys.some((k) => k.agentId === r.agentId && k.source === r.source && k.name === r.name)) return false;
    if (sel.agentIds.length && !sel.agentIds.includes(r.agentId)) return false;
    if (sel.severities.length && !sel.severities.includes(r.severity)) return false;
    if (sel.source && sel.source !== r.source) return false;
    if (sel.packageName && sel.packageName !== r.name) return false;
    return true;
  };
  const routes = (router: ConnectRouter) => {
    router.service(FleetService, { listAgents: () => ({ agents: AGENTS }) });
    router.service(UpdateService, {
      listUpdates(req) {
        lists.push(req);
        const found = rows.filter((r) => matches(req.filter, r) && (!req.status || r.status === req.status));
        return {
          total: found.length,
          updates: found.map((r) => ({
            agentId: r.agentId,
            hostname: r.hostname,
            update: { source: r.source, name: r.name, architecture: "amd64", currentVersion: r.current, availableVersion: r.available, repository: "bookworm-security", severity: r.severity, security: r.severity === UpdateSeverity.SECURITY },
            status: r.status,
            held: !!r.held,
            firstSeenTime: ago(3_600_000),
            installCommandId: r.installCommandId ?? "",
            installCommandState: r.installCommandId ? CommandState.SENT : CommandState.UNSPECIFIED,
          })),
        };
      },
      approveUpdates(req) {
        approvals.push(req);
        if (opts.approveError) throw opts.approveError;
        checkSelection(req.selection);
        const chosen = rows.filter((r) => matches(req.selection, r) && r.status !== UpdateStatus.APPROVED);
        rows = rows.map((r) => (chosen.includes(r) && !r.held ? { ...r, status: UpdateStatus.APPROVED } : r));
        return { approved: chosen.filter((r) => !r.held).length, held: chosen.filter((r) => r.held).length };
      },
      rejectUpdates(req) {
        rejections.push(req);
        checkSelection(req.selection);
        const chosen = rows.filter((r) => matches(req.selection, r) && r.status !== UpdateStatus.REJECTED);
        rows = rows.map((r) => (chosen.includes(r) ? { ...r, status: UpdateStatus.REJECTED } : r));
        return { rejected: chosen.length };
      },
      installApprovedUpdates(req) {
        installs.push(req);
        checkSelection(req.selection);
        if (req.approve) rows = rows.map((r) => (matches(req.selection, r) && r.status === UpdateStatus.PENDING && !r.held ? { ...r, status: UpdateStatus.APPROVED } : r));
        const todo = rows.filter((r) => matches(req.selection, r) && r.status === UpdateStatus.APPROVED && !r.held);
        const agents = [...new Set(todo.map((r) => r.agentId))];
        return { commands: agents.map((agentId, i) => command({ id: `eeeeeeee-eeee-4eee-8eee-${String(i).padStart(12, "0")}`, agentId, type: CommandType.INSTALL_UPDATES, state: CommandState.PENDING })), packages: todo.length };
      },
      listHolds: () => ({ holds }),
      setHold(req) {
        holdsSet.push(req);
        if (req.name.replace(/\*/g, "") === "") throw new ConnectError('a hold on "*" alone would hold every package; name the packages', Code.InvalidArgument);
        const hold = { id: "ffffffff-ffff-4fff-8fff-ffffffffffff", agentId: req.agentId, source: req.source || "*", name: req.name, reason: req.reason, createdBy: "ana", createTime: ago(0) };
        holds = [...holds, hold];
        return { hold };
      },
      removeHold(req) {
        holdsRemoved.push(req.id);
        holds = holds.filter((h) => h.id !== req.id);
        return {};
      },
    });
    router.service(CommandService, {
      createCommand(req) {
        created.push(req);
        if (req.action.case === "dryRunUpdate") {
          const pending = command({ id: DRY, agentId: req.agentId, type: CommandType.DRY_RUN_UPDATE, state: CommandState.PENDING, createTime: ago(0) });
          commands.set(DRY, pending);
          // The agent takes it at its next poll and reports.
          setTimeout(() => {
            const finished =
              opts.dryRun === "fails"
                ? evolve(pending, { state: CommandState.FAILED, result: { outcome: CommandOutcome.FAILED, message: "no package would change; apt: Unable to locate package openssl-nosuch" } })
                : evolve(pending, {
                    state: CommandState.SUCCEEDED,
                    sequence: 7n,
                    result: {
                      outcome: CommandOutcome.SUCCEEDED,
                      message: "3 packages would change: 2 upgrades, 1 install",
                      detail: { case: "dryRunUpdate", value: { changes: opts.changes ?? CHANGES, output: [{ argv: ["apt-get", "-s", "install", "openssl"], exitCode: 0, stdoutTail: "Inst openssl [3.0.15-1] (3.0.16-1 Debian-Security:12/stable-security [amd64])" }] } },
                    },
                  });
            commands.set(DRY, finished);
            feed.changed(evolve(pending, { state: CommandState.SENT }), finished);
          }, 20);
          return { command: pending };
        }
        return { command: command({ id: CONFIRM, agentId: req.agentId, type: CommandType.CONFIRM_DEPENDENCIES, state: CommandState.PENDING, createTime: ago(0) }) };
      },
      getCommand(req) {
        const c = commands.get(req.id);
        if (!c) throw notFound("command", req.id);
        return { command: c };
      },
      watchEvents: (_req, ctx) => feed.stream(ctx.signal),
    });
  };
  return { routes, lists, approvals, rejections, installs, created, holdsSet, holdsRemoved };
}

const updateRow = (host: string, name: string) =>
  screen.getAllByTestId("update").find((r) => r.textContent?.includes(host) && r.textContent.includes(name))!;
const pick = (host: string, name: string) => fireEvent.click(screen.getByRole("checkbox", { name: `Select ${name} on ${host}` }));
const texts = () => notices.list.map((n) => n.text);

describe("the Updates page", () => {
  beforeEach(() => {
    navigations.length = 0;
    notices.list = [];
    setTestUrl("/updates");
    signIn(Role.OPERATOR);
  });

  it("turns the URL's filters into the ListUpdates request, and the form back into the URL", async () => {
    setTestUrl(`/updates?severity=critical&severity=important&source=apt&package=openssl&agent=${WEB}&status=pending&security=1&group=web&tag=prod`);
    const { routes, lists } = server();
    renderWithApi(Updates, routes);
    await waitFor(() => expect(lists.length).toBe(1));
    expect(lists[0]!.status).toBe(UpdateStatus.PENDING);
    expect(lists[0]!.filter).toMatchObject({
      severities: [UpdateSeverity.CRITICAL, UpdateSeverity.IMPORTANT],
      source: "apt",
      packageName: "openssl",
      agentIds: [WEB],
      securityOnly: true,
      group: "web",
      tag: "prod",
      keys: [],
      all: false,
    });
    expect((await screen.findByTestId("total")).textContent).toMatch(/^1 update matches these filters/);
    expect((screen.getByLabelText("Package") as HTMLInputElement).value).toBe("openssl");
    expect((screen.getByLabelText("critical") as HTMLInputElement).checked).toBe(true);
    expect((screen.getByLabelText("low") as HTMLInputElement).checked).toBe(false);
    await waitFor(() => expect((screen.getByLabelText("Host") as HTMLSelectElement).value).toBe(WEB));

    await fireEvent.click(screen.getByLabelText("low"));
    const url = new URL(navigations.at(-1)!);
    expect(url.pathname).toBe("/updates");
    expect(url.searchParams.getAll("severity")).toEqual(["critical", "important", "low"]);
    expect(Object.fromEntries([...url.searchParams].filter(([k]) => k !== "severity"))).toEqual({
      source: "apt",
      package: "openssl",
      agent: WEB,
      status: "pending",
      security: "1",
      group: "web",
      tag: "prod",
    });
    await fireEvent.click(screen.getByRole("button", { name: "Clear filters" }));
    expect(navigations.at(-1)).toBe("http://console.test/updates");
  });

  it("acts on every pending update in the fleet with all: true, and only after confirming", async () => {
    const { routes, approvals } = server();
    renderWithApi(Updates, routes);
    expect((await screen.findByTestId("total")).textContent).toContain("4 updates in the fleet");
    await fireEvent.click(screen.getByRole("button", { name: "Select every update in the fleet (4)" }));
    await fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    const ask = screen.getByRole("group", { name: "Approve" });
    expect(ask.textContent).toContain("Approve every pending update in the fleet?");
    expect(approvals).toEqual([]);
    // Backing out sends nothing.
    await fireEvent.click(within(ask).getByRole("button", { name: "Cancel" }));
    expect(approvals).toEqual([]);
    await fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    await fireEvent.click(within(screen.getByRole("group", { name: "Approve" })).getByRole("button", { name: "Approve" }));
    await waitFor(() => expect(approvals.length).toBe(1));
    expect(approvals[0]!.selection).toMatchObject({ all: true, keys: [], agentIds: [], severities: [], source: "", packageName: "", group: "", tag: "", securityOnly: false });
    await waitFor(() => expect(texts()).toEqual(["2 approved, 1 held and left as they were"]));
  });

  it("sends the filters themselves as the selection for everything matching them", async () => {
    setTestUrl("/updates?source=apt&severity=critical");
    const { routes, rejections } = server();
    renderWithApi(Updates, routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Select all 1 update matching these filters" }));
    await fireEvent.click(screen.getByRole("button", { name: "Reject" }));
    const ask = screen.getByRole("group", { name: "Reject" });
    expect(ask.textContent).toContain("Reject the 1 update matching these filters?");
    expect(rejections).toEqual([]);
    await fireEvent.click(within(ask).getByRole("button", { name: "Reject" }));
    await waitFor(() => expect(rejections.length).toBe(1));
    expect(rejections[0]!.selection).toMatchObject({ all: false, keys: [], source: "apt", severities: [UpdateSeverity.CRITICAL] });
    await waitFor(() => expect(texts()).toEqual(["1 rejected"]));
  });

  it("approves the selected rows and shows the server's counts, then reloads", async () => {
    const { routes, approvals, lists } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("web-1", "openssl");
    await pick("web-1", "linux-image-amd64");
    expect(screen.getByTestId("bulk").textContent).toContain("2 selected updates");
    await fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    await waitFor(() => expect(texts()).toEqual(["1 approved, 1 held and left as they were"]));
    expect(approvals[0]!.selection?.keys.map((k) => `${k.agentId}/${k.source}/${k.name}/${k.architecture}`)).toEqual([
      `${WEB}/apt/openssl/amd64`,
      `${WEB}/apt/linux-image-amd64/amd64`,
    ]);
    await waitFor(() => expect(lists.length).toBe(2));
    await waitFor(() => expect(updateRow("web-1", "openssl").dataset.status).toBe("approved"));
    expect(updateRow("web-1", "linux-image-amd64").dataset.status).toBe("pending");
    expect(updateRow("web-1", "linux-image-amd64").textContent).toContain("held");
    // Done: nothing stays selected.
    expect(screen.getByTestId("bulk").textContent).toContain("No updates selected");
  });

  it("hands the selected updates to a new rollout on the Rollouts page", async () => {
    const { routes } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    expect(screen.queryByRole("button", { name: "Roll out in rings…" })).toBeNull();
    await pick("web-1", "openssl");
    await pick("web-1", "linux-image-amd64");
    await fireEvent.click(screen.getByRole("button", { name: "Roll out in rings…" }));
    expect(navigations.at(-1)).toBe("/rollouts");
    expect(takeHandedOverUpdates()).toBe(`${WEB} apt openssl amd64\n${WEB} apt linux-image-amd64 amd64`);
  });

  it("queues installs and says how many commands and packages", async () => {
    const { routes, installs } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("web-1", "openssl");
    await pick("db-1", "openssl");
    await fireEvent.click(screen.getByRole("button", { name: "Approve & install" }));
    await waitFor(() => expect(texts()).toEqual(["Queued 2 install commands for 2 packages"]));
    expect(installs[0]).toMatchObject({ approve: true });
    expect(installs[0]!.selection?.keys).toHaveLength(2);
    // An update's install command links to Activity.
    expect(within(updateRow("web-1", "nginx")).getByTestId("install-command").getAttribute("href")).toBe(`/activity/${INSTALL}`);
  });

  it("shows a refusal in the server's words and keeps the selection", async () => {
    const { routes, lists } = server({ approveError: new ConnectError("ApproveUpdates needs the operator role; ana acts as viewer", Code.PermissionDenied) });
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("db-1", "openssl");
    await fireEvent.click(screen.getByRole("button", { name: "Approve" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Not allowed: ApproveUpdates needs the operator role; ana acts as viewer");
    expect(texts()).toEqual([]);
    expect(lists.length).toBe(1);
    expect((screen.getByRole("checkbox", { name: "Select openssl on db-1" }) as HTMLInputElement).checked).toBe(true);
  });

  it("previews one host's install with a dry run, then confirms exactly those changes", async () => {
    const { routes, created } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("web-1", "openssl");
    await fireEvent.click(screen.getByRole("button", { name: "Preview (dry run)" }));
    await waitFor(() => expect(created.length).toBe(1));
    expect(created[0]!.agentId).toBe(WEB);
    expect(created[0]!.action.case).toBe("dryRunUpdate");
    expect(created[0]!.action.value).toMatchObject({ packages: [{ source: "apt", name: "openssl", version: "3.0.16-1", architecture: "amd64" }] });

    // The agent reports: the changes, grouped.
    const preview = await screen.findByTestId("dry-run");
    await waitFor(() => expect(within(preview).getByTestId("dry-run-summary").textContent).toBe("3 changes: 2 upgrades, 1 new install."));
    expect(within(preview).getByRole("region", { name: "Upgrades: 2" })).toBeTruthy();
    expect(within(preview).getByRole("region", { name: "New installs: 1" }).textContent).toContain("libssl-extra");
    expect(within(preview).queryByRole("region", { name: /Removals/ })).toBeNull();
    expect(within(preview).getAllByTestId("dry-run-change").map((r) => `${r.dataset.kind} ${r.querySelector("code")?.textContent}`)).toEqual([
      "upgrade libssl3",
      "upgrade openssl",
      "install libssl-extra",
    ]);
    expect(within(preview).getByTestId("tool-output").textContent).toContain("apt-get -s install openssl");

    await fireEvent.click(within(preview).getByRole("button", { name: "Confirm and install exactly these" }));
    await waitFor(() => expect(created.length).toBe(2));
    expect(created[1]!.agentId).toBe(WEB);
    expect(created[1]!.action.case).toBe("confirmDependencies");
    expect(created[1]!.action.value).toEqual(expect.objectContaining({ dryRunCommandId: DRY, changes: CHANGES }));
    expect((await within(preview).findByTestId("confirm-queued")).textContent).toContain("Install queued for web-1");
    expect(within(preview).getByRole("link", { name: /follow command/ }).getAttribute("href")).toBe(`/activity/${CONFIRM}`);
    expect(texts()).toEqual(["Install of exactly these 3 changes queued for web-1"]);
  });

  it("asks once more when the confirmed changes remove packages", async () => {
    const removal = create(PackageChangeSchema, { kind: PackageChangeKind.REMOVE, source: "apt", name: "libssl1.1", fromVersion: "1.1.1w-0", architecture: "amd64" });
    const { routes, created } = server({ changes: [...CHANGES, removal] });
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("web-1", "openssl");
    await fireEvent.click(screen.getByRole("button", { name: "Preview (dry run)" }));
    const preview = await screen.findByTestId("dry-run");
    expect((await within(preview).findByRole("region", { name: "Removals: 1" })).textContent).toContain("removed");
    expect(within(preview).getByTestId("dry-run-removals").textContent).toContain("This would remove 1 package");
    await fireEvent.click(within(preview).getByRole("button", { name: "Confirm and install exactly these" }));
    expect(created.length).toBe(1);
    const ask = within(preview).getByRole("group", { name: "Confirm and install exactly these" });
    expect(ask.textContent).toContain("This also removes 1 package from web-1. Install exactly these changes?");
    await fireEvent.click(within(ask).getByRole("button", { name: "Install and remove" }));
    await waitFor(() => expect(created.length).toBe(2));
    expect((created[1]!.action.value as { changes: PackageChange[] }).changes).toEqual([...CHANGES, removal]);
  });

  it("shows the agent's message when the dry run fails, and lets it go", async () => {
    const { routes, created } = server({ dryRun: "fails" });
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("db-1", "openssl");
    await fireEvent.click(screen.getByRole("button", { name: "Preview (dry run)" }));
    const preview = await screen.findByTestId("dry-run");
    expect((await within(preview).findByRole("alert")).textContent).toBe(
      "The preview failed on db-1: no package would change; apt: Unable to locate package openssl-nosuch",
    );
    expect(within(preview).queryByRole("button", { name: "Confirm and install exactly these" })).toBeNull();
    await fireEvent.click(within(preview).getByRole("button", { name: "Discard" }));
    expect(screen.queryByTestId("dry-run")).toBeNull();
    expect(created.length).toBe(1);
  });

  it("explains that a preview runs per host when the selection spans two", async () => {
    const { routes, created } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    await pick("db-1", "openssl");
    await pick("web-1", "openssl");
    const button = screen.getByRole("button", { name: "Preview (dry run)" }) as HTMLButtonElement;
    expect(button.disabled).toBe(true);
    expect(button.getAttribute("aria-describedby")).toBe("preview-hint");
    expect(document.getElementById("preview-hint")?.textContent).toBe("The selection spans 2 hosts; a preview runs per host, so select updates of one host.");
    await fireEvent.click(button);
    expect(created).toEqual([]);
  });

  it("adds and removes holds, with the server's words for a bad pattern", async () => {
    const { routes, holdsSet, holdsRemoved } = server();
    renderWithApi(Updates, routes);
    const holds = await screen.findByTestId("holds");
    await fireEvent.click(within(holds).getByText("Holds"));
    await waitFor(() => expect(within(holds).getAllByTestId("hold").map((h) => h.textContent)).toEqual([expect.stringContaining("linux-image-*")]));

    await fireEvent.input(within(holds).getByLabelText("Package or pattern"), { target: { value: "*" } });
    await fireEvent.click(within(holds).getByRole("button", { name: "Add hold" }));
    expect((await within(holds).findByRole("alert")).textContent).toBe('a hold on "*" alone would hold every package; name the packages');

    await fireEvent.input(within(holds).getByLabelText("Package or pattern"), { target: { value: "postgresql-*" } });
    await fireEvent.change(within(holds).getByLabelText("Applies to"), { target: { value: DB } });
    await fireEvent.input(within(holds).getByLabelText("Reason"), { target: { value: "major upgrade planned" } });
    await fireEvent.click(within(holds).getByRole("button", { name: "Add hold" }));
    await waitFor(() => expect(texts()).toEqual(["Holding postgresql-* on db-1"]));
    expect(holdsSet[1]).toMatchObject({ agentId: DB, source: "*", name: "postgresql-*", reason: "major upgrade planned" });
    await waitFor(() => expect(within(holds).getAllByTestId("hold")).toHaveLength(2));
    expect(within(holds).queryByRole("alert")).toBeNull();

    await fireEvent.click(within(holds).getByRole("button", { name: "Remove the hold on linux-image-* (every host)" }));
    expect(holdsRemoved).toEqual([]);
    const ask = within(holds).getByRole("group", { name: "Remove the hold on linux-image-* (every host)" });
    expect(ask.textContent).toContain("Remove this hold? linux-image-* can be updated again.");
    await fireEvent.click(within(ask).getByRole("button", { name: "Remove" }));
    await waitFor(() => expect(holdsRemoved).toEqual([HOLD]));
    await waitFor(() => expect(within(holds).getAllByTestId("hold")).toHaveLength(1));
  });

  it("shows viewers the updates and holds without anything they cannot do", async () => {
    signIn(Role.VIEWER);
    const { routes } = server();
    renderWithApi(Updates, routes);
    await screen.findByTestId("total");
    expect(screen.getAllByTestId("update")).toHaveLength(4);
    await waitFor(() => expect(screen.getAllByTestId("hold")).toHaveLength(1));
    expect(screen.queryAllByRole("checkbox", { name: /^Select / })).toEqual([]);
    expect(screen.queryByTestId("bulk")).toBeNull();
    expect(screen.queryAllByRole("button").map((b) => b.textContent)).toEqual([]);
    expect(screen.queryByLabelText("Package or pattern")).toBeNull();
  });

  it("loads further pages with the same filters, saying how many are left", async () => {
    setTestUrl("/updates?source=apt");
    const { routes } = server();
    const requests: ListUpdatesRequest[] = [];
    const update = (name: string) => ({ agentId: WEB, hostname: "web-1", update: { source: "apt", name, architecture: "amd64", currentVersion: "1", availableVersion: "2", severity: UpdateSeverity.LOW }, status: UpdateStatus.PENDING });
    const paging = (router: ConnectRouter) => {
      routes(router);
      router.service(UpdateService, {
        listUpdates(req) {
          requests.push(req);
          return req.pageToken === "" ? { updates: [update("aaa"), update("bbb")], nextPageToken: "after-bbb", total: 3 } : { updates: [update("ccc")], total: 3 };
        },
        listHolds: () => ({ holds: [] }),
      });
    };
    renderWithApi(Updates, paging);
    await fireEvent.click(await screen.findByRole("button", { name: "Load more (1 left)" }));
    await waitFor(() => expect(screen.getAllByTestId("update")).toHaveLength(3));
    expect(requests.map((r) => [r.pageToken, r.filter?.source])).toEqual([["", "apt"], ["after-bbb", "apt"]]);
    expect(screen.queryByRole("button", { name: /^Load more/ })).toBeNull();
  });

  it("groups by package with ?view=packages, opens a row onto its hosts at that version, and keeps the view when filtering", async () => {
    setTestUrl("/updates?view=packages&security=1");
    const { routes } = server();
    const groups: { filter?: UpdateSelection; status: UpdateStatus }[] = [];
    const hostLists: ListUpdatesRequest[] = [];
    const update = (agentId: string, hostname: string, available: string) => ({
      agentId,
      hostname,
      update: { source: "apt", name: "openssl", architecture: "amd64", currentVersion: "3.0.14", availableVersion: available, severity: UpdateSeverity.SECURITY, security: true },
      status: UpdateStatus.PENDING,
    });
    let failHosts = false;
    const byPackage = (router: ConnectRouter) => {
      routes(router);
      router.service(UpdateService, {
        listPackageUpdates(req) {
          groups.push({ filter: req.filter, status: req.status });
          return {
            total: 2,
            packages: [
              { source: "apt", name: "openssl", availableVersion: "3.0.15", architectures: ["amd64"], severity: UpdateSeverity.SECURITY, security: true, agentCount: 2, pendingCount: 1, approvedCount: 1 },
              { source: "apt", name: "tzdata", availableVersion: "2024b", architectures: ["all"], severity: UpdateSeverity.UNKNOWN, agentCount: 1, pendingCount: 1 },
            ],
          };
        },
        listUpdates(req) {
          hostLists.push(req);
          if (failHosts) throw new ConnectError("selection.package_name is not a package name", Code.InvalidArgument);
          // Another host has openssl at another version: not this row's.
          return { updates: [update(WEB, "web-1", "3.0.15"), update(DB, "db-1", "3.0.15"), update("cccccccc-0000-4000-8000-000000000003", "old-1", "3.0.13")], total: 3 };
        },
        listHolds: () => ({ holds: [] }),
      });
    };
    renderWithApi(Updates, byPackage);
    const rows = await screen.findAllByTestId("package-update");
    expect(rows.map((r) => [r.dataset.package, r.dataset.version])).toEqual([["openssl", "3.0.15"], ["tzdata", "2024b"]]);
    expect(screen.getByTestId("package-total").textContent).toMatch(/^\s*2 packages with updates matching these filters/);
    expect(groups[0]!.filter?.securityOnly).toBe(true);
    // The host list is not loaded for nothing.
    expect(hostLists).toEqual([]);
    expect(rows[0]!.textContent).toContain("1 pending, 1 approved");
    expect(rows[1]!.textContent).toContain("not rated");
    expect(screen.getByRole("link", { name: "By package" }).getAttribute("aria-current")).toBe("page");
    expect(screen.getByRole("link", { name: "By host" }).getAttribute("href")).toBe("/updates?security=1");

    const open = within(rows[0]!).getByRole("button", { name: "Show the 2 hosts that need openssl 3.0.15" });
    await fireEvent.click(open);
    const hosts = await screen.findAllByTestId("package-host");
    expect(hosts.map((h) => within(h).getByRole("link").textContent)).toEqual(["web-1", "db-1"]);
    expect(within(hosts[0]!).getByRole("link").getAttribute("href")).toBe(`/agents/${WEB}`);
    expect(hostLists[0]!.filter).toMatchObject({ packageName: "openssl", source: "apt", securityOnly: true });
    expect(screen.getByRole("link", { name: "Select and install openssl on the by-host view" }).getAttribute("href")).toBe("/updates?package=openssl&source=apt");
    await fireEvent.click(within(rows[0]!).getByRole("button", { name: /^Hide the 2 hosts/ }));
    expect(screen.queryByTestId("package-hosts")).toBeNull();

    // A failure is said in the row, in the server's words.
    failHosts = true;
    await fireEvent.click(within(rows[1]!).getByRole("button", { name: /^Show the 1 host that need/ }));
    expect((await within(screen.getByTestId("package-hosts")).findByRole("alert")).textContent).toContain("selection.package_name is not a package name");

    // Filtering keeps the view.
    await fireEvent.change(within(screen.getByRole("form", { name: "Filter updates" })).getByLabelText("Source"), { target: { value: "apt" } });
    expect(navigations.at(-1)).toBe("http://console.test/updates?source=apt&security=1&view=packages");
  });

  it("says so when the fleet has nothing pending", async () => {
    const { routes } = server();
    const empty = (router: ConnectRouter) => {
      routes(router);
      router.service(UpdateService, { listUpdates: () => ({ updates: [], total: 0 }), listHolds: () => ({ holds: [] }) });
    };
    renderWithApi(Updates, empty);
    expect((await screen.findByTestId("empty")).textContent).toContain("Every host is up to date");
  });
});

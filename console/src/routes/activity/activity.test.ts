import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { CommandOutcome, CommandType } from "@redflag/gen/command_pb";
import { CommandCreator, CommandService, CommandState, type CommandInfo, type ListCommandsRequest, type WatchEventsRequest } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Activity from "./+page.svelte";
import { AGENTS, ago, command, DB, EventFeed, evolve, signIn, WEB } from "#lib/testing/fixtures.ts";
import { checkCancellable, checkRetryable } from "#lib/testing/server-rules.ts";

const INSTALL = "11111111-1111-4111-8111-111111111111";
const SCAN = "22222222-2222-4222-8222-222222222222";
const FAILED = "33333333-3333-4333-8333-333333333333";
const NEW = "44444444-4444-4444-8444-444444444444";

// A control plane with three commands and a live feed the test drives.
function server(opts: { feed: EventFeed; commands?: CommandInfo[]; watch?: (req: WatchEventsRequest, signal: AbortSignal) => AsyncIterable<unknown> }) {
  const lists: ListCommandsRequest[] = [];
  const watches: WatchEventsRequest[] = [];
  const retried: string[] = [];
  let commands = opts.commands ?? [
    command({ id: INSTALL, agentId: WEB, type: CommandType.INSTALL_UPDATES, state: CommandState.PENDING, createTime: ago(30_000) }),
    command({ id: FAILED, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.FAILED, createTime: ago(120_000), result: { outcome: CommandOutcome.FAILED, message: "apt: could not lock /var/lib/dpkg" } }),
    command({ id: SCAN, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED, createTime: ago(600_000), result: { outcome: CommandOutcome.SUCCEEDED, message: "3 updates found" } }),
  ];
  const routes = (router: ConnectRouter) => {
    router.service(FleetService, { listAgents: () => ({ agents: AGENTS }) });
    router.service(CommandService, {
      listCommands(req) {
        lists.push(req);
        return { commands: commands.filter((c) => (!req.agentId || c.agentId === req.agentId) && (!req.state || c.state === req.state)) };
      },
      async *watchEvents(req, ctx) {
        watches.push(req);
        if (opts.watch) yield* opts.watch(req, ctx.signal) as AsyncIterable<never>;
        else yield* opts.feed.stream(ctx.signal);
      },
      cancelCommand(req) {
        const c = commands.find((x) => x.id === req.id)!;
        checkCancellable(c);
        const cancelled = evolve(c, { state: CommandState.CANCELLED, finishTime: ago(0) });
        commands = commands.map((x) => (x.id === c.id ? cancelled : x));
        return { command: cancelled };
      },
      retryCommand(req) {
        retried.push(req.id);
        checkRetryable(commands.find((x) => x.id === req.id)!);
        return { command: command({ id: NEW, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.PENDING, createTime: ago(0) }) };
      },
    });
  };
  // A command changes on the server without an event reaching the page (someone else acted).
  const set = (c: CommandInfo) => (commands = commands.map((x) => (x.id === c.id ? c : x)));
  return { routes, lists, watches, retried, set };
}

const rowIds = () => screen.getAllByTestId("command").map((r) => r.dataset.commandId);
const row = (id: string) => screen.getAllByTestId("command").find((r) => r.dataset.commandId === id)!;

describe("the Activity feed", () => {
  beforeEach(() => {
    navigations.length = 0;
    notices.list = [];
    setTestUrl("/activity");
    signIn(Role.OPERATOR);
  });

  it("goes live, changes a streamed command in place and slides new ones in at the top", async () => {
    const feed = new EventFeed();
    const { routes, watches } = server({ feed });
    renderWithApi(Activity, routes);
    expect((await screen.findByTestId("live")).textContent).toContain("Live");
    await waitFor(() => expect(rowIds()).toEqual([INSTALL, FAILED, SCAN]));
    expect(within(row(INSTALL)).getByText("web-1").getAttribute("href")).toBe(`/agents/${WEB}`);
    expect(watches).toEqual([expect.objectContaining({ agentId: "" })]);
    const before = row(INSTALL);
    expect(before.dataset.state).toBe("pending");

    feed.changed(
      command({ id: INSTALL, agentId: WEB, type: CommandType.INSTALL_UPDATES, state: CommandState.SUCCEEDED, createTime: ago(30_000), result: { outcome: CommandOutcome.SUCCEEDED, message: "installed 1, failed 0, skipped 0" } }),
      command({ id: NEW, agentId: DB, type: CommandType.REBOOT, state: CommandState.PENDING, createTime: ago(0), createdBy: "ops-key", createdByKind: CommandCreator.ADMIN_KEY }),
    );
    await waitFor(() => expect(rowIds()).toEqual([NEW, INSTALL, FAILED, SCAN]));
    // The same row, changed where it is.
    expect(row(INSTALL)).toBe(before);
    expect(before.dataset.state).toBe("succeeded");
    expect(before.textContent).toContain("installed 1, failed 0, skipped 0");
    expect(row(NEW).textContent).toContain("reboot");
    expect(row(NEW).textContent).toContain("db-1");
    expect(row(NEW).textContent).toContain("ops-key (admin key)");
  });

  it("never takes a row back to an earlier state when a late event arrives", async () => {
    const feed = new EventFeed();
    const done = command({ id: SCAN, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED, result: { outcome: CommandOutcome.SUCCEEDED, message: "3 updates found" } });
    const { routes } = server({ feed, commands: [done] });
    renderWithApi(Activity, routes);
    await screen.findByTestId("live");
    await waitFor(() => expect(rowIds()).toEqual([SCAN]));
    feed.changed(command({ id: SCAN, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.SENT }), command({ id: NEW, agentId: WEB, type: CommandType.COLLECT_SPECS, state: CommandState.PENDING }));
    await waitFor(() => expect(rowIds()).toEqual([NEW, SCAN]));
    expect(row(SCAN).dataset.state).toBe("succeeded");
  });

  it("shows the server's words when a retry is refused, and changes nothing", async () => {
    const feed = new EventFeed();
    // The row still says failed, but someone retried it meanwhile and it succeeded.
    const stale = command({ id: SCAN, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.FAILED, result: { outcome: CommandOutcome.FAILED, message: "timeout" } });
    const { routes, retried, set } = server({ feed, commands: [stale] });
    renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([SCAN]));
    set(evolve(stale, { state: CommandState.SUCCEEDED, result: { outcome: CommandOutcome.SUCCEEDED, message: "3 updates found" } }));
    await fireEvent.click(screen.getByRole("button", { name: "Retry scan updates on db-1" }));
    expect((await screen.findByRole("alert")).textContent).toBe(
      `command ${SCAN} is succeeded; only a failed, timed-out, rejected or cancelled command can be retried`,
    );
    expect(retried).toEqual([SCAN]);
    expect(rowIds()).toEqual([SCAN]);
    expect(notices.list).toEqual([]);
  });

  it("retries a failed command and cancels a pending one", async () => {
    const feed = new EventFeed();
    const { routes } = server({ feed });
    renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([INSTALL, FAILED, SCAN]));
    // Only what the state allows: cancel while pending, retry once unsuccessful.
    expect(within(row(INSTALL)).queryByRole("button", { name: /Retry/ })).toBeNull();
    expect(within(row(SCAN)).queryByRole("button")).toBeNull();

    await fireEvent.click(within(row(FAILED)).getByRole("button", { name: "Retry scan updates on db-1" }));
    await waitFor(() => expect(rowIds()).toEqual([NEW, INSTALL, FAILED, SCAN]));
    expect(row(NEW).dataset.state).toBe("pending");
    expect(notices.list.map((n) => n.text)).toEqual(["Retry queued: scan updates on db-1"]);

    await fireEvent.click(within(row(INSTALL)).getByRole("button", { name: "Cancel install updates on web-1" }));
    await waitFor(() => expect(row(INSTALL).dataset.state).toBe("cancelled"));
    // A cancelled command can be queued again.
    expect(within(row(INSTALL)).getByRole("button", { name: "Retry install updates on web-1" })).toBeTruthy();
    expect(notices.list.map((n) => n.text)).toContain("Cancelled install updates on web-1");
  });

  it("shows viewers the feed without any action", async () => {
    signIn(Role.VIEWER);
    const feed = new EventFeed();
    const { routes } = server({ feed });
    renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([INSTALL, FAILED, SCAN]));
    expect(screen.queryAllByRole("button").map((b) => b.textContent)).toEqual([]);
  });

  it("offers the retry of a failed agent upgrade to admins only (the server refuses operators)", async () => {
    const feed = new EventFeed();
    const upgrade = command({ id: FAILED, agentId: DB, type: CommandType.UPDATE_AGENT, state: CommandState.FAILED, result: { outcome: CommandOutcome.FAILED, message: "HTTP 404" } });
    const { routes } = server({ feed, commands: [upgrade] });
    const view = renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([FAILED]));
    expect(within(row(FAILED)).queryByRole("button", { name: /Retry/ })).toBeNull();
    view.unmount();

    signIn(Role.ADMIN);
    renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([FAILED]));
    expect(within(row(FAILED)).getByRole("button", { name: "Retry update agent on db-1" })).toBeTruthy();
  });

  it("takes its filters from the URL and writes changes back", async () => {
    setTestUrl(`/activity?agent=${DB}&state=failed`);
    const feed = new EventFeed();
    const { routes, lists, watches } = server({ feed });
    renderWithApi(Activity, routes);
    await waitFor(() => expect(rowIds()).toEqual([FAILED]));
    expect(lists[0]).toMatchObject({ agentId: DB, state: CommandState.FAILED, pageSize: 50 });
    await waitFor(() => expect(watches[0]).toMatchObject({ agentId: DB }));
    // A pending command of the same agent does not match "failed": not added.
    feed.changed(command({ id: NEW, agentId: DB, type: CommandType.REBOOT, state: CommandState.PENDING }));
    await new Promise((r) => setTimeout(r, 50));
    expect(rowIds()).toEqual([FAILED]);

    const host = screen.getByLabelText("Host") as HTMLSelectElement;
    expect(host.value).toBe(DB);
    expect((screen.getByLabelText("State") as HTMLSelectElement).value).toBe("failed");
    await fireEvent.change(screen.getByLabelText("State"), { target: { value: "timed_out" } });
    expect(navigations.at(-1)).toBe(`http://console.test/activity?agent=${DB}&state=timed_out`);
    await fireEvent.click(screen.getByRole("button", { name: "Clear filters" }));
    expect(navigations.at(-1)).toBe("http://console.test/activity");
  });

  it("reads the list again when the server says it may have missed changes", async () => {
    const feed = new EventFeed();
    const commands = [command({ id: SCAN, agentId: DB, type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED, createTime: ago(600_000) })];
    const { routes, lists } = server({ feed, commands });
    renderWithApi(Activity, routes);
    await screen.findByTestId("live");
    await waitFor(() => expect(rowIds()).toEqual([SCAN]));
    // Queued through another replica while this one's link was down: no event ever came.
    commands.unshift(command({ id: NEW, agentId: WEB, type: CommandType.COLLECT_SPECS, state: CommandState.PENDING, createTime: ago(0) }));
    const before = lists.length;
    feed.push({ kind: "resync", time: ago(0) });
    await waitFor(() => expect(rowIds()).toEqual([NEW, SCAN]));
    expect(lists.length).toBe(before + 1);
    expect(screen.getByTestId("live").textContent).toContain("Live");
  });

  it("says it is reconnecting when the feed drops, then reloads and goes live again", async () => {
    const feed = new EventFeed();
    let calls = 0;
    const { routes, lists } = server({
      feed,
      async *watch(_req, signal) {
        calls++;
        if (calls === 1) {
          yield { kind: "keepalive" };
          throw new ConnectError("upstream connect error or disconnect/reset before headers", Code.Unavailable);
        }
        yield* feed.stream(signal);
      },
    });
    renderWithApi(Activity, routes);
    await waitFor(() => expect(screen.getByTestId("live").textContent).toContain("Reconnecting…"));
    await waitFor(() => expect(screen.getByTestId("live").textContent).toContain("Live"), { timeout: 3000 });
    expect(calls).toBe(2);
    expect(lists.length).toBeGreaterThanOrEqual(2);
    expect(rowIds()).toEqual([INSTALL, FAILED, SCAN]);
  });

  it("explains an empty feed", async () => {
    const { routes } = server({ feed: new EventFeed(), commands: [] });
    renderWithApi(Activity, routes);
    expect((await screen.findByTestId("empty")).textContent).toContain("No commands yet.");
  });
});

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { OsFamily } from "@redflag/gen/common_pb";
import { AgentHealth, AgentSort, FleetService, type Agent, type ListAgentsRequest } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { UpdateService, type InstallApprovedUpdatesRequest } from "@redflag/gen/update_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { agentDecommissioned, checkTags, notFound } from "#lib/testing/server-rules.ts";
import Agents from "./+page.svelte";

const id = (n: number) => `0b7c2f0e-3a55-4d1e-9a8e-${String(n).padStart(12, "0")}`;
const minutesAgo = (m: number) => timestampFromDate(new Date(Date.now() - m * 60_000));
const FAMILY: Record<number, string> = { [OsFamily.LINUX]: "linux", [OsFamily.WINDOWS]: "windows" };

function agent(n: number, over: Partial<Agent> = {}): Agent {
  return {
    $typeName: "redflag.v1.Agent",
    upgradeRequired: false,
    rebootRequired: false,
    id: id(n),
    hostname: `host-${String(n).padStart(2, "0")}`,
    machineId: "",
    os: { $typeName: "redflag.v1.OsInfo", family: OsFamily.LINUX, name: "Debian GNU/Linux", version: "12 (bookworm)", kernel: "", arch: "x86_64" },
    agentVersion: "0.4.0",
    health: AgentHealth.ONLINE,
    registerTime: minutesAgo(10_000 - n),
    lastSeenTime: minutesAgo(3),
    registrationTokenId: "",
    pendingUpdateCount: 0,
    securityUpdateCount: 0,
    lastScanTime: minutesAgo(60),
    tags: [],
    group: "",
    updatesBySeverity: {},
    ...over,
  };
}

// A fleet server in memory, answering as the control plane does: filters, search in hostname
// and OS name, sorting with the ID as tie-break, pages of page_size with the last ID as token,
// the same refusals for decommissioned agents and bad tags.
function server(fleet: Agent[]) {
  const requests: ListAgentsRequest[] = [];
  const scans: string[] = [];
  const labels: { agentId: string; tags: string[]; group: string }[] = [];
  const installs: InstallApprovedUpdatesRequest[] = [];
  const decommissioned = new Set<string>();
  const routes = (router: ConnectRouter) => {
    router.service(FleetService, {
      listAgents(req) {
        requests.push(req);
        let rows = fleet.filter(
          (a) =>
            (req.health === AgentHealth.UNSPECIFIED || a.health === req.health) &&
            (req.osFamily === OsFamily.UNSPECIFIED || FAMILY[a.os!.family] === FAMILY[req.osFamily]) &&
            (!req.tag || a.tags.includes(req.tag)) &&
            (!req.group || a.group === req.group) &&
            (!req.search || a.hostname.toLowerCase().includes(req.search.toLowerCase()) || a.os!.name.toLowerCase().includes(req.search.toLowerCase())),
        );
        const key = (a: Agent) =>
          req.sort === AgentSort.LAST_SEEN ? Number(a.lastSeenTime?.seconds ?? 0n) : req.sort === AgentSort.REGISTERED ? Number(a.registerTime!.seconds) : a.hostname;
        rows = rows.sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : x.id < y.id ? -1 : 1) * (req.descending ? -1 : 1));
        const size = req.pageSize || 50;
        const start = req.pageToken ? rows.findIndex((a) => a.id === atob(req.pageToken)) + 1 : 0;
        const page = rows.slice(start, start + size);
        return { agents: page, nextPageToken: start + size < rows.length ? btoa(page.at(-1)!.id) : "" };
      },
      triggerScan(req) {
        if (!fleet.some((a) => a.id === req.agentId)) throw notFound("agent", req.agentId);
        if (decommissioned.has(req.agentId)) throw agentDecommissioned(req.agentId);
        scans.push(req.agentId);
        return { command: { id: crypto.randomUUID(), agentId: req.agentId } };
      },
      setAgentLabels(req) {
        const a = fleet.find((x) => x.id === req.agentId);
        if (!a) throw notFound("agent", req.agentId);
        const tags = checkTags(req.tags);
        labels.push({ agentId: req.agentId, tags: req.tags, group: req.group });
        a.tags = tags;
        a.group = req.group;
        return { agent: a };
      },
    });
    router.service(UpdateService, {
      installApprovedUpdates(req) {
        installs.push(req);
        const withUpdates = fleet.filter((a) => req.selection!.agentIds.includes(a.id) && a.pendingUpdateCount > 0);
        return {
          commands: withUpdates.map((a) => ({ id: crypto.randomUUID(), agentId: a.id })),
          packages: withUpdates.reduce((n, a) => n + a.pendingUpdateCount, 0),
        };
      },
    });
  };
  return { routes, requests, scans, labels, installs, decommissioned };
}

const as = (role: Role) => {
  session.principal = { $typeName: "redflag.v1.Principal", kind: "session", role, credentialName: "", user: undefined } as never;
};
// What SvelteKit does after goto(): the page's URL becomes the new one.
const followNavigation = () => setTestUrl(navigations.at(-1)!);
const rowOf = (hostname: string) => screen.getAllByTestId("agent").find((r) => r.textContent?.includes(hostname))!;

describe("the agents page", () => {
  beforeEach(() => {
    navigations.length = 0;
    notices.list = [];
    setTestUrl("/agents");
    as(Role.OPERATOR);
  });

  it("sends the URL's search, filters and sort to ListAgents and renders the rows", async () => {
    const fleet = [
      agent(1, { hostname: "web-db-1", tags: ["db"], group: "prod", health: AgentHealth.OFFLINE, lastSeenTime: minutesAgo(90), pendingUpdateCount: 7, securityUpdateCount: 2 }),
      agent(2, { hostname: "web-db-2", tags: ["db"], group: "prod", health: AgentHealth.OFFLINE, lastSeenTime: minutesAgo(3), lastScanTime: undefined }),
      agent(3, { hostname: "mail-1", tags: ["db"], group: "prod", health: AgentHealth.OFFLINE }),
    ];
    const s = server(fleet);
    setTestUrl("/agents?search=web&health=offline&os=linux&tag=db&group=prod&sort=last_seen&order=desc");
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(2));
    expect(s.requests.at(-1)).toMatchObject({
      search: "web",
      health: AgentHealth.OFFLINE,
      osFamily: OsFamily.LINUX,
      tag: "db",
      group: "prod",
      sort: AgentSort.LAST_SEEN,
      descending: true,
      pageSize: 50,
      pageToken: "",
    });
    // Newest first, as asked.
    const rows = screen.getAllByTestId("agent");
    expect(rows.map((r) => r.getAttribute("data-agent-id"))).toEqual([id(2), id(1)]);
    expect(rows.map((r) => r.getAttribute("data-health"))).toEqual(["offline", "offline"]);
    const first = rows[1]!;
    expect(within(first).getByRole("link", { name: "web-db-1" }).getAttribute("href")).toBe(`/agents/${id(1)}`);
    expect(within(first).getByText("1 h ago").getAttribute("title")).toBeTruthy();
    expect(within(first).getByRole("link", { name: "7 pending updates on web-db-1" }).getAttribute("href")).toBe(`/updates?agent=${id(1)}`);
    expect(within(first).getByTestId("security").textContent).toBe("2 security");
    expect(within(rows[0]!).getByTestId("pending").textContent?.trim()).toBe("not scanned");
    expect(within(rows[0]!).getByText("3 min ago")).toBeTruthy();
    expect(screen.getByRole("columnheader", { name: /Last seen/ }).getAttribute("aria-sort")).toBe("descending");
    expect(screen.getByRole("columnheader", { name: /Hostname/ }).getAttribute("aria-sort")).toBeNull();
    expect((screen.getByLabelText("Search") as HTMLInputElement).value).toBe("web");
    expect((screen.getByLabelText("Health") as HTMLSelectElement).value).toBe("offline");
  });

  it("searches a moment after typing, filters and toggles the sort through the URL", async () => {
    const s = server([agent(1, { hostname: "web-1" }), agent(2, { hostname: "db-1", health: AgentHealth.NEVER_REPORTED, lastSeenTime: undefined }), agent(3, { hostname: "db-2" })]);
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(3));
    expect(s.requests).toHaveLength(1);

    await fireEvent.input(screen.getByLabelText("Search"), { target: { value: "d" } });
    await fireEvent.input(screen.getByLabelText("Search"), { target: { value: "db" } });
    // One navigation for the whole word, after the pause.
    await waitFor(() => expect(navigations).toEqual(["/agents?search=db"]));
    followNavigation();
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(2));
    expect(s.requests.at(-1)).toMatchObject({ search: "db", sort: AgentSort.HOSTNAME, descending: false });

    await fireEvent.change(screen.getByLabelText("Health"), { target: { value: "never_reported" } });
    expect(navigations.at(-1)).toBe("/agents?search=db&health=never_reported");
    followNavigation();
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(1));
    expect(s.requests.at(-1)).toMatchObject({ search: "db", health: AgentHealth.NEVER_REPORTED });
    expect(screen.getByTestId("agent").getAttribute("data-health")).toBe("never reported");
    expect(screen.getByTestId("agent").textContent).toContain("never");

    // Hostname is the default sort: one click reverses it, another turns it back.
    expect(screen.getByRole("columnheader", { name: /Hostname/ }).getAttribute("aria-sort")).toBe("ascending");
    await fireEvent.click(screen.getByRole("button", { name: /Hostname/ }));
    expect(navigations.at(-1)).toBe("/agents?search=db&health=never_reported&order=desc");
    followNavigation();
    await waitFor(() => expect(s.requests.at(-1)).toMatchObject({ sort: AgentSort.HOSTNAME, descending: true }));
    expect(screen.getByRole("columnheader", { name: /Hostname/ }).getAttribute("aria-sort")).toBe("descending");
    await fireEvent.click(screen.getByRole("button", { name: /Registered/ }));
    expect(navigations.at(-1)).toBe("/agents?search=db&health=never_reported&order=desc&sort=registered");

    await fireEvent.click(screen.getByRole("button", { name: "Clear filters" }));
    expect(navigations.at(-1)).toBe("/agents?order=desc");
  });

  it("loads more agents with the page token", async () => {
    const s = server(Array.from({ length: 60 }, (_, i) => agent(i + 1)));
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(50));
    expect(screen.getByTestId("agent-count").textContent).toBe("50 agents shown, more available");
    await fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(60));
    expect(s.requests.at(-1)!.pageToken).toBe(btoa(id(50)));
    expect(screen.getAllByTestId("agent").at(-1)!.getAttribute("data-agent-id")).toBe(id(60));
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
  });

  it("scans the selected agents and says which one failed and why", async () => {
    const s = server([agent(1, { hostname: "web-1" }), agent(2, { hostname: "web-2" }), agent(3, { hostname: "web-3" })]);
    // Decommissioned by someone else after the list was loaded.
    s.decommissioned.add(id(2));
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(3));
    const scan = screen.getByRole("button", { name: "Scan now" }) as HTMLButtonElement;
    expect(scan.disabled).toBe(true);
    await fireEvent.click(screen.getByLabelText("Select web-1"));
    await fireEvent.click(screen.getByLabelText("Select web-2"));
    expect(screen.getByTestId("selected-count").textContent).toBe("2 agents selected");
    await fireEvent.click(scan);

    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toBe(`No scan queued for 1 of 2 agents. web-2: agent ${id(2)} is decommissioned`);
    expect(s.scans).toEqual([id(1)]);
    expect(notices.list.map((n) => [n.kind, n.text])).toEqual([
      ["ok", "Scan queued for web-1"],
      ["error", "Scan failed for 1 agent; the reason is shown above the list."],
    ]);
    // The one that failed stays selected.
    expect((screen.getByLabelText("Select web-2") as HTMLInputElement).checked).toBe(true);
    expect((screen.getByLabelText("Select web-1") as HTMLInputElement).checked).toBe(false);
  });

  it("asks before approving and installing everything pending on the selected agents", async () => {
    const s = server([agent(1, { hostname: "web-1", pendingUpdateCount: 4 }), agent(2, { hostname: "web-2", pendingUpdateCount: 0 }), agent(3, { hostname: "web-3", pendingUpdateCount: 9 })]);
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(3));
    await fireEvent.click(screen.getByLabelText("Select web-1"));
    await fireEvent.click(screen.getByLabelText("Select web-2"));
    await fireEvent.click(screen.getByRole("button", { name: "Approve & install all pending" }));
    expect(screen.getByRole("group", { name: "Approve & install all pending" }).textContent).toContain("Approve every pending update on 2 agents (4 pending in all)");
    expect(s.installs).toEqual([]);
    await fireEvent.click(screen.getByRole("button", { name: "Approve & install on 2 agents" }));
    await waitFor(() => expect(s.installs).toHaveLength(1));
    expect(s.installs[0]).toMatchObject({ approve: true, selection: { agentIds: [id(1), id(2)], all: false } });
    await waitFor(() => expect(notices.list.map((n) => n.text)).toEqual(["Approved and queued 4 updates on 1 agent; nothing to install on web-2"]));
  });

  it("adds a tag to the selected agents, keeping their tags and group", async () => {
    const s = server([agent(1, { hostname: "web-1", tags: ["eu"], group: "prod" }), agent(2, { hostname: "web-2" })]);
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(2));
    await fireEvent.click(screen.getByLabelText("Select all agents shown"));
    await fireEvent.click(screen.getByRole("button", { name: "Add tag…" }));

    // The server's words for a tag it refuses; nothing changes.
    await fireEvent.input(screen.getByLabelText("Tag to add"), { target: { value: "Kiosk Mode" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add to 2 agents" }));
    expect((await screen.findByRole("alert")).textContent).toBe(
      `Tag “kiosk mode” not added to 2 of 2 agents. web-1, web-2: tag "kiosk mode" must be lower-case letters, digits, '.', '_', ':' or '-' (up to 63)`,
    );
    expect(s.labels).toEqual([]);

    await fireEvent.input(screen.getByLabelText("Tag to add"), { target: { value: "kiosk" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add to 2 agents" }));
    await waitFor(() => expect(s.labels).toHaveLength(2));
    expect(s.labels).toEqual(
      expect.arrayContaining([
        { agentId: id(1), tags: ["eu", "kiosk"], group: "prod" },
        { agentId: id(2), tags: ["kiosk"], group: "" },
      ]),
    );
    await waitFor(() => expect(notices.list.at(-1)?.text).toBe("Tag “kiosk” added to 2 agents"));
    expect(screen.queryByRole("alert")).toBeNull();
    expect(screen.queryByLabelText("Tag to add")).toBeNull();
    expect(within(rowOf("web-1")).getByRole("link", { name: "Agents tagged kiosk" }).getAttribute("href")).toBe("/agents?tag=kiosk");
    expect(within(rowOf("web-1")).getByRole("link", { name: "Agents in group prod" }).getAttribute("href")).toBe("/agents?group=prod");
  });

  it("offers a viewer no selection and no bulk actions", async () => {
    as(Role.VIEWER);
    const s = server([agent(1, { hostname: "web-1" })]);
    renderWithApi(Agents, s.routes);
    await waitFor(() => expect(screen.getAllByTestId("agent")).toHaveLength(1));
    expect(screen.queryByRole("checkbox")).toBeNull();
    expect(screen.queryByRole("button", { name: "Scan now" })).toBeNull();
    expect(screen.queryByRole("button", { name: /Approve/ })).toBeNull();
    expect(screen.queryByRole("button", { name: /Add tag/ })).toBeNull();
  });

  it("explains how to enrol the first machine when there are no agents", async () => {
    as(Role.ADMIN);
    renderWithApi(Agents, server([]).routes);
    const empty = await screen.findByTestId("no-agents");
    expect(within(empty).getByRole("link", { name: "Create a registration token" }).getAttribute("href")).toBe("/tokens");
  });

  it("shows the server's error when the list cannot be loaded", async () => {
    renderWithApi(Agents, (router) =>
      router.service(FleetService, {
        listAgents() {
          throw new ConnectError("search must be at most 100 characters", Code.InvalidArgument);
        },
      }),
    );
    expect((await screen.findByRole("alert")).textContent).toBe("search must be at most 100 characters");
  });
});

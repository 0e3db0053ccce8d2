import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { AuditEntrySchema, AuditService, type AuditEntry, type ListAuditEntriesRequest } from "@redflag/gen/audit_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { RolloutService } from "@redflag/gen/rollout_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Audit from "./+page.svelte";

const AGENT = "5f1c2d3e-0000-4000-8000-00000000abcd";
const GONE = "5f1c2d3e-0000-4000-8000-00000000dead";
const BO = "7a0b1c2d-0000-4000-8000-0000000000b0";
const ROLLOUT = "7a0b1c2d-0000-4000-8000-0000000000c0";

// An AuditService like the control plane's: actor by exact name, action contains, target
// starts with, since as a time; newest first, paged.
function fakeServer(entries: AuditEntry[]) {
  const requests: ListAuditEntriesRequest[] = [];
  // Names for targets: one list per kind, and a single agent when the list misses it.
  const lookups: string[] = [];
  const routes = (router: ConnectRouter) => {
    router.service(FleetService, {
      listAgents() {
        lookups.push("listAgents");
        return { agents: [{ id: AGENT, hostname: "web-1" }] };
      },
      getAgent(req) {
        lookups.push(`getAgent ${req.agentId}`);
        return { agent: { id: req.agentId, hostname: "old-db" } };
      },
    });
    router.service(UserService, {
      listUsers() {
        lookups.push("listUsers");
        return { users: [{ id: BO, username: "bo", displayName: "Bo Berg" }] };
      },
    });
    router.service(RolloutService, {
      listRollouts() {
        lookups.push("listRollouts");
        return { rollouts: [{ id: ROLLOUT, spec: { name: "openssl in rings" } }] };
      },
    });
    router.service(AuditService, {
      listAuditEntries(req) {
        requests.push(req);
        const since = req.since ? timestampDate(req.since).getTime() : undefined;
        const all = entries.filter(
          (e) =>
            (!req.actorName || e.actorName === req.actorName) &&
            (!req.action || e.action.includes(req.action)) &&
            (!req.target || e.target.startsWith(req.target)) &&
            (since === undefined || timestampDate(e.time!).getTime() >= since),
        );
        const start = req.pageToken ? Number(req.pageToken) : 0;
        const size = req.pageSize || 50;
        return { entries: all.slice(start, start + size), nextPageToken: start + size < all.length ? String(start + size) : "" };
      },
    });
  };
  return { routes, requests, lookups };
}

const entry = (i: number, over: { actorKind?: string; actorName?: string; action?: string; target?: string; beforeJson?: string; afterJson?: string; outcome?: string } = {}) =>
  create(AuditEntrySchema, {
    id: String(1000 - i),
    time: timestampFromDate(new Date(Date.now() - (i + 1) * 60_000)),
    actorKind: "session",
    actorId: "u-ana",
    actorName: "ana",
    action: "redflag.v1.FleetService/SetAgentLabels",
    target: `agent:${AGENT}`,
    remoteAddr: "192.0.2.10",
    beforeJson: JSON.stringify({ group: "lab", tags: [] }),
    afterJson: JSON.stringify({ group: "prod", tags: ["web"] }),
    outcome: "ok",
    ...over,
  });

describe("the audit log", () => {
  beforeEach(() => {
    setTestUrl("/audit");
    navigations.length = 0;
    session.principal = { kind: "session", role: Role.ADMIN, user: { username: "ana" } } as never;
  });

  it("is for admins only and says so", async () => {
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
    const server = fakeServer([entry(0)]);
    renderWithApi(Audit, server.routes);
    expect(screen.getByText("Only admins can read the audit log.")).toBeTruthy();
    await new Promise((r) => setTimeout(r, 20));
    expect(server.requests).toEqual([]);
  });

  it("turns the filters in the URL into the request", async () => {
    setTestUrl("/audit?actor=ana&action=SetAgentLabels&target=agent%3A&since=24h");
    const server = fakeServer([entry(0)]);
    renderWithApi(Audit, server.routes);
    await screen.findByTestId("audit-entry");
    const req = server.requests[0]!;
    expect(req).toMatchObject({ actorName: "ana", action: "SetAgentLabels", target: "agent:", pageToken: "" });
    const since = timestampDate(req.since!).getTime();
    expect(Math.abs(since - (Date.now() - 86_400_000))).toBeLessThan(5000);
    expect((screen.getByLabelText("Actor") as HTMLInputElement).value).toBe("ana");
    expect((screen.getByLabelText("Since") as HTMLSelectElement).value).toBe("24h");
  });

  it("puts what is typed and picked into the URL", async () => {
    const server = fakeServer([entry(0)]);
    renderWithApi(Audit, server.routes);
    await screen.findByTestId("audit-entry");
    expect(server.requests[0]).toMatchObject({ actorName: "", action: "", target: "" });
    expect(server.requests[0]!.since).toBeUndefined();
    await fireEvent.input(screen.getByLabelText("Actor"), { target: { value: " bo " } });
    await fireEvent.input(screen.getByLabelText("Target"), { target: { value: "user:" } });
    await fireEvent.click(screen.getByRole("button", { name: "Filter" }));
    expect(navigations.at(-1)).toBe("/audit?actor=bo&target=user%3A");
    await fireEvent.change(screen.getByLabelText("Since"), { target: { value: "7d" } });
    expect(navigations.at(-1)).toBe("/audit?actor=bo&target=user%3A&since=7d");

    setTestUrl("/audit?actor=bo&target=user%3A&since=7d");
    await waitFor(() => expect(server.requests.at(-1)).toMatchObject({ actorName: "bo", target: "user:" }));
    expect(await screen.findByText("No entries match these filters.")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: "Clear filters" }));
    expect(navigations.at(-1)).toBe("/audit");
  });

  it("names targets (people, agents, rollouts) with one lookup per kind, not one per row", async () => {
    const server = fakeServer([
      entry(0, { target: `user:${BO}` }),
      entry(1, { target: `user:${BO}` }),
      entry(2),
      entry(3),
      entry(4, { target: `agent:${GONE}` }),
      entry(5, { target: "settings" }),
      entry(6, { target: `rollout:${ROLLOUT}` }),
    ]);
    renderWithApi(Audit, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("audit-target").map((t) => t.textContent)).toEqual(["Bo Berg (bo)", "Bo Berg (bo)", "web-1", "web-1", "old-db", "openssl in rings"]));
    const rows = screen.getAllByTestId("audit-entry");
    expect(within(rows[0]!).getByRole("link", { name: "Bo Berg (bo)" }).getAttribute("href")).toBe("/settings?tab=people");
    expect(rows[0]!.textContent).toMatch(/user\s*Bo Berg/);
    expect(rows[5]!.textContent).toContain("settings");
    expect(within(rows[6]!).getByRole("link", { name: "openssl in rings" }).getAttribute("href")).toBe(`/rollouts?id=${ROLLOUT}`);
    // One list of people, one of agents, and the one agent that list did not have; one of rollouts.
    expect(server.lookups.sort()).toEqual(["getAgent " + GONE, "listAgents", "listRollouts", "listUsers"]);
  });

  it("shows each row's actor, action, target link and outcome, and expands before and after side by side", async () => {
    renderWithApi(
      Audit,
      fakeServer([
        entry(0),
        entry(1, { actorKind: "anonymous", actorName: "mallory", action: "redflag.v1.AuthService/Login", target: "username:mallory", outcome: "wrong username or password", beforeJson: "", afterJson: "" }),
      ]).routes,
    );
    const [labels, login] = await waitFor(() => {
      const rows = screen.getAllByTestId("audit-entry");
      expect(rows).toHaveLength(2);
      return rows;
    });
    expect(labels!.textContent).toMatch(/person\s*ana/);
    expect(labels!.textContent).toContain("SetAgentLabels");
    expect(labels!.textContent).toContain("FleetService");
    // The target by name, linked to its page; the raw target stays in the title.
    const target = await within(labels!).findByRole("link", { name: "web-1" });
    expect(target.getAttribute("href")).toBe(`/agents/${AGENT}`);
    expect(target.getAttribute("title")).toBe(`agent:${AGENT}`);
    expect(within(labels!).getByText("ok")).toBeTruthy();
    expect(login!.textContent).toMatch(/anonymous\s*mallory/);
    expect(login!.dataset.outcome).toBe("wrong username or password");
    expect(within(login!).queryByRole("link")).toBeNull();
    // Nothing to expand without before or after.
    expect(within(login!).queryByRole("button")).toBeNull();

    const toggle = within(labels!).getByRole("button", { name: /Show the changes of SetAgentLabels/ });
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(screen.queryByTestId("audit-detail")).toBeNull();
    await fireEvent.click(toggle);
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    const detail = screen.getByTestId("audit-detail");
    expect(toggle.getAttribute("aria-controls")).toBe(detail.id);
    expect(within(detail).getByTestId("audit-before").textContent).toBe(JSON.stringify({ group: "lab", tags: [] }, null, 2));
    expect(within(detail).getByTestId("audit-after").textContent).toBe(JSON.stringify({ group: "prod", tags: ["web"] }, null, 2));
    await fireEvent.click(within(labels!).getByRole("button", { name: /Hide the changes/ }));
    expect(screen.queryByTestId("audit-detail")).toBeNull();
  });

  it("loads more entries on request", async () => {
    const server = fakeServer(Array.from({ length: 70 }, (_, i) => entry(i)));
    renderWithApi(Audit, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("audit-entry")).toHaveLength(50));
    await fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(screen.getAllByTestId("audit-entry")).toHaveLength(70));
    expect(server.requests.at(-1)!.pageToken).toBe("50");
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
  });
});

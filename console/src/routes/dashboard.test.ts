import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { CommandOutcome, CommandType, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { AgentHealth, FleetService } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { ReportService, type GetFleetOverviewResponse } from "@redflag/gen/report_service_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GetFleetOverviewResponseSchema } from "@redflag/gen/report_service_pb";
import { screen, waitFor, within } from "@testing-library/svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { notFound } from "#lib/testing/server-rules.ts";
import { session } from "#lib/session.svelte.ts";
import Dashboard from "./+page.svelte";

const WEB1 = "0b7c2f0e-3a55-4d1e-9a8e-1f2b3c4d5e01";
const DB1 = "0b7c2f0e-3a55-4d1e-9a8e-1f2b3c4d5e02";
const day = (n: number) => timestampFromDate(new Date(Date.UTC(2026, 10, 18 + n)));

// What GetFleetOverview answers, as the proto describes it: every health state with zeros,
// decommissioned last; severities most severe first, only those with updates; 14 days oldest
// first, quiet days included.
type Overview = MessageInitShape<typeof GetFleetOverviewResponseSchema>;
function fleet(over: Partial<Overview> = {}): Overview {
  return ({
    generateTime: timestampFromDate(new Date()),
    health: [
      { health: AgentHealth.ONLINE, count: 3 },
      { health: AgentHealth.OFFLINE, count: 1 },
      { health: AgentHealth.STALE, count: 0 },
      { health: AgentHealth.NEVER_REPORTED, count: 1 },
      { health: AgentHealth.DECOMMISSIONED, count: 2 },
    ],
    totalAgents: 5,
    pendingBySeverity: [
      { severity: UpdateSeverity.CRITICAL, count: 2 },
      { severity: UpdateSeverity.SECURITY, count: 5 },
      { severity: UpdateSeverity.LOW, count: 11 },
    ],
    pendingUpdates: 18,
    securityUpdates: 7,
    agentsWithUpdates: 3,
    rebootRequired: [{ id: DB1, hostname: "db-1", health: AgentHealth.ONLINE, os: { name: "Debian GNU/Linux", version: "12 (bookworm)" } }],
    rebootRequiredCount: 1,
    recentFailures: [
      {
        id: "c0ffee00-0000-4000-8000-000000000001",
        agentId: WEB1,
        type: CommandType.INSTALL_UPDATES,
        state: CommandState.FAILED,
        createTime: timestampFromDate(new Date(Date.now() - 3_600_000)),
        finishTime: timestampFromDate(new Date(Date.now() - 3_500_000)),
        result: { outcome: CommandOutcome.FAILED, message: "dpkg was interrupted, run 'dpkg --configure -a'" },
      },
      {
        id: "c0ffee00-0000-4000-8000-000000000002",
        agentId: DB1,
        type: CommandType.SCAN_UPDATES,
        state: CommandState.TIMED_OUT,
        createTime: timestampFromDate(new Date(Date.now() - 7_200_000)),
        finishTime: timestampFromDate(new Date(Date.now() - 7_000_000)),
      },
    ],
    daily: Array.from({ length: 14 }, (_, i) => ({
      day: day(i),
      updatesFound: i === 13 ? 6 : 0,
      updatesInstalled: i === 12 ? 4 : 0,
      updatesFailed: 0,
      commandsSucceeded: i >= 12 ? 24 : 0,
      commandsFailed: i === 13 ? 2 : 0,
    })),
    agentsByOs: [
      { label: "Debian GNU/Linux 12 (bookworm)", count: 4 },
      { label: "Windows 11 Pro 23H2", count: 1 },
    ],
    agentsByVersion: [{ label: "0.4.0", count: 5 }],
    ...over,
  }) as Overview;
}

function routes(overview: () => Overview | Promise<never>, calls: { days: number }[] = []) {
  return (router: ConnectRouter) => {
    router.service(ReportService, {
      getFleetOverview(req) {
        calls.push({ days: req.days });
        return overview() as GetFleetOverviewResponse;
      },
    });
    router.service(FleetService, {
      getAgent(req) {
        const hostname = { [WEB1]: "web-1", [DB1]: "db-1" }[req.agentId];
        if (!hostname) throw notFound("agent", req.agentId);
        return { agent: { id: req.agentId, hostname } };
      },
    });
  };
}

describe("the dashboard", () => {
  beforeEach(() => {
    setTestUrl("/");
    session.principal = { $typeName: "redflag.v1.Principal", kind: "session", role: Role.OPERATOR, credentialName: "", user: undefined } as never;
  });
  afterEach(() => vi.useRealTimers());

  it("never counts an agent that has not reported as online, and says so in the headline", async () => {
    const calls: { days: number }[] = [];
    renderWithApi(Dashboard, routes(() => fleet(), calls));
    expect((await screen.findByTestId("fleet-headline")).textContent?.trim()).toBe("3 of 5 agents online");
    expect(calls).toEqual([{ days: 14 }]);
    expect(screen.getByTestId("health-online").textContent).toBe("3");
    expect(screen.getByTestId("health-offline").textContent).toBe("1");
    expect(screen.getByTestId("health-never-reported").textContent).toBe("1");
    expect(screen.getByTestId("health-decommissioned").textContent).toBe("2");
    // The never-reported card is marked as needing attention, like offline; online is not.
    const never = screen.getByRole("link", { name: /^never reported 1 / });
    expect(never.getAttribute("href")).toBe("/agents?health=never_reported");
    expect(never.textContent).toContain("needs attention");
    expect(screen.getByRole("link", { name: /^online 3 / }).textContent).not.toContain("needs attention");
  });

  it("shows pending updates by severity, reboots, recent failures and the history", async () => {
    renderWithApi(Dashboard, routes(() => fleet()));
    expect((await screen.findByTestId("pending-critical")).textContent).toBe("2");
    expect(screen.getByTestId("pending-critical").closest("a")?.getAttribute("href")).toBe("/updates?severity=critical");
    expect(screen.getByTestId("pending-low").closest("a")?.getAttribute("href")).toBe("/updates?severity=low");
    expect(screen.getByTestId("pending-total").textContent).toBe("18");
    expect(screen.getByTestId("security-updates").textContent).toBe("7");
    expect(screen.getByTestId("security-updates").closest("a")?.getAttribute("href")).toBe("/updates?security=1");

    expect(screen.getByTestId("reboot-count").textContent).toBe("1");
    const reboot = screen.getByTestId("reboot-host");
    expect(within(reboot).getByRole("link", { name: "db-1" }).getAttribute("href")).toBe(`/agents/${DB1}`);

    const failures = screen.getAllByTestId("recent-failure");
    expect(failures).toHaveLength(2);
    // The host's name is looked up from the agent ID the command carries.
    await waitFor(() => expect(within(failures[0]!).getByRole("link", { name: "web-1" }).getAttribute("href")).toBe(`/agents/${WEB1}`));
    expect(within(failures[0]!).getByRole("link", { name: "install updates" }).getAttribute("href")).toBe("/activity/c0ffee00-0000-4000-8000-000000000001");
    expect(failures[0]!.textContent).toContain("dpkg was interrupted");
    expect(failures[0]!.textContent).toContain("58 min ago");
    expect(failures[1]!.textContent).toContain("timed out");
    expect(failures[1]!.textContent).toContain("No result arrived before the timeout.");

    // 48 succeeded, 2 failed: 96 %.
    expect(screen.getByTestId("command-success-rate").textContent).toBe("96 %");
    expect(screen.getByText(/of 50 commands succeeded over 14 days/)).toBeTruthy();
    expect(screen.getByRole("img", { name: "Updates found and installed per day: 10 in all" })).toBeTruthy();
    expect(screen.getByRole("img", { name: "Commands finished per day: 50 in all" })).toBeTruthy();
    const text = (li: HTMLElement) => li.textContent?.replace(/\s+/g, " ").trim();
    expect(screen.getAllByTestId("agents-by-os").map(text)).toEqual(["Debian GNU/Linux 12 (bookworm) 4", "Windows 11 Pro 23H2 1"]);
    expect(screen.getAllByTestId("agents-by-version").map(text)).toEqual(["0.4.0 5"]);
  });

  it("shows the server's words when it refuses the overview", async () => {
    renderWithApi(Dashboard, routes(() => Promise.reject(new ConnectError("this method is not available", Code.PermissionDenied))));
    expect((await screen.findByRole("alert")).textContent).toBe("Not allowed: this method is not available");
    expect(screen.queryByTestId("fleet-headline")).toBeNull();
    expect(screen.queryByTestId("first-run")).toBeNull();
  });

  it("explains the first run and sends an admin to the tokens page", async () => {
    session.principal = { $typeName: "redflag.v1.Principal", kind: "session", role: Role.ADMIN, credentialName: "", user: undefined } as never;
    const empty = fleet({
      health: [AgentHealth.ONLINE, AgentHealth.OFFLINE, AgentHealth.STALE, AgentHealth.NEVER_REPORTED, AgentHealth.DECOMMISSIONED].map((health) => ({ health, count: 0 })),
      totalAgents: 0,
      pendingBySeverity: [],
      pendingUpdates: 0,
      securityUpdates: 0,
      rebootRequired: [],
      rebootRequiredCount: 0,
      recentFailures: [],
      agentsByOs: [],
      agentsByVersion: [],
    });
    renderWithApi(Dashboard, routes(() => empty));
    const firstRun = await screen.findByTestId("first-run");
    expect(within(firstRun).getByRole("link", { name: "Enrol your first machine" }).getAttribute("href")).toBe("/tokens");
    expect(screen.queryByTestId("fleet-headline")).toBeNull();
  });

  it("refreshes every 30 seconds", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const calls: { days: number }[] = [];
    let online = 3;
    renderWithApi(Dashboard, routes(() => fleet({ health: [{ health: AgentHealth.ONLINE, count: online }], totalAgents: 5 }), calls));
    expect((await screen.findByTestId("fleet-headline")).textContent?.trim()).toBe("3 of 5 agents online");
    online = 4;
    vi.advanceTimersByTime(30_000);
    await waitFor(() => expect(screen.getByTestId("fleet-headline").textContent?.trim()).toBe("4 of 5 agents online"));
    expect(calls).toHaveLength(2);
  });
});

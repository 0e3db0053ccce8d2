import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  CommandOutcome,
  CommandType,
  PackageChangeKind,
  PackageChangeSchema,
  PackageResultState,
  SubsystemRunState,
  UpdateSeverity,
} from "@redflag/gen/command_pb";
import { CommandCreator, CommandService, CommandState, type CommandInfo, type CreateCommandRequest } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { cleanup, fireEvent, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import CommandPage from "./+page.svelte";
import { ago, command, EventFeed, evolve, signIn, WEB } from "#lib/testing/fixtures.ts";
import { checkCancellable, checkRetryable, notFound } from "#lib/testing/server-rules.ts";

const ID = "11111111-1111-4111-8111-111111111111";
const RETRY = "22222222-2222-4222-8222-222222222222";
const CONFIRM = "33333333-3333-4333-8333-333333333333";

function server(initial: CommandInfo | undefined, feed = new EventFeed()) {
  let current = initial;
  const created: CreateCommandRequest[] = [];
  const retried: string[] = [];
  const routes = (router: ConnectRouter) => {
    router.service(FleetService, { getAgent: (req) => ({ agent: { id: req.agentId, hostname: "web-1" } }) });
    router.service(CommandService, {
      getCommand(req) {
        if (!current || req.id !== current.id) throw notFound("command", req.id);
        return { command: current };
      },
      watchEvents: (_req, ctx) => feed.stream(ctx.signal),
      retryCommand(req) {
        retried.push(req.id);
        if (!current) throw notFound("command", req.id);
        checkRetryable(current);
        return { command: command({ id: RETRY, agentId: WEB, type: current.type, state: CommandState.PENDING }) };
      },
      cancelCommand(req) {
        if (!current) throw notFound("command", req.id);
        checkCancellable(current);
        current = evolve(current, { state: CommandState.CANCELLED, finishTime: ago(0) });
        return { command: current };
      },
      createCommand(req) {
        created.push(req);
        return { command: command({ id: CONFIRM, agentId: req.agentId, type: CommandType.CONFIRM_DEPENDENCIES, state: CommandState.PENDING }) };
      },
    });
  };
  return { routes, created, retried, feed, set: (c: CommandInfo) => (current = c) };
}

const facts = () => {
  const dl = screen.getByTestId("command-facts");
  const out: Record<string, string> = {};
  dl.querySelectorAll("dt").forEach((dt) => (out[dt.textContent!.trim()] = (dt.nextElementSibling?.textContent ?? "").replace(/\s+/g, " ").trim()));
  return out;
};

describe("one command's page", () => {
  beforeEach(() => {
    navigations.length = 0;
    notices.list = [];
    setTestUrl(`/activity/${ID}`, { id: ID });
    signIn(Role.OPERATOR);
  });

  it("shows a scan's facts, the updates it found and how each subsystem ran", async () => {
    const scan = command({
      id: ID,
      agentId: WEB,
      type: CommandType.SCAN_UPDATES,
      state: CommandState.SUCCEEDED,
      sequence: 42n,
      deliveryCount: 1,
      createdBy: "ops-key",
      createdByKind: CommandCreator.API_TOKEN,
      sendTime: ago(50_000),
      finishTime: ago(40_000),
      result: {
        outcome: CommandOutcome.SUCCEEDED,
        message: "1 update found",
        startTime: ago(49_000),
        finishTime: ago(40_000),
        detail: {
          case: "scanUpdates",
          value: {
            updates: [{ source: "apt", name: "openssl", currentVersion: "3.0.15-1", availableVersion: "3.0.16-1", severity: UpdateSeverity.SECURITY, security: true, repository: "bookworm-security" }],
            subsystems: [
              { subsystem: "apt", state: SubsystemRunState.RAN, updateCount: 1, duration: durationFromMs(2300) },
              { subsystem: "docker", state: SubsystemRunState.NOT_PRESENT, message: "docker is not installed" },
              { subsystem: "snap", state: SubsystemRunState.FAILED, message: "snapd is not running", duration: durationFromMs(120) },
            ],
          },
        },
      },
    });
    const { routes } = server(scan);
    renderWithApi(CommandPage, routes);
    await waitFor(() => expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Scan updates on web-1"));
    expect(facts().Host).toBe("web-1");
    expect(facts()).toMatchObject({ Type: "scan updates", State: "succeeded", Sequence: "42", Deliveries: "1 delivery", ID });
    expect(facts().Created).toContain("by ops-key (API token)");
    expect(facts().Finished).toContain("the agent took 9 s");
    expect(screen.getByTestId("result-message").textContent).toContain("1 update found");
    const cells = (r: HTMLElement) => [...(r as HTMLTableRowElement).cells].map((td) => td.textContent?.trim());
    expect(screen.getAllByTestId("found-update").map(cells)).toEqual([["openssl", "apt", "3.0.15-1 → 3.0.16-1", "security", "bookworm-security"]]);
    // Sources the host does not have are one quiet line, not a row each.
    expect(screen.getAllByTestId("subsystem-run").map((r) => [r.dataset.state, ...cells(r)])).toEqual([
      ["ran", "apt", "scanned", "1", "2.3 s", ""],
      ["failed", "snap", "failed", "0", "0.1 s", "snapd is not running"],
    ]);
    expect(screen.getByTestId("absent-sources").textContent?.trim()).toBe("Not on this host: docker.");
    // Finished and successful: nothing to cancel or retry.
    expect(screen.queryByRole("button", { name: /Retry|Cancel/ })).toBeNull();
  });

  it("shows an install's per-package results, the reboot it needs and the tool output", async () => {
    const install = command({
      id: ID,
      agentId: WEB,
      type: CommandType.CONFIRM_DEPENDENCIES,
      state: CommandState.FAILED,
      sequence: 9n,
      deliveryCount: 2,
      result: {
        outcome: CommandOutcome.FAILED,
        message: "installed 1, failed 1, skipped 1; a reboot is required",
        detail: {
          case: "confirmDependencies",
          value: {
            rebootRequired: true,
            packages: [
              { source: "apt", name: "openssl", fromVersion: "3.0.15-1", toVersion: "3.0.16-1", state: PackageResultState.INSTALLED },
              { source: "apt", name: "libssl3", fromVersion: "3.0.15-1", toVersion: "3.0.16-1", state: PackageResultState.FAILED, reason: "dpkg: error processing package libssl3" },
              { source: "apt", name: "linux-image-amd64", state: PackageResultState.SKIPPED, reason: "held" },
            ],
            output: [{ argv: ["apt-get", "install", "-y", "openssl=3.0.16-1"], exitCode: 100, stderrTail: "E: Sub-process /usr/bin/dpkg returned an error code (1)", duration: durationFromMs(14_000) }],
          },
        },
      },
    });
    const { routes } = server(install);
    renderWithApi(CommandPage, routes);
    await screen.findByTestId("install-counts");
    expect(screen.getByTestId("install-counts").textContent?.replace(/\s+/g, " ").trim()).toBe("1 installed, 1 failed, 1 skipped.");
    expect(screen.getByTestId("reboot-required").textContent).toContain("A reboot is required");
    expect(screen.getAllByTestId("package-result").map((r) => r.dataset.state)).toEqual(["installed", "failed", "skipped"]);
    expect(screen.getAllByTestId("package-result")[1]!.textContent).toContain("dpkg: error processing package libssl3");
    const output = screen.getByTestId("tool-output");
    expect(output.tagName).toBe("DETAILS");
    expect(output.textContent).toContain("apt-get install -y openssl=3.0.16-1");
    expect(output.textContent).toContain("exit 100");
    expect(output.textContent).toContain("14.0 s");
    expect(output.textContent).toContain("returned an error code (1)");
    expect(facts().Deliveries).toBe("2 deliveries (sent again after no answer)");
  });

  it("follows a dry run live until the agent reports, then confirms exactly its changes", async () => {
    const pending = command({ id: ID, agentId: WEB, type: CommandType.DRY_RUN_UPDATE, state: CommandState.PENDING });
    const changes = [
      create(PackageChangeSchema, { kind: PackageChangeKind.UPGRADE, source: "apt", name: "openssl", fromVersion: "3.0.15-1", toVersion: "3.0.16-1", architecture: "amd64" }),
      create(PackageChangeSchema, { kind: PackageChangeKind.DOWNGRADE, source: "apt", name: "libfoo", fromVersion: "2.0", toVersion: "1.9", architecture: "amd64" }),
    ];
    const { routes, feed, created, set } = server(pending);
    renderWithApi(CommandPage, routes);
    expect((await screen.findByTestId("no-result")).textContent).toContain("Waiting for the agent");
    expect(screen.getByRole("button", { name: "Cancel command" })).toBeTruthy();
    expect(screen.getByText("updating live")).toBeTruthy();

    feed.changed(evolve(pending, { state: CommandState.SENT, sequence: 5n, deliveryCount: 1 }));
    await waitFor(() => expect(facts().State).toBe("sent"));
    expect(facts().Sequence).toBe("5");
    const done = evolve(pending, {
      state: CommandState.SUCCEEDED,
      sequence: 5n,
      deliveryCount: 1,
      result: { outcome: CommandOutcome.SUCCEEDED, message: "2 packages would change", detail: { case: "dryRunUpdate", value: { changes } } },
    });
    set(done);
    feed.changed(done);
    await waitFor(() => expect(facts().State).toBe("succeeded"));
    expect(screen.queryByText("updating live")).toBeNull();
    expect(screen.getByRole("region", { name: "Downgrades: 1" }).textContent).toContain("2.0 → 1.9");

    await fireEvent.click(screen.getByRole("button", { name: "Confirm and install exactly these" }));
    await waitFor(() => expect(created.length).toBe(1));
    expect(created[0]!.action).toEqual(expect.objectContaining({ case: "confirmDependencies", value: expect.objectContaining({ dryRunCommandId: ID, changes }) }));
    expect((await screen.findByTestId("confirm-queued")).querySelector("a")?.getAttribute("href")).toBe(`/activity/${CONFIRM}`);
  });

  it("retries an unsuccessful command and goes to the new one", async () => {
    const failed = command({ id: ID, agentId: WEB, type: CommandType.REBOOT, state: CommandState.TIMED_OUT });
    const { routes, retried } = server(failed);
    renderWithApi(CommandPage, routes);
    expect((await screen.findByTestId("no-result")).textContent).toBe("The agent did not report a result in time.");
    await fireEvent.click(screen.getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(navigations).toEqual([`/activity/${RETRY}`]));
    expect(retried).toEqual([ID]);
    expect(notices.list.map((n) => n.text)).toEqual(["Retry queued: reboot on web-1"]);
  });

  it("shows the server's words when a retry is refused", async () => {
    // The page still shows "failed", but the server knows better.
    const failed = command({ id: ID, agentId: WEB, type: CommandType.REBOOT, state: CommandState.FAILED, result: { outcome: CommandOutcome.FAILED, message: "shutdown: not permitted" } });
    const { routes, set } = server(failed);
    renderWithApi(CommandPage, routes);
    await screen.findByTestId("result-message");
    set(evolve(failed, { state: CommandState.SUCCEEDED }));
    await fireEvent.click(screen.getByRole("button", { name: "Retry" }));
    expect((await screen.findByRole("alert")).textContent).toBe(
      `command ${ID} is succeeded; only a failed, timed-out, rejected or cancelled command can be retried`,
    );
    expect(navigations).toEqual([]);
  });

  it("says clearly when there is no such command", async () => {
    const { routes } = server(undefined);
    renderWithApi(CommandPage, routes);
    await waitFor(() => expect(screen.getByRole("heading", { level: 1 }).textContent).toBe("Command not found"));
    expect(screen.getByTestId("not-found").textContent).toContain(ID);
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("offers viewers nothing they cannot do", async () => {
    signIn(Role.VIEWER);
    const done = command({
      id: ID,
      agentId: WEB,
      type: CommandType.DRY_RUN_UPDATE,
      state: CommandState.SUCCEEDED,
      result: { outcome: CommandOutcome.SUCCEEDED, detail: { case: "dryRunUpdate", value: { changes: [{ kind: PackageChangeKind.UPGRADE, source: "apt", name: "openssl", fromVersion: "1", toVersion: "2" }] } } },
    });
    const { routes } = server(done);
    renderWithApi(CommandPage, routes);
    await screen.findByTestId("dry-run-summary");
    expect(screen.queryAllByRole("button")).toEqual([]);

    // Nor a retry of a failed one.
    cleanup();
    renderWithApi(CommandPage, server(command({ id: ID, agentId: WEB, type: CommandType.REBOOT, state: CommandState.FAILED })).routes);
    await screen.findByTestId("no-result");
    expect(screen.queryAllByRole("button")).toEqual([]);
  });
});

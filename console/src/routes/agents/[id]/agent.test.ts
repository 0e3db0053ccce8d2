import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CommandOutcome, CommandResultSchema, CommandType, PackageResultState } from "@redflag/gen/command_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandCreator, CommandInfoSchema, CommandState } from "@redflag/gen/command_service_pb";
import { PrincipalSchema, Role } from "@redflag/gen/identity_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { UpdateStatus } from "@redflag/gen/update_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Page from "./+page.svelte";
import { AGENT_ID, ago, command, defaultSubsystem, disk, fakeServer, sample, update, type FakeOptions } from "#lib/testing/agent-server.ts";

const GiB = 2 ** 30;
const MIN = 60_000;

function open(opts: FakeOptions = {}, role = Role.OPERATOR, id = AGENT_ID) {
  const server = fakeServer(opts);
  session.principal = create(PrincipalSchema, { kind: "session", role, user: { username: "ana" } });
  setTestUrl(`/agents/${id}`, { id });
  const view = renderWithApi(Page, server.routes);
  return { server, view };
}
const loaded = () => screen.findByRole("heading", { level: 1, name: "web-1" });
const calls = (server: ReturnType<typeof fakeServer>, method: string) => server.calls.filter(([m]) => m === method).map(([, req]) => req as Record<string, unknown>);
const rows = (testid: string) => screen.queryAllByTestId(testid);
const noticeTexts = () => notices.list.map((n) => n.text);

describe("the agent page", () => {
  beforeEach(() => {
    notices.list = [];
    session.principal = undefined;
  });

  it("shows the latest system reading, the storage table and sparklines over the samples", async () => {
    open({
      samples: [
        sample(60, 20, 3, [disk("/", 100 * GiB, 50 * GiB), disk("/var", 10 * GiB, 9 * GiB)]),
        sample(30, 31, 4, [disk("/", 100 * GiB, 55 * GiB), disk("/var", 10 * GiB, 9 * GiB)]),
        sample(5, 37.4, 4, [disk("/", 100 * GiB, 60 * GiB), disk("/var", 10 * GiB, 9.5 * GiB, { inodesUsed: 900n })]),
      ],
    });
    await loaded();
    expect((await screen.findByTestId("metric-cpu")).textContent).toBe("37%");
    expect(screen.getByTestId("metric-memory").textContent).toBe("50%");
    const system = screen.getByRole("region", { name: "System" });
    expect(system.textContent).toContain("4 cores");
    expect(system.textContent).toContain("4.0 GiB of 8.0 GiB used");
    expect(system.textContent).toContain("0.42 · 0.30 · 0.25");
    expect(system.textContent).toContain("3 d 4 h");
    expect(system.textContent).toContain("for linux-image-amd64");
    expect(screen.getByText("reboot required")).toBeTruthy();

    // One line per reading series: CPU, memory, then each file system.
    expect(screen.getByRole("img", { name: "CPU: 3 readings, latest 37%" })).toBeTruthy();
    expect(screen.getByRole("img", { name: "Memory: 3 readings, latest 50%" })).toBeTruthy();
    expect(screen.getByRole("img", { name: "/: 3 readings, latest 60%" })).toBeTruthy();
    expect(screen.getByRole("img", { name: "/var: 3 readings, latest 95%" })).toBeTruthy();

    const varRow = screen.getAllByTestId("disk").find((r) => r.dataset.mount === "/var")!;
    const cells = within(varRow).getAllByRole("cell").map((c) => c.textContent?.trim());
    expect(cells).toEqual(["/var", "/dev/sd4", "ext4", "10.0 GiB", "9.5 GiB (95%)", "90%"]);
  });

  it("says when the host did not come back after its reboot", async () => {
    open({ agent: { rebootOverdueSince: timestampFromMs(Date.parse("2026-07-01T11:00:00Z")) } });
    await loaded();
    expect(screen.getByTestId("reboot-overdue").textContent).toMatch(/^not back after reboot since .*2026/);
  });

  it("says how to get readings when there are none yet, and queues that scan", async () => {
    const { server } = open({ samples: [] });
    await loaded();
    expect((await screen.findAllByText(/No system readings yet\. Run a scan with the system and storage subsystems/)).length).toBe(1);
    expect(screen.getByText(/No storage readings yet/)).toBeTruthy();
    expect(screen.queryByTestId("metric-cpu")).toBeNull();
    await fireEvent.click(screen.getAllByRole("button", { name: "Scan system and storage" })[0]!);
    await waitFor(() => expect(calls(server, "triggerScan")).toMatchObject([{ agentId: AGENT_ID, subsystems: ["system", "storage"] }]));
    expect(noticeTexts()).toContain("Scan queued for web-1 (system and storage)");
  });

  it("scans every enabled subsystem, or one from the menu, which the keyboard opens and Escape closes", async () => {
    const { server } = open({ overrides: [{ ...defaultSubsystem("dnf"), enabled: false }] });
    await loaded();
    const toggle = await screen.findByRole("button", { name: "Scan one subsystem of web-1" });
    expect(toggle.getAttribute("aria-expanded")).toBe("false");

    await fireEvent.click(toggle);
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    const menu = document.getElementById(toggle.getAttribute("aria-controls")!)!;
    const items = within(menu).getAllByRole("button").map((b) => b.textContent);
    expect(items).toContain("APT");
    expect(items).not.toContain("DNF"); // turned off for this agent
    await fireEvent.click(within(menu).getByRole("button", { name: "APT" }));
    await waitFor(() => expect(calls(server, "triggerScan")).toMatchObject([{ agentId: AGENT_ID, subsystems: ["apt"] }]));
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(noticeTexts()).toContain("Scan queued for web-1 (APT)");
    // The queued scan is in the history at once.
    await waitFor(() => expect(rows("agent-command").filter((r) => r.dataset.state === "pending" && r.textContent?.includes("scan updates"))).toHaveLength(1));

    // Keyboard: ArrowDown opens with focus on the first subsystem, arrows move, Escape closes
    // and gives focus back to the toggle.
    toggle.focus();
    await fireEvent.keyDown(toggle, { key: "ArrowDown" });
    expect(toggle.getAttribute("aria-expanded")).toBe("true");
    expect(document.activeElement?.textContent).toBe("APT");
    await fireEvent.keyDown(document.activeElement!, { key: "ArrowDown" });
    expect(document.activeElement?.textContent).toBe("Zypper");
    await fireEvent.keyDown(document.activeElement!, { key: "Escape" });
    expect(toggle.getAttribute("aria-expanded")).toBe("false");
    expect(document.getElementById(toggle.getAttribute("aria-controls")!)).toBeNull();
    expect(document.activeElement).toBe(toggle);

    await fireEvent.click(screen.getByRole("button", { name: /^Scan now/ }));
    await waitFor(() => expect(calls(server, "triggerScan")).toHaveLength(2));
    expect(calls(server, "triggerScan")[1]).toMatchObject({ subsystems: [] });
    await waitFor(() => expect(noticeTexts()).toContain("Scan queued for web-1"));
  });

  it("shows that heartbeat is on, until when and who started it, and follows changes live", async () => {
    const enable = command({
      type: CommandType.ENABLE_HEARTBEAT,
      state: CommandState.SUCCEEDED,
      createdBy: "ana",
      createdByKind: CommandCreator.PERSON,
      createTime: ago(2 * MIN),
      finishTime: ago(MIN),
      result: create(CommandResultSchema, {
        outcome: CommandOutcome.SUCCEEDED,
        message: "polling every 5s until …",
        detail: { case: "heartbeat", value: { until: timestampFromMs(Date.now() + 8 * MIN), intervalSeconds: 5 } },
      }),
    });
    const { server } = open({ commands: [enable, command({ type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED, createTime: ago(60 * MIN) })] });
    await loaded();
    expect((await screen.findByTestId("heartbeat-state")).textContent).toBe("on");
    expect(screen.getByTestId("heartbeat-by").textContent).toBe("ana");
    expect(screen.getByTestId("heartbeat-by").dataset.person).toBe("true");
    expect(screen.getByRole("region", { name: "Heartbeat" }).textContent).toMatch(/Polling every 5 s until .* \(in [78] min\)/);
    await screen.findByTestId("agent-live");

    // The admin key turns it off: the page follows the command on the live feed.
    const off = command({ type: CommandType.DISABLE_HEARTBEAT, state: CommandState.PENDING, createdBy: "admin.key", createdByKind: CommandCreator.ADMIN_KEY, createTime: timestampFromMs(Date.now()) });
    server.change(off);
    await waitFor(() => expect(screen.getByTestId("heartbeat-state").textContent).toBe("turning off"));
    expect(screen.getByTestId("heartbeat-by").textContent).toBe("the system (admin.key)");
    expect(screen.getByTestId("heartbeat-by").dataset.person).toBe("false");
    server.change(create(CommandInfoSchema, { ...off, state: CommandState.SUCCEEDED, finishTime: timestampFromMs(Date.now()) }));
    await waitFor(() => expect(screen.getByTestId("heartbeat-state").textContent).toBe("off"));
    expect(rows("agent-command")[0]!.dataset.state).toBe("succeeded");
  });

  it("tells who started heartbeat by the recorded kind, and by the name only for commands recorded before it", async () => {
    // A person whose username looks like a key's name, through their API token.
    const byToken = command({ type: CommandType.ENABLE_HEARTBEAT, state: CommandState.SENT, createdBy: "build-key", createdByKind: CommandCreator.API_TOKEN, createTime: ago(MIN) });
    const { server } = open({ commands: [byToken] });
    await loaded();
    expect((await screen.findByTestId("heartbeat-by")).textContent).toBe("build-key");
    expect(screen.getByTestId("heartbeat-by").dataset.person).toBe("true");
    await screen.findByTestId("agent-live");

    const old = command({ type: CommandType.DISABLE_HEARTBEAT, state: CommandState.PENDING, createdBy: "deploy-key", createdByKind: CommandCreator.UNSPECIFIED, createTime: timestampFromMs(Date.now()) });
    server.change(old);
    await waitFor(() => expect(screen.getByTestId("heartbeat-by").textContent).toBe("the system (deploy-key)"));
    expect(screen.getByTestId("heartbeat-by").dataset.person).toBe("false");
  });

  it("turns heartbeat on with an interval and a duration, checked before sending", async () => {
    const { server } = open();
    await loaded();
    expect((await screen.findByTestId("heartbeat-state")).textContent).toBe("off");
    expect(screen.queryByTestId("heartbeat-by")).toBeNull();
    await fireEvent.input(screen.getByLabelText("Poll every (seconds)"), { target: { value: "0" } });
    await fireEvent.input(screen.getByLabelText("For"), { target: { value: "a while" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn heartbeat on" }));
    expect(screen.getByText("Enter whole seconds from 1 to 60.")).toBeTruthy();
    expect(screen.getByText(/Enter a duration from 10s to 24h/)).toBeTruthy();
    expect(calls(server, "setHeartbeat")).toEqual([]);

    await fireEvent.input(screen.getByLabelText("Poll every (seconds)"), { target: { value: "10" } });
    await fireEvent.input(screen.getByLabelText("For"), { target: { value: "30m" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn heartbeat on" }));
    await waitFor(() => expect(calls(server, "setHeartbeat")).toMatchObject([{ agentId: AGENT_ID, enabled: true, intervalSeconds: 10, duration: { seconds: 1800n } }]));
    await waitFor(() => expect(screen.getByTestId("heartbeat-state").textContent).toBe("turning on"));
    expect(screen.getByTestId("heartbeat-by").textContent).toBe("ana");
  });

  it("decommissions only after the hostname is typed, then says how many commands were cancelled and hides the actions", async () => {
    const { server } = open(
      {
        commands: [
          command({ type: CommandType.REBOOT, state: CommandState.PENDING }),
          command({ type: CommandType.SCAN_UPDATES, state: CommandState.PENDING }),
          command({ type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED, createTime: ago(90 * MIN) }),
        ],
        updates: [update("openssl")],
      },
      Role.ADMIN,
    );
    await loaded();
    await fireEvent.click(await screen.findByRole("button", { name: "Decommission…" }));
    const dialog = screen.getByRole("dialog", { name: "Decommission web-1?" });
    expect(dialog.textContent).toContain("revokes the agent's credentials");
    const confirm = within(dialog).getByRole("button", { name: "Decommission web-1" }) as HTMLButtonElement;
    expect(confirm.disabled).toBe(true);
    const input = within(dialog).getByLabelText("Type web-1 to confirm");
    await fireEvent.input(input, { target: { value: "web" } });
    expect(confirm.disabled).toBe(true);
    await fireEvent.submit(input.closest("form")!);
    expect(calls(server, "decommissionAgent")).toEqual([]);

    await fireEvent.input(input, { target: { value: "web-1" } });
    expect(confirm.disabled).toBe(false);
    await fireEvent.click(confirm);
    await waitFor(() => expect(calls(server, "decommissionAgent")).toMatchObject([{ agentId: AGENT_ID }]));
    const banner = await screen.findByTestId("decommissioned");
    expect(banner.textContent).toContain("(2 commands)");
    expect(noticeTexts()).toContain("web-1 decommissioned; 2 pending commands cancelled");
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(screen.getByText("decommissioned")).toBeTruthy();
    await waitFor(() => expect(rows("agent-command").map((r) => r.dataset.state)).toEqual(["cancelled", "cancelled", "succeeded"]));
    // Nothing left to do to it but read its history.
    expect(screen.queryByRole("button", { name: /^Scan now/ })).toBeNull();
    expect(screen.queryByRole("button", { name: /Reboot/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Decommission…" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Turn heartbeat on" })).toBeNull();
    expect(screen.queryAllByRole("button", { name: /^Edit/ })).toEqual([]);
    expect(screen.queryAllByRole("button", { name: /^Retry/ })).toEqual([]);
  });

  it("queues a reboot with a delay, a message and force, after asking", async () => {
    const { server } = open();
    await loaded();
    await fireEvent.click(await screen.findByRole("button", { name: "Reboot web-1…" }));
    const dialog = screen.getByRole("dialog", { name: "Reboot web-1?" });
    // The host's own reading says whether it needs one.
    expect(dialog.textContent).toContain("does not report needing a reboot");
    expect(within(dialog).getByText(/Reboot even when the host does not say it needs one/)).toBeTruthy();
    await fireEvent.input(within(dialog).getByLabelText("Delay"), { target: { value: "8d" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Queue reboot" }));
    expect(within(dialog).getByText(/Enter a delay up to 7 days/)).toBeTruthy();
    expect(calls(server, "rebootAgent")).toEqual([]);

    await fireEvent.input(within(dialog).getByLabelText("Delay"), { target: { value: "5m" } });
    await fireEvent.input(within(dialog).getByLabelText("Message to signed-in users (optional)"), { target: { value: "Kernel update" } });
    await fireEvent.click(within(dialog).getByLabelText("Force the reboot"));
    await fireEvent.click(within(dialog).getByRole("button", { name: "Queue reboot" }));
    await waitFor(() => expect(calls(server, "rebootAgent")).toMatchObject([{ agentId: AGENT_ID, delaySeconds: 300, message: "Kernel update", force: true }]));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(rows("agent-command")[0]!.textContent).toContain("reboot");
  });

  it("rebinds the machine ID only to 64 hex characters, for admins", async () => {
    const { server } = open({}, Role.ADMIN);
    await loaded();
    expect(screen.getByTestId("machine-id").textContent).toBe("ab".repeat(32));
    await fireEvent.click(await screen.findByRole("button", { name: "Rebind machine ID…" }));
    const dialog = screen.getByRole("dialog", { name: "Rebind the machine ID of web-1" });
    const field = within(dialog).getByLabelText("New machine ID");
    await fireEvent.input(field, { target: { value: "1234" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Rebind" }));
    expect(within(dialog).getByText(/A machine ID is 64 hexadecimal characters/)).toBeTruthy();
    expect(field.getAttribute("aria-invalid")).toBe("true");
    expect(calls(server, "rebindMachineId")).toEqual([]);

    // Pasted in capitals from a Windows console: accepted as the same ID.
    await fireEvent.input(field, { target: { value: ` ${"CD".repeat(32)} ` } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Rebind" }));
    await waitFor(() => expect(calls(server, "rebindMachineId")).toMatchObject([{ agentId: AGENT_ID, machineId: "cd".repeat(32) }]));
    await waitFor(() => expect(screen.getByTestId("machine-id").textContent).toBe("cd".repeat(32)));
  });

  it("lets an admin allow one registration without the agent's key, for a chosen time, and shows until when", async () => {
    const { server } = open({}, Role.ADMIN);
    await loaded();
    expect(screen.queryByTestId("reregistration-allowed")).toBeNull();
    await fireEvent.click(await screen.findByRole("button", { name: "Allow re-registration…" }));
    const dialog = screen.getByRole("dialog", { name: "Allow web-1 to register again?" });
    expect(dialog.textContent).toContain("without proof of the agent's key");
    await fireEvent.change(within(dialog).getByLabelText("Allowed for"), { target: { value: "86400" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Allow one registration" }));
    await waitFor(() => expect(calls(server, "allowReregistration")).toMatchObject([{ agentId: AGENT_ID, validFor: { seconds: 86_400n } }]));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(screen.getByTestId("reregistration-allowed").textContent).toMatch(/^\s*One registration is allowed until .+ \(in (1 day|23 h)\)\.\s*$/);
    expect(noticeTexts()[0]).toMatch(/^web-1 may register again once, until /);
  });

  it("offers an admin to let a decommissioned agent back in, and nothing else", async () => {
    const { server } = open({ agent: { health: AgentHealth.DECOMMISSIONED } }, Role.ADMIN);
    await loaded();
    expect(screen.getByTestId("decommissioned")).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Decommission…" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Rebind machine ID…" })).toBeNull();
    await fireEvent.click(await screen.findByRole("button", { name: "Let back in…" }));
    const dialog = screen.getByRole("dialog", { name: "Let web-1 back in?" });
    expect(dialog.textContent).toContain("the agent becomes active again");
    await fireEvent.click(within(dialog).getByRole("button", { name: "Let web-1 back in" }));
    await waitFor(() => expect(calls(server, "allowReregistration")).toMatchObject([{ agentId: AGENT_ID, validFor: { seconds: 3600n } }]));
    expect((await screen.findByTestId("reregistration-allowed")).textContent).toMatch(/\(in (59 min|1 h)\)/);
  });

  it("does not offer operators the admin actions", async () => {
    open({}, Role.OPERATOR);
    await loaded();
    await screen.findByRole("button", { name: /^Scan now/ });
    expect(screen.queryByRole("button", { name: "Decommission…" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Rebind machine ID…" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Allow re-registration…" })).toBeNull();
  });

  it("says plainly when there is no agent with the ID, with a way back", async () => {
    const { server } = open({ missing: true });
    expect(await screen.findByRole("heading", { level: 1, name: "No agent with this ID" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Back to all agents" }).getAttribute("href")).toBe("/agents");
    expect(screen.queryByRole("alert")).toBeNull();
    expect(server.streamsOpened).toBe(0);
  });

  it("treats an ID that cannot be one like a missing agent", async () => {
    open({}, Role.OPERATOR, "not-an-id");
    expect(await screen.findByRole("heading", { level: 1, name: "No agent with this ID" })).toBeTruthy();
    expect(screen.getByText("not-an-id")).toBeTruthy();
  });

  it("offers a viewer nothing to press but copying the machine ID", async () => {
    open(
      {
        commands: [command({ type: CommandType.INSTALL_UPDATES, state: CommandState.FAILED }), command({ type: CommandType.SCAN_UPDATES, state: CommandState.PENDING })],
        updates: [update("openssl"), update("curl")],
        samples: [sample(5, 12, 2, [disk("/", 10 * GiB, 2 * GiB)])],
      },
      Role.VIEWER,
    );
    await loaded();
    await waitFor(() => expect(rows("agent-update")).toHaveLength(2));
    await waitFor(() => expect(rows("agent-command")).toHaveLength(2));
    await screen.findByTestId("metric-cpu");
    expect(screen.getAllByTestId("subsystem").length).toBe(12);
    expect(screen.getAllByRole("button").map((b) => b.getAttribute("aria-label") ?? b.textContent)).toEqual(["Copy machine ID"]);
    expect(screen.queryByLabelText("Poll every (seconds)")).toBeNull();
  });

  it("saves a subsystem as an override in the full list, shows the server's refusal in its words, and resets to defaults", async () => {
    const docker = { ...defaultSubsystem("docker"), enabled: false };
    const { server } = open({ overrides: [docker] });
    await loaded();
    const row = (name: string) => screen.getAllByTestId("subsystem").find((r) => r.dataset.name === name)!;
    await waitFor(() => expect(row("docker").dataset.overridden).toBe("true"));
    expect(row("docker").textContent).toContain("this agent");
    expect(row("apt").textContent).toContain("every 6 h");
    expect(row("apt").textContent).toContain("server default");

    await fireEvent.click(screen.getByRole("button", { name: "Edit APT settings" }));
    const dialog = screen.getByRole("dialog", { name: "APT on web-1" });
    const every = within(dialog).getByLabelText("Run every") as HTMLInputElement;
    expect(every.value).toBe("6h");
    expect((within(dialog).getByLabelText("Time limit per run") as HTMLInputElement).value).toBe("15m");

    // Not a duration: said next to the field, nothing sent.
    await fireEvent.input(every, { target: { value: "soon" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Save" }));
    expect(within(dialog).getByText(/Enter a number with a unit/)).toBeTruthy();
    expect(every.getAttribute("aria-invalid")).toBe("true");
    expect(calls(server, "updateSubsystems")).toEqual([]);

    // A duration the server refuses: its message, and nothing changed.
    await fireEvent.input(every, { target: { value: "1m" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Save" }));
    expect((await within(dialog).findByRole("alert")).textContent).toBe("subsystems[1].interval_seconds must be from 300 to 604800 when auto_run is on");
    expect(row("apt").dataset.overridden).toBe("false");
    expect(server.state.overrides.map((o) => o.name)).toEqual(["docker"]);

    await fireEvent.input(every, { target: { value: "12h" } });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Save" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    const sent = calls(server, "updateSubsystems").at(-1)!.subsystems as { name: string; enabled: boolean; intervalSeconds: number }[];
    expect(sent.map((s) => [s.name, s.enabled, s.intervalSeconds])).toEqual([
      ["docker", false, 21_600],
      ["apt", true, 43_200],
    ]);
    await waitFor(() => expect(row("apt").textContent).toContain("every 12 h"));
    expect(row("apt").textContent).toContain("this agent");

    await fireEvent.click(screen.getByRole("button", { name: "Reset to server defaults" }));
    const reset = screen.getByRole("dialog", { name: "Reset web-1 to server defaults?" });
    await fireEvent.click(within(reset).getByRole("button", { name: "Reset to server defaults" }));
    await waitFor(() => expect(calls(server, "updateSubsystems").at(-1)).toMatchObject({ subsystems: [] }));
    await waitFor(() => expect(screen.getAllByTestId("subsystem").every((r) => r.dataset.overridden === "false")).toBe(true));
    await waitFor(() => expect(screen.queryByRole("button", { name: "Reset to server defaults" })).toBeNull());
  });

  it("installs one update or everything pending on the host, and leaves held ones alone", async () => {
    const { server } = open({ updates: [update("openssl"), update("curl"), update("nginx", { held: true })] });
    await loaded();
    await waitFor(() => expect(rows("agent-update")).toHaveLength(3));
    const nginx = rows("agent-update").find((r) => r.dataset.package === "nginx")!;
    expect(nginx.textContent).toContain("held");
    expect(within(nginx).queryByRole("button")).toBeNull();
    expect(screen.getByRole("link", { name: "Manage on the Updates page" }).getAttribute("href")).toBe(`/updates?agent=${AGENT_ID}`);

    await fireEvent.click(screen.getByRole("button", { name: "Approve & install openssl on web-1" }));
    await waitFor(() =>
      expect(calls(server, "installApprovedUpdates")).toMatchObject([
        { approve: true, selection: { keys: [{ agentId: AGENT_ID, source: "apt", name: "openssl", architecture: "amd64" }] } },
      ]),
    );
    expect(noticeTexts()).toContain("Install queued for web-1: 1 package");
    await waitFor(() => expect(rows("agent-update").find((r) => r.dataset.package === "openssl")!.dataset.status).toBe("approved"));
    // Its install command is linked from the row while it waits for the agent.
    const openssl = rows("agent-update").find((r) => r.dataset.package === "openssl")!;
    expect(within(openssl).getByRole("link", { name: "pending" }).getAttribute("href")).toMatch(/^\/activity\//);
    expect(within(openssl).queryByRole("button")).toBeNull();

    await fireEvent.click(screen.getByRole("button", { name: "Approve & install all (1)" }));
    const dialog = screen.getByRole("dialog", { name: "Approve & install on web-1?" });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Approve & install 1" }));
    await waitFor(() => expect(calls(server, "installApprovedUpdates")).toHaveLength(2));
    expect(calls(server, "installApprovedUpdates")[1]).toMatchObject({ approve: true, selection: { agentIds: [AGENT_ID], keys: [] } });
    await waitFor(() => expect(rows("agent-update").filter((r) => r.dataset.status === "approved")).toHaveLength(2));
    expect(server.state.updates.find((u) => u.update?.name === "nginx")!.status).toBe(UpdateStatus.PENDING);
    expect(rows("agent-command").filter((r) => r.textContent?.includes("install updates"))).toHaveLength(2);
  });

  it("retries a failed command, and shows the server's words when a cancel comes too late", async () => {
    const failed = command({ type: CommandType.INSTALL_UPDATES, state: CommandState.FAILED, result: create(CommandResultSchema, { outcome: CommandOutcome.FAILED, message: "apt-get exited with 100" }) });
    const waiting = command({ type: CommandType.REBOOT, state: CommandState.PENDING, createTime: ago(MIN) });
    const { server } = open({ commands: [waiting, failed] });
    await loaded();
    await waitFor(() => expect(rows("agent-command")).toHaveLength(2));
    const failedRow = rows("agent-command").find((r) => r.dataset.commandId === failed.id)!;
    expect(failedRow.textContent).toContain("apt-get exited with 100");
    expect(within(failedRow).getByRole("link", { name: "install updates" }).getAttribute("href")).toBe(`/activity/${failed.id}`);

    await fireEvent.click(within(failedRow).getByRole("button", { name: /^Retry install updates/ }));
    await waitFor(() => expect(calls(server, "retryCommand")).toMatchObject([{ id: failed.id }]));
    await waitFor(() => expect(rows("agent-command")).toHaveLength(3));
    expect(rows("agent-command")[0]!.dataset.state).toBe("pending");

    // The agent took the reboot meanwhile; the page did not hear of it yet.
    server.state.commands = server.state.commands.map((c) => (c.id === waiting.id ? create(CommandInfoSchema, { ...c, state: CommandState.SENT }) : c));
    const waitingRow = rows("agent-command").find((r) => r.dataset.commandId === waiting.id)!;
    await fireEvent.click(within(waitingRow).getByRole("button", { name: /^Cancel reboot/ }));
    expect((await screen.findByRole("alert")).textContent).toBe(`command ${waiting.id} is sent; only a pending command can be cancelled`);
    expect(server.state.commands.find((c) => c.id === waiting.id)!.state).toBe(CommandState.SENT);
  });

  it("edits the group and tags in place and keeps them when the server refuses a tag", async () => {
    const { server } = open();
    await loaded();
    expect(screen.getByTestId("agent-labels").textContent).toContain("group: prod");
    await fireEvent.click(screen.getByRole("button", { name: "Edit group and tags of web-1" }));
    const tags = screen.getByLabelText("Tags") as HTMLInputElement;
    expect(tags.value).toBe("web");
    await fireEvent.input(tags, { target: { value: "web, edge!" } });
    await fireEvent.click(screen.getByRole("button", { name: "Save labels" }));
    expect((await screen.findByRole("alert")).textContent).toBe(`tag "edge!" must be lower-case letters, digits, '.', '_', ':' or '-' (up to 63)`);
    expect(server.state.agent.tags).toEqual(["web"]);
    await fireEvent.input(tags, { target: { value: "web, edge" } });
    await fireEvent.click(screen.getByRole("button", { name: "Save labels" }));
    await waitFor(() => expect(screen.getByTestId("agent-labels").textContent).toContain("edge"));
    expect(calls(server, "setAgentLabels").at(-1)).toMatchObject({ agentId: AGENT_ID, group: "prod", tags: ["web", "edge"] });
  });

  it("reconnects the live feed after it breaks and reloads the history", async () => {
    const { server } = open({ commands: [command({ type: CommandType.SCAN_UPDATES, state: CommandState.SUCCEEDED })] });
    await loaded();
    await screen.findByTestId("agent-live");
    server.breakFeeds();
    await waitFor(() => expect(screen.queryByTestId("agent-live")).toBeNull());
    // Something happened while the feed was down.
    server.state.commands.unshift(command({ type: CommandType.REBOOT, state: CommandState.PENDING, createTime: timestampFromMs(Date.now()), createdBy: "bob" }));
    await waitFor(() => expect(screen.queryByTestId("agent-live")).not.toBeNull(), { timeout: 5000 });
    await waitFor(() => expect(rows("agent-command")).toHaveLength(2));
    expect(server.streamsOpened).toBe(2);
    expect(server.liveStreams).toBe(1);
  }, 10_000);
});

describe("rolling back a package the host installed", () => {
  beforeEach(() => {
    notices.list = [];
    session.principal = undefined;
  });

  const installed = () =>
    command({
      type: CommandType.INSTALL_UPDATES,
      state: CommandState.FAILED,
      finishTime: ago(30 * MIN),
      result: create(CommandResultSchema, {
        outcome: CommandOutcome.FAILED,
        message: "installed 1, failed 1, skipped 0",
        detail: {
          case: "installUpdates",
          value: {
            packages: [
              { source: "apt", name: "curl", architecture: "amd64", fromVersion: "7.88.1-10+deb12u5", toVersion: "7.88.1-10+deb12u14", state: PackageResultState.INSTALLED },
              { source: "apt", name: "openssl", architecture: "amd64", fromVersion: "3.0.15-1", toVersion: "3.0.17-1", state: PackageResultState.FAILED, reason: "dpkg: error" },
            ],
          },
        },
      }),
    });
  // The agent's answer to the listing the dialog queued, as the live feed brings it.
  const answer = async (server: ReturnType<typeof fakeServer>, state: CommandState, result: Parameters<typeof create<typeof CommandResultSchema>>[1]) => {
    const listing = await waitFor(() => {
      const found = server.state.commands.find((c) => c.type === CommandType.LIST_PACKAGE_VERSIONS);
      if (!found) throw new Error("the listing is not queued yet");
      return found;
    });
    server.change(create(CommandInfoSchema, { ...listing, state, finishTime: timestampFromMs(Date.now()), result: create(CommandResultSchema, result) }));
  };
  const rollbackButton = async () => {
    // Answers come on the live feed: it must be open before the agent "reports".
    await screen.findByTestId("agent-live");
    return screen.findByRole("button", { name: "Roll back curl on web-1…" });
  };

  it("lists what the host installed, asks it which versions curl can go back to, and queues the chosen one after a confirmation", async () => {
    const { server } = open({ commands: [installed()] });
    await loaded();
    const section = screen.getByRole("region", { name: "Installed recently" });
    await waitFor(() => expect(within(section).queryAllByTestId("installed-package").map((r) => r.dataset.package)).toEqual(["curl"]));
    await fireEvent.click(await rollbackButton());
    await waitFor(() =>
      expect(calls(server, "createCommand")).toMatchObject([{ agentId: AGENT_ID, action: { case: "listPackageVersions", value: { packages: [{ source: "apt", name: "curl", architecture: "amd64" }] } } }]),
    );
    const dialog = await screen.findByRole("dialog", { name: "Roll back curl on web-1" });
    expect((await within(dialog).findByTestId("rollback-waiting")).textContent).toMatch(/Waiting for web-1 to answer which versions of curl it can go back to/);

    await answer(server, CommandState.SUCCEEDED, {
      outcome: CommandOutcome.SUCCEEDED,
      message: "curl: 2 earlier versions",
      detail: {
        case: "listPackageVersions",
        value: {
          packages: [
            {
              package: { source: "apt", name: "curl", architecture: "amd64" },
              installedVersion: "7.88.1-10+deb12u14",
              rollbackSupported: true,
              versions: [
                { version: "7.88.1-10+deb12u5", description: "from bookworm-security" },
                { version: "7.88.1-10", description: "from bookworm" },
              ],
            },
          ],
        },
      },
    });
    const choices = await within(dialog).findAllByTestId("rollback-version");
    expect(choices.map((c) => c.textContent?.replace(/\s+/g, " ").trim())).toEqual(["7.88.1-10+deb12u5 from bookworm-security", "7.88.1-10 from bookworm"]);
    const next = within(dialog).getByRole("button", { name: "Roll back…" }) as HTMLButtonElement;
    expect(next.disabled).toBe(true);
    await fireEvent.click(within(dialog).getByRole("radio", { name: /7\.88\.1-10\+deb12u5/ }));
    await fireEvent.click(next);
    expect(within(dialog).getByTestId("rollback-confirm").textContent).toMatch(/Roll back curl \(apt\) on web-1 from 7\.88\.1-10\+deb12u14 to 7\.88\.1-10\+deb12u5\?/);
    // Nothing is queued before the confirmation.
    expect(calls(server, "createCommand")).toHaveLength(1);
    await fireEvent.click(within(dialog).getByRole("button", { name: "Roll back to 7.88.1-10+deb12u5" }));
    await waitFor(() =>
      expect(calls(server, "createCommand")[1]).toMatchObject({
        agentId: AGENT_ID,
        action: { case: "rollbackUpdate", value: { package: { source: "apt", name: "curl", architecture: "amd64" }, targetVersion: "7.88.1-10+deb12u5" } },
      }),
    );
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(noticeTexts()).toContain("Rollback of curl to 7.88.1-10+deb12u5 queued for web-1");
    await waitFor(() => expect(rows("agent-command").some((r) => r.textContent?.includes("rollback update"))).toBe(true));
  });

  it("says in words when there is nothing to go back to, when the agent could not list, and when the rollback is refused", async () => {
    const { server } = open({ commands: [installed()] });
    await loaded();
    await fireEvent.click(await rollbackButton());
    let dialog = await screen.findByRole("dialog", { name: "Roll back curl on web-1" });
    await within(dialog).findByTestId("rollback-waiting");
    await answer(server, CommandState.SUCCEEDED, {
      outcome: CommandOutcome.SUCCEEDED,
      detail: { case: "listPackageVersions", value: { packages: [{ package: { source: "apt", name: "curl" }, installedVersion: "7.88.1-10+deb12u14", rollbackSupported: true, reason: "no earlier version of curl is available to go back to" }] } },
    });
    expect((await within(dialog).findByTestId("rollback-none")).textContent?.replace(/\s+/g, " ")).toBe(
      "web-1 has nothing to go back to for curl (installed: 7.88.1-10+deb12u14): no earlier version of curl is available to go back to.",
    );
    await fireEvent.click(within(dialog).getByRole("button", { name: "Done" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());

    // The agent failed: its message.
    server.state.commands = server.state.commands.filter((c) => c.type !== CommandType.LIST_PACKAGE_VERSIONS);
    await fireEvent.click(await rollbackButton());
    dialog = await screen.findByRole("dialog", { name: "Roll back curl on web-1" });
    await within(dialog).findByTestId("rollback-waiting");
    await answer(server, CommandState.FAILED, { outcome: CommandOutcome.FAILED, message: "curl: apt-cache policy failed (exit status 100): E: The package lists or status file could not be parsed or opened." });
    expect((await within(dialog).findByRole("alert")).textContent).toBe(
      "web-1 could not list the versions of curl: curl: apt-cache policy failed (exit status 100): E: The package lists or status file could not be parsed or opened.",
    );
    await fireEvent.click(within(dialog).getByRole("button", { name: "Done" }));

    // The rollback refused (a blackout window): the server's words, the dialog stays.
    server.state.commands = server.state.commands.filter((c) => c.type !== CommandType.LIST_PACKAGE_VERSIONS);
    await fireEvent.click(await rollbackButton());
    dialog = await screen.findByRole("dialog", { name: "Roll back curl on web-1" });
    await within(dialog).findByTestId("rollback-waiting");
    await answer(server, CommandState.SUCCEEDED, {
      outcome: CommandOutcome.SUCCEEDED,
      detail: { case: "listPackageVersions", value: { packages: [{ package: { source: "apt", name: "curl" }, installedVersion: "7.88.1-10+deb12u14", rollbackSupported: true, versions: [{ version: "7.88.1-10+deb12u5" }] }] } },
    });
    await fireEvent.click(await within(dialog).findByRole("radio", { name: /7\.88\.1-10\+deb12u5/ }));
    await fireEvent.click(within(dialog).getByRole("button", { name: "Roll back…" }));
    const blackout = 'agent web-1 is in blackout window "freeze" until 2026-12-27T00:00:00Z: no install or reboot can be queued for it before then';
    server.refuseNext(new ConnectError(blackout, Code.FailedPrecondition));
    await fireEvent.click(within(dialog).getByRole("button", { name: "Roll back to 7.88.1-10+deb12u5" }));
    expect((await within(dialog).findByRole("alert")).textContent).toContain(blackout);
    expect(screen.getByRole("dialog", { name: "Roll back curl on web-1" })).toBeTruthy();
    expect(noticeTexts().some((t) => t.startsWith("Rollback of"))).toBe(false);
  });

  it("offers no rollback to viewers, and shows what was installed", async () => {
    open({ commands: [installed()] }, Role.VIEWER);
    await loaded();
    await waitFor(() => expect(rows("installed-package")).toHaveLength(1));
    expect(screen.queryByRole("button", { name: /^Roll back/ })).toBeNull();
  });
});

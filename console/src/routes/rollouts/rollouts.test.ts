import { Role } from "@redflag/gen/identity_pb";
import { RolloutHostState, RolloutState } from "@redflag/gen/rollout_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { handOverUpdates, takeHandedOverUpdates } from "#lib/rollout-handover.ts";
import { session } from "#lib/session.svelte.ts";
import { createTestApi, renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { type FakeAgent, rolloutServer } from "#lib/testing/rollout-server.ts";
import Rollouts from "./+page.svelte";
import { clockTime, parseUpdateKeys } from "./rollouts.ts";

const id = (i: number) => `aaaaaaaa-0000-4000-8000-${String(i).padStart(12, "0")}`;
// Ten web servers with three approved updates each, and two database servers.
const AGENTS: FakeAgent[] = [
  ...Array.from({ length: 10 }, (_, i) => ({ id: id(i + 1), hostname: `web-${String(i + 1).padStart(2, "0")}`, group: "web", updates: 3 })),
  { id: id(11), hostname: "db-1", group: "db", updates: 1 },
  { id: id(12), hostname: "db-2", group: "db", updates: 0 },
];

const asOperator = () => (session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never);
const asViewer = () => (session.principal = { kind: "session", role: Role.VIEWER, user: { username: "vic" } } as never);
const type = (label: string | HTMLElement, value: string, within_: HTMLElement = document.body) =>
  fireEvent.input(typeof label === "string" ? within(within_).getByLabelText(label) : label, { target: { value } });
const ringEditor = (n: number) => screen.getByRole("group", { name: `Ring ${n}` });

// A rollout of the web group in three rings, created through the fake server so its hosts and
// figures are consistent, then moved on by the test as the scheduler would.
async function startedRollout(server: ReturnType<typeof rolloutServer>) {
  const res = await createTestApi(server.routes).rollouts.createRollout({
    spec: {
      name: "openssl",
      targets: { groups: ["web"] },
      updates: { case: "allApproved", value: true },
      rings: [
        { name: "canary", size: { case: "agents", value: { agentIds: [id(1)] } }, successThresholdPercent: 100, soak: { seconds: 3600n } },
        { name: "half", size: { case: "percent", value: 50 }, successThresholdPercent: 80 },
        { name: "rest", size: { case: "rest", value: true }, successThresholdPercent: 90 },
      ],
    },
  });
  return res.rollout!;
}

describe("the rollouts page", () => {
  beforeEach(() => {
    setTestUrl("/rollouts");
    notices.list = [];
    navigations.length = 0;
    asOperator();
  });

  it("previews where each agent lands, then starts the rollout and shows it", async () => {
    const server = rolloutServer(AGENTS);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    await type("Rollout name", "openssl May");
    await fireEvent.click(screen.getByLabelText("All agents"));
    await type("Groups", "web, db");
    // The default rings: 10 % canaries with an hour's soak, then the rest.
    expect(screen.getAllByTestId("ring-editor")).toHaveLength(2);

    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    const preview = await screen.findByTestId("rollout-preview");
    expect(preview.textContent).toContain("Would place 12 hosts in 2 rings");
    expect(within(preview).getAllByTestId("preview-ring").map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent))).toEqual([
      ["1. canary", "2", "6"],
      ["2. rest", "10", "25"],
    ]);
    expect(within(preview).getAllByTestId("preview-host")).toHaveLength(12);
    expect(server.previews[0]!.spec).toMatchObject({ name: "openssl May", targets: { allAgents: false, groups: ["web", "db"] }, updates: { case: "allApproved", value: true } });
    expect(server.previews[0]!.spec!.rings.map((r) => [r.name, r.size.case, r.size.value, r.successThresholdPercent, r.soak?.seconds])).toEqual([
      ["canary", "percent", 10, 100, 3600n],
      ["rest", "rest", true, 90, undefined],
    ]);
    expect(server.created).toEqual([]);

    const start = screen.getByRole("button", { name: "Start rollout" }) as HTMLButtonElement;
    await waitFor(() => expect(start.disabled).toBe(false));
    await fireEvent.click(start);
    await waitFor(() => expect(server.created).toHaveLength(1));
    const row = await screen.findByTestId("rollout");
    expect(row.dataset.state).toBe("running");
    expect(row.textContent).toContain("1 of 2 (canary)");
    expect(row.textContent).toContain("2 installing, 10 waiting");
    expect(row.textContent).toContain("by olu");
    expect(notices.list.at(-1)?.text).toBe("Rollout openssl May started.");
    // The new rollout is shown in detail, and linked from the URL.
    const detail = await screen.findByTestId("rollout-detail");
    expect(within(detail).getByRole("heading", { name: "openssl May" })).toBeTruthy();
    expect(navigations.at(-1)).toBe(`/rollouts?id=${server.rollouts[0]!.id}`);
  });

  it("edits rings: a new ring goes before the last 'rest' ring, and one can be removed", async () => {
    const server = rolloutServer(AGENTS);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    await fireEvent.click(screen.getByRole("button", { name: "Add ring" }));
    expect(screen.getAllByTestId("ring-editor").map((f) => (within(f).getByLabelText("Name") as HTMLInputElement).value)).toEqual(["canary", "wave 2", "rest"]);
    // Canaries by name instead of a percentage.
    await fireEvent.change(within(ringEditor(1)).getByLabelText("Size"), { target: { value: "agents" } });
    // By hostname or by ID.
    await type("Agents (hostnames or IDs)", `web-03 ${id(4)}`, ringEditor(1));
    await type("Percent", "50", ringEditor(2));
    await type("Soak time", "2h", ringEditor(2));
    await fireEvent.click(screen.getByRole("button", { name: "Remove ring 3" }));
    await type("Rollout name", "two rings");
    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    // Without a "rest" ring, agents are left out: the server says which.
    expect((await screen.findByRole("alert")).textContent).toBe("5 target agents would be left out (db-1, db-2, web-08, web-09, web-10): the last ring (\"wave 2\") must be \"rest\", or the rings must cover every target agent");
    await fireEvent.change(within(ringEditor(2)).getByLabelText("Size"), { target: { value: "rest" } });
    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    const preview = await screen.findByTestId("rollout-preview");
    expect(within(preview).getAllByTestId("preview-ring").map((r) => r.querySelectorAll("td")[1]!.textContent)).toEqual(["2", "10"]);
    expect(screen.queryByRole("alert")).toBeNull();
    expect(server.previews.at(-1)!.spec!.rings.map((r) => [r.name, r.size.case, r.size.value, r.soak?.seconds])).toEqual([
      ["canary", "agents", expect.objectContaining({ agentIds: [id(3), id(4)] }), 3600n],
      ["wave 2", "rest", true, 7200n],
    ]);
  });

  it("sends pasted updates by key, and says which line or field it cannot read without asking the server", async () => {
    const server = rolloutServer(AGENTS);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    await type("Rollout name", "curl only");
    await fireEvent.click(screen.getByLabelText("These updates"));
    await type("Updates, one per line", `${id(1)} apt curl amd64\n${id(2)}/apt/curl/amd64\n\n${id(3)} apt`);
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    expect((await screen.findByRole("alert")).textContent).toContain(`line 4 ("${id(3)} apt") is not an update`);
    await type("Updates, one per line", `${id(1)} apt curl amd64\nweb-02/apt/curl/amd64`);
    await type("Soak time", "an hour", ringEditor(1));
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe('ring 1: "an hour" is not a soak time; write it like 30m, 4h or 1d (empty: none)'));
    expect(server.created).toEqual([]);
    expect(server.previews).toEqual([]);

    await type("Soak time", "15m", ringEditor(1));
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    await waitFor(() => expect(server.created).toHaveLength(1));
    const updates = server.created[0]!.spec!.updates;
    expect(updates.case).toBe("updateKeys");
    expect(updates.case === "updateKeys" && updates.value.keys.map((k) => [k.agentId, k.source, k.name, k.architecture])).toEqual([
      [id(1), "apt", "curl", "amd64"],
      [id(2), "apt", "curl", "amd64"],
    ]);
  });

  it("starts from the updates selected on the Updates page", async () => {
    const server = rolloutServer(AGENTS);
    handOverUpdates([{ agentId: id(1), source: "apt", name: "openssl", architecture: "amd64" }]);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    expect(screen.getByTestId("handed-over").textContent).toContain("selected on the Updates page");
    expect((screen.getByLabelText("These updates") as HTMLInputElement).checked).toBe(true);
    expect((screen.getByLabelText("Updates, one per line") as HTMLTextAreaElement).value).toBe(`${id(1)} apt openssl amd64`);
    // Handed over once: the next visit starts empty.
    expect(takeHandedOverUpdates()).toBe("");
  });

  it("says which hostname names no agent or several, and passes over a decommissioned namesake", async () => {
    const twins: FakeAgent[] = [
      { id: id(20), hostname: "web-01", updates: 0, decommissioned: true },
      { id: id(21), hostname: "twin", updates: 0 },
      { id: id(22), hostname: "twin", updates: 0 },
    ];
    const server = rolloutServer([...AGENTS, ...twins]);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    await type("Rollout name", "canaries");
    await fireEvent.change(within(ringEditor(1)).getByLabelText("Size"), { target: { value: "agents" } });
    await type("Agents (hostnames or IDs)", "web-01 web-99", ringEditor(1));
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    expect((await screen.findByRole("alert")).textContent).toBe('no agent is called "web-99"; give a hostname or an agent ID');
    await type("Agents (hostnames or IDs)", "web-01 twin", ringEditor(1));
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe('several agents are called "twin"; give the agent ID of the one you mean'));
    expect(server.created).toEqual([]);
    await type("Agents (hostnames or IDs)", "WEB-01", ringEditor(1));
    await fireEvent.click(screen.getByRole("button", { name: "Preview" }));
    await screen.findByTestId("rollout-preview");
    const canary = server.previews[0]!.spec!.rings[0]!.size;
    expect(canary.case === "agents" && canary.value.agentIds).toEqual([id(1)]);
  });

  it("shows the server's refusal next to the form in its words, and creates nothing", async () => {
    const server = rolloutServer(AGENTS);
    renderWithApi(Rollouts, server.routes);
    await screen.findByText(/No rollouts yet/);
    await type("Rollout name", "nobody");
    await fireEvent.click(screen.getByLabelText("All agents"));
    await fireEvent.click(screen.getByRole("button", { name: "Start rollout" }));
    const form = screen.getByRole("region", { name: "New rollout" });
    expect((await within(form).findByRole("alert")).textContent).toBe("spec.targets names no agents: give groups, tags or agent IDs, or all_agents for the whole fleet");
    expect(server.created).toEqual([]);
  });

  it("lists rollouts with state, halt reason, current ring, progress and who created them", async () => {
    const server = rolloutServer(AGENTS);
    const r = await startedRollout(server);
    server.setHost(r.id, "web-01", RolloutHostState.FAILED, { message: "E: Unable to locate package openssl" });
    server.halt(r.id, "ring canary: 1 of 1 hosts failed (web-01); the threshold of 100% cannot be met");
    renderWithApi(Rollouts, server.routes);
    const row = await screen.findByTestId("rollout");
    expect(row.dataset.state).toBe("halted");
    const cells = within(row).getAllByRole("cell").map((c) => c.textContent?.trim());
    expect(cells[0]).toBe("openssl");
    expect(cells[1]).toBe("halted ring canary: 1 of 1 hosts failed (web-01); the threshold of 100% cannot be met");
    expect(cells[2]).toBe("1 of 3 (canary)");
    expect(cells[3]).toBe("1 failed, 9 waiting");
    expect(cells[4]).toMatch(/^by olu, just now$/);
  });

  it("shows one rollout's rings, soak countdown and hosts, and pauses, resumes and aborts it as its state allows", async () => {
    const server = rolloutServer(AGENTS);
    const r = await startedRollout(server);
    server.setHost(r.id, "web-01", RolloutHostState.SUCCEEDED, { commandId: "cccccccc-0000-4000-8000-000000000001", message: "installed 3 package(s)" });
    const soakEnd = new Date(Date.now() + 40 * 60_000);
    server.soak(r.id, soakEnd);
    renderWithApi(Rollouts, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "openssl" }));
    const detail = await screen.findByTestId("rollout-detail");
    expect(navigations.at(-1)).toBe(`/rollouts?id=${r.id}`);
    const rings = within(detail).getAllByTestId("ring");
    expect(rings.map((g) => g.dataset.state)).toEqual(["soaking", "waiting", "waiting"]);
    expect(within(rings[0]!).getByTestId("progress").textContent).toContain("1 succeeded");
    expect(within(rings[0]!).getByTestId("soak").textContent).toBe(`promotes at ${clockTime(soakEnd)} (in 40 min)`);
    expect(rings[0]!.textContent).toContain("1 named agent; passes at 100% succeeded; soak 1 h");
    expect(rings[1]!.textContent).toContain("50% of the agents left; passes at 80% succeeded; no soak");
    const hosts = within(detail).getAllByTestId("rollout-host");
    expect(hosts).toHaveLength(10);
    const web01 = hosts.find((h) => h.textContent?.includes("web-01"))!;
    expect(web01.dataset.state).toBe("succeeded");
    expect(web01.textContent).toContain("installed 3 packages");
    expect(within(web01).getByRole("link", { name: "Install command on web-01" }).getAttribute("href")).toBe("/activity/cccccccc-0000-4000-8000-000000000001");
    expect(within(detail).queryByRole("button", { name: "Resume" })).toBeNull();

    await fireEvent.click(within(detail).getByRole("button", { name: "Pause" }));
    await waitFor(() => expect(screen.getByTestId("rollout-detail").dataset.state).toBe("paused"));
    expect(within(screen.getByTestId("rollout-detail")).getByTestId("soak").textContent).toContain("promotes once resumed");
    expect(notices.list.at(-1)?.text).toBe("Rollout openssl paused.");
    await waitFor(() => expect(screen.getByTestId("rollout").dataset.state).toBe("paused"));
    await fireEvent.click(within(screen.getByTestId("rollout-detail")).getByRole("button", { name: "Resume" }));
    await waitFor(() => expect(screen.getByTestId("rollout-detail").dataset.state).toBe("running"));
    expect(server.actions).toEqual([`pause ${r.id}`, `resume ${r.id}`]);

    // Abort asks first, and Cancel leaves the rollout running.
    await fireEvent.click(within(screen.getByTestId("rollout-detail")).getByRole("button", { name: "Abort" }));
    let dialog = await screen.findByRole("dialog", { name: "Abort openssl?" });
    expect(dialog.textContent).toContain("ends the rollout for good");
    await fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(server.actions).toHaveLength(2);
    await fireEvent.click(within(screen.getByTestId("rollout-detail")).getByRole("button", { name: "Abort" }));
    dialog = await screen.findByRole("dialog", { name: "Abort openssl?" });
    await fireEvent.click(within(dialog).getByRole("button", { name: "Abort rollout" }));
    await waitFor(() => expect(screen.getByTestId("rollout-detail").dataset.state).toBe("aborted"));
    const after = screen.getByTestId("rollout-detail");
    expect(within(after).queryByRole("button", { name: /Pause|Resume|Abort/ })).toBeNull();
    expect(within(after).getAllByTestId("rollout-host").filter((h) => h.dataset.state === "skipped")).toHaveLength(9);
  });

  it("follows a running rollout every five seconds, list and detail, without a reload", async () => {
    const server = rolloutServer(AGENTS);
    const r = await startedRollout(server);
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      setTestUrl(`/rollouts?id=${r.id}`);
      renderWithApi(Rollouts, server.routes);
      const detail = await screen.findByTestId("rollout-detail");
      expect((await screen.findByTestId("rollout")).textContent).toContain("1 installing, 9 waiting");
      expect(within(detail).getAllByTestId("rollout-host").find((h) => h.textContent?.includes("web-01"))!.dataset.state).toBe("installing");
      server.setHost(r.id, "web-01", RolloutHostState.SUCCEEDED);
      vi.advanceTimersByTime(5000);
      await waitFor(() => expect(within(detail).getAllByTestId("rollout-host").find((h) => h.textContent?.includes("web-01"))!.dataset.state).toBe("succeeded"));
      await waitFor(() => expect(screen.getByTestId("rollout").textContent).toContain("1 succeeded, 9 waiting"));
    } finally {
      vi.useRealTimers();
    }
  });

  it("explains that resuming a halted rollout overrides the halt, and moves past the ring", async () => {
    const server = rolloutServer(AGENTS);
    const r = await startedRollout(server);
    server.setHost(r.id, "web-01", RolloutHostState.FAILED, { message: "dpkg was interrupted" });
    server.halt(r.id, "ring canary: web-01 failed");
    // The page opened from a link shows the rollout at once.
    setTestUrl(`/rollouts?id=${r.id}`);
    renderWithApi(Rollouts, server.routes);
    const detail = await screen.findByTestId("rollout-detail");
    expect(detail.dataset.state).toBe("halted");
    expect(within(detail).getByTestId("halt-reason").textContent).toBe("Halted: ring canary: web-01 failed");
    expect(within(detail).queryByRole("button", { name: "Pause" })).toBeNull();
    await fireEvent.click(within(detail).getByRole("button", { name: "Resume" }));
    const dialog = await screen.findByRole("dialog", { name: "Resume past the halt?" });
    expect(dialog.textContent).toContain("Resuming overrides the halt: ring 1 (canary) is marked overridden, its hosts still waiting are skipped, and the rollout moves on to the next ring.");
    await fireEvent.click(within(dialog).getByRole("button", { name: "Resume anyway" }));
    await waitFor(() => expect(screen.getByTestId("rollout-detail").dataset.state).toBe("running"));
    expect(within(screen.getByTestId("rollout-detail")).getAllByTestId("ring").map((g) => g.dataset.state)).toEqual(["overridden", "installing", "waiting"]);
  });

  it("shows a refused action in the server's words", async () => {
    const server = rolloutServer(AGENTS);
    await startedRollout(server);
    renderWithApi(Rollouts, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "openssl" }));
    const detail = await screen.findByTestId("rollout-detail");
    // Someone else paused it meanwhile: this page still offers Pause.
    server.rollouts[0]!.state = RolloutState.PAUSED;
    await fireEvent.click(within(detail).getByRole("button", { name: "Pause" }));
    expect((await within(detail).findByRole("alert")).textContent).toBe('Could not pause openssl: rollout "openssl" is paused; nothing to pause');
    // The detail reloads and now offers what the state allows.
    await waitFor(() => expect(screen.getByTestId("rollout-detail").dataset.state).toBe("paused"));
  });

  it("shows viewers every rollout and its detail, with no buttons and no form", async () => {
    const server = rolloutServer(AGENTS);
    await startedRollout(server);
    asViewer();
    renderWithApi(Rollouts, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "openssl" }));
    const detail = await screen.findByTestId("rollout-detail");
    expect(within(detail).getAllByTestId("rollout-host")).toHaveLength(10);
    expect(within(detail).queryByRole("button", { name: /Pause|Resume|Abort/ })).toBeNull();
    expect(screen.queryByRole("form", { name: "New rollout" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Start rollout" })).toBeNull();
  });
});

describe("pasted update keys", () => {
  it("reads spaces, tabs or slashes, skips blank and # lines, and names a line it cannot read", () => {
    expect(parseUpdateKeys("a apt curl amd64\n# a comment\n\nb\tdocker\tnginx\nc/dnf/kernel/x86_64").map((k) => [k.agentId, k.source, k.name, k.architecture])).toEqual([
      ["a", "apt", "curl", "amd64"],
      ["b", "docker", "nginx", ""],
      ["c", "dnf", "kernel", "x86_64"],
    ]);
    expect(() => parseUpdateKeys("a apt curl amd64 extra")).toThrow('line 1 ("a apt curl amd64 extra") is not an update');
  });
});

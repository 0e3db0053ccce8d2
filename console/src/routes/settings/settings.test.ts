import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Role } from "@redflag/gen/identity_pb";
import { SettingSchema, SettingsService, type SettingChange } from "@redflag/gen/settings_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Settings from "./+page.svelte";

// A SettingsService like the control plane's: values are checked first (messages name the
// setting, joined by "; "), then all applied; an empty value returns a setting to its default.
const DEFS = [
  { key: "poll_interval", type: "duration", min: 10, max: 3600, fallback: "5m", description: "How often an idle agent polls" },
  { key: "poll_jitter_percent", type: "integer", min: 0, max: 100, fallback: "10", description: "Random spread of each poll interval, in percent" },
  { key: "command_timeout", type: "duration", min: 30, max: 86_400, fallback: "1h", description: "How long an agent lets a command run" },
  { key: "login_failures_per_user", type: "integer", min: 3, max: 100, fallback: "10", description: "Failed sign-ins for one username from one address before each further one makes the next attempt wait (1 s, doubling, at most 15 minutes)" },
  { key: "minimum_agent_version", type: "version", fallback: "", description: "Agents older than this cannot register (empty: any)" },
  { key: "retention_audit", type: "duration", min: 30 * 86_400, max: 3650 * 86_400, fallback: "400d", description: "How long audit entries are kept" },
] as const;
const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const fmt = (s: number) => {
  for (const [u, n] of [["w", 604_800], ["d", 86_400], ["h", 3600], ["m", 60]] as const) if (s > 0 && s % n === 0) return `${s / n}${u}`;
  return `${s}s`;
};
function normalise(key: string, raw: string): { value: string } | { error: string } {
  const def = DEFS.find((d) => d.key === key);
  if (!def) return { error: `"${key}" is not a setting (${DEFS.map((d) => d.key).join(", ")})` };
  const text = raw.trim();
  if (def.type === "duration") {
    const m = /^\s*(\d+)\s*([smhdw]?)\s*$/.exec(text);
    if (!m) return { error: `${key}: "${text}" is not a duration; use a number with s, m, h, d or w (for example 10m or 7d)` };
    const seconds = Number(m[1]) * UNITS[m[2] || "s"]!;
    if (seconds < def.min) return { error: `${key} must be at least ${fmt(def.min)}` };
    if (seconds > def.max) return { error: `${key} must be at most ${fmt(def.max)}` };
    return { value: fmt(seconds) };
  }
  if (def.type === "integer") {
    if (!/^-?\d+$/.test(text)) return { error: `${key} must be a whole number` };
    const n = Number(text);
    if (n < def.min || n > def.max) return { error: `${key} must be from ${def.min} to ${def.max}` };
    return { value: String(n) };
  }
  if (text !== "" && !/^\d+\.\d+\.\d+$/.test(text)) return { error: `${key} must be a version like 1.2.3, or empty` };
  return { value: text };
}

function fakeServer(stored: Record<string, { value: string; by: string; at: Date }> = {}) {
  const calls: string[] = [];
  const updates: Record<string, string>[] = [];
  const changes: SettingChange[] = [];
  const list = () =>
    DEFS.map((d) =>
      create(SettingSchema, {
        key: d.key,
        value: stored[d.key]?.value ?? d.fallback,
        defaultValue: d.fallback,
        isDefault: !stored[d.key],
        type: d.type,
        description: d.description,
        min: "min" in d ? (d.type === "duration" ? fmt(d.min) : String(d.min)) : "",
        max: "max" in d ? (d.type === "duration" ? fmt(d.max) : String(d.max)) : "",
        updatedBy: stored[d.key]?.by ?? "",
        updateTime: stored[d.key] ? timestampFromDate(stored[d.key]!.at) : undefined,
      }),
    );
  const apply = (values: Record<string, string>) => {
    const problems: string[] = [];
    const checked = Object.entries(values).map(([key, raw]) => {
      if (raw.trim() === "") return { key, value: undefined };
      const r = normalise(key, raw);
      if ("error" in r) problems.push(r.error);
      return { key, value: "value" in r ? r.value : undefined };
    });
    if (problems.length) throw new ConnectError(problems.join("; "), Code.InvalidArgument);
    let changed = 0;
    for (const c of checked) {
      const before = stored[c.key]?.value ?? "";
      if (c.value === undefined) {
        if (!stored[c.key]) continue;
        delete stored[c.key];
      } else {
        if (stored[c.key]?.value === c.value) continue;
        stored[c.key] = { value: c.value, by: "ana", at: new Date() };
      }
      changed++;
      changes.unshift({ key: c.key, before, after: c.value ?? "", changedBy: "ana", changeTime: timestampFromDate(new Date()) } as SettingChange);
    }
    return changed;
  };
  const admin = () => {
    if (!session.isAdmin) throw new ConnectError("this needs the admin role", Code.PermissionDenied);
  };
  const routes = (router: ConnectRouter) =>
    router.service(SettingsService, {
      listSettings() {
        calls.push("list");
        return { settings: list() };
      },
      updateSettings(req) {
        calls.push("update");
        admin();
        updates.push({ ...req.values });
        apply(req.values);
        return { settings: list() };
      },
      listSettingChanges() {
        calls.push("history");
        admin();
        return { changes };
      },
      exportSettings() {
        calls.push("export");
        admin();
        return { json: JSON.stringify(Object.fromEntries(Object.entries(stored).map(([k, v]) => [k, v.value]))) };
      },
      importSettings(req) {
        calls.push("import");
        admin();
        let parsed: unknown;
        try {
          parsed = JSON.parse(req.json);
        } catch {
          throw new ConnectError("json is not valid JSON", Code.InvalidArgument);
        }
        const changed = apply(Object.fromEntries(Object.entries(parsed as object).map(([k, v]) => [k, String(v)])));
        return { settings: list(), changed };
      },
    });
  return { routes, calls, updates, stored };
}

const as = (role: Role) => (session.principal = { kind: "session", role, user: { id: "u-ana", username: "ana" } } as never);
const field = (key: string) => document.getElementById(`setting-${key}`) as HTMLInputElement;

describe("the operation settings", () => {
  beforeEach(() => {
    setTestUrl("/settings");
    navigations.length = 0;
    notices.list = [];
    as(Role.ADMIN);
  });

  it("groups settings by purpose with their description, bounds, default and who changed them", async () => {
    renderWithApi(Settings, fakeServer({ command_timeout: { value: "2h", by: "bo", at: new Date(Date.now() - 3 * 86_400_000) } }).routes);
    const polling = (await screen.findByRole("group", { name: "Polling" })) as HTMLElement;
    expect(within(polling).getByLabelText("Poll interval")).toBeTruthy();
    expect(polling.textContent).toContain("How often an idle agent polls");
    expect(polling.textContent).toContain("from 10s to 1h");
    expect(polling.textContent).toContain("default 5m");
    expect(screen.getByRole("group", { name: "Commands and timeouts" }).textContent).toContain("changed by bo, 3 days ago");
    expect(screen.getByRole("group", { name: "Sign-in throttling" })).toBeTruthy();
    expect(screen.getByRole("group", { name: "Agents and versions" })).toBeTruthy();
    expect(screen.getByRole("group", { name: "Retention" })).toBeTruthy();
  });

  it("shows the server's message next to the field it names and keeps the edit unsaved", async () => {
    const server = fakeServer();
    renderWithApi(Settings, server.routes);
    await screen.findByLabelText("Poll interval");
    await fireEvent.input(field("poll_interval"), { target: { value: "5s" } });
    await fireEvent.input(field("command_timeout"), { target: { value: "10m" } });
    await fireEvent.click(screen.getByRole("button", { name: "Save 2 changes" }));

    await waitFor(() => expect(field("poll_interval").getAttribute("aria-invalid")).toBe("true"));
    const error = document.getElementById(field("poll_interval").getAttribute("aria-describedby")!.split(" ").at(-1)!)!;
    expect(error.textContent).toBe("poll_interval must be at least 10s");
    expect(field("command_timeout").getAttribute("aria-invalid")).toBeNull();
    expect(screen.getByText("Nothing was saved: each refused setting says why, by its field.")).toBeTruthy();
    // Nothing changed on the server; the edits are still there, marked unsaved.
    expect(server.stored).toEqual({});
    expect(field("poll_interval").value).toBe("5s");
    expect(screen.getAllByText("unsaved")).toHaveLength(2);

    // Correcting it clears the message; both go in one request.
    await fireEvent.input(field("poll_interval"), { target: { value: "2m" } });
    expect(field("poll_interval").getAttribute("aria-invalid")).toBeNull();
    await fireEvent.click(screen.getByRole("button", { name: "Save 2 changes" }));
    await waitFor(() => expect(server.stored.poll_interval?.value).toBe("2m"));
    expect(server.updates.at(-1)).toEqual({ poll_interval: "2m", command_timeout: "10m" });
    await waitFor(() => expect(screen.getByRole("button", { name: "No changes" })).toBeTruthy());
    expect(notices.list.at(-1)?.text).toBe("2 settings saved.");
    const polling = screen.getByRole("group", { name: "Polling" });
    expect(polling.textContent).toContain("changed by ana, just now");
  });

  it("puts several of the server's messages each by its own field", async () => {
    renderWithApi(Settings, fakeServer().routes);
    await screen.findByLabelText("Poll interval");
    await fireEvent.input(field("poll_jitter_percent"), { target: { value: "lots" } });
    await fireEvent.input(field("retention_audit"), { target: { value: "soon" } });
    await fireEvent.click(screen.getByRole("button", { name: "Save 2 changes" }));
    expect(await screen.findByText("poll_jitter_percent must be a whole number")).toBeTruthy();
    expect(screen.getByText(/^retention_audit: "soon" is not a duration/)).toBeTruthy();
  });

  it("resets a setting to its default on save", async () => {
    const server = fakeServer({ poll_interval: { value: "1m", by: "bo", at: new Date() } });
    renderWithApi(Settings, server.routes);
    await screen.findByLabelText("Poll interval");
    await fireEvent.click(screen.getByRole("button", { name: "Reset Poll interval to its default" }));
    expect(screen.getByRole("group", { name: "Polling" }).textContent).toContain("returns to the default (5m) when saved");
    await fireEvent.click(screen.getByRole("button", { name: "Save 1 change" }));
    await waitFor(() => expect(server.stored).toEqual({}));
    expect(server.updates).toEqual([{ poll_interval: "" }]);
    await waitFor(() => expect(field("poll_interval").value).toBe("5m"));
  });

  it("shows the history when opened and imports a file, saying how many changed", async () => {
    const server = fakeServer();
    renderWithApi(Settings, server.routes);
    await screen.findByLabelText("Poll interval");
    expect(server.calls).not.toContain("history");

    const file = new File([JSON.stringify({ poll_interval: "2m", retention_audit: "500d" })], "prod.json", { type: "application/json" });
    await fireEvent.change(screen.getByLabelText("Import from a file"), { target: { files: [file] } });
    expect((await screen.findByTestId("transfer-result")).textContent).toBe("Imported prod.json: 2 settings changed.");
    await waitFor(() => expect(field("poll_interval").value).toBe("2m"));

    const summary = screen.getByText("Change history");
    await fireEvent.click(summary);
    (summary.parentElement as HTMLDetailsElement).open = true;
    await fireEvent(summary.parentElement!, new Event("toggle"));
    await waitFor(() => expect(screen.getAllByTestId("setting-change")).toHaveLength(2));
    expect(screen.getAllByTestId("setting-change")[1]!.textContent).toContain("poll_interval");
  });

  it("leaves everything as it was when an import is refused", async () => {
    const server = fakeServer();
    renderWithApi(Settings, server.routes);
    await screen.findByLabelText("Poll interval");
    const file = new File(["{ not json"], "broken.json", { type: "application/json" });
    await fireEvent.change(screen.getByLabelText("Import from a file"), { target: { files: [file] } });
    expect((await screen.findByRole("alert")).textContent).toBe("Nothing was imported: json is not valid JSON");
    expect(server.stored).toEqual({});
  });

  it("is read-only for viewers: values, no inputs, no history or export", async () => {
    as(Role.VIEWER);
    const server = fakeServer({ poll_interval: { value: "1m", by: "bo", at: new Date() } });
    renderWithApi(Settings, server.routes);
    const polling = await screen.findByRole("group", { name: "Polling" });
    expect(within(polling).getAllByTestId("setting-value")[0]!.textContent).toBe("1m");
    expect(screen.getByText("Only admins can change these settings.")).toBeTruthy();
    expect(screen.queryAllByRole("textbox")).toEqual([]);
    expect(screen.queryByRole("button", { name: /Save|Export|Reset/ })).toBeNull();
    expect(screen.queryByText("Change history")).toBeNull();
    // Viewers do not get the People tab.
    expect(screen.getAllByRole("tab").map((t) => t.textContent)).toEqual(["Operation", "API tokens"]);
    expect(server.calls).toEqual(["list"]);
  });
});

describe("the settings tabs", () => {
  beforeEach(() => {
    navigations.length = 0;
    as(Role.ADMIN);
  });

  it("keep the tab in the URL", async () => {
    setTestUrl("/settings");
    renderWithApi(Settings, fakeServer().routes);
    const tabs = screen.getAllByRole("tab");
    expect(tabs.map((t) => t.textContent)).toEqual(["Operation", "People", "API tokens"]);
    tabs[0]!.focus();
    await fireEvent.keyDown(tabs[0]!, { key: "ArrowRight" });
    expect(navigations).toEqual(["/settings?tab=people"]);
    expect(document.activeElement).toBe(tabs[1]);
    await fireEvent.click(tabs[0]!);
    expect(navigations.at(-1)).toBe("/settings");
  });

  it("tell a non-admin who follows a People link that it is for admins", async () => {
    as(Role.OPERATOR);
    setTestUrl("/settings?tab=people");
    renderWithApi(Settings, fakeServer().routes);
    expect(screen.getByText(/Only admins can manage people/)).toBeTruthy();
  });
});

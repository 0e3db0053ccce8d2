import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { ApiTokenSchema, ApiTokenService, type ApiToken, type CreateApiTokenRequest } from "@redflag/gen/api_token_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { notFound } from "#lib/testing/server-rules.ts";
import Settings from "./+page.svelte";

// An ApiTokenService like the control plane's: a token never does more than its owner, only
// people's own sessions make tokens, everyone's tokens are for admins.
function fakeServer(existing: ApiToken[] = []) {
  const tokens = [...existing];
  const creates: CreateApiTokenRequest[] = [];
  const lists: boolean[] = [];
  const routes = (router: ConnectRouter) => {
    router.service(SettingsService, { listSettings: () => ({ settings: [] }) });
    router.service(ApiTokenService, {
      createApiToken(req) {
        creates.push(req);
        const p = session.principal!;
        if (!p.user) throw new ConnectError("API tokens belong to people: sign in as a person to create one", Code.FailedPrecondition);
        if (!req.name.trim()) throw new ConnectError("name is required", Code.InvalidArgument);
        const scope = req.scope === Role.UNSPECIFIED ? p.role : req.scope;
        if (scope > p.role) throw new ConnectError(`a token cannot do more than its owner: ${p.user.username} is ${Role[p.role]!.toLowerCase()}`, Code.PermissionDenied);
        const secs = req.ttl ? Number(req.ttl.seconds) : 90 * 86_400;
        if (secs < 3600 || secs > 2 * 365 * 86_400) throw new ConnectError("ttl must be from 1 hour to 2 years", Code.InvalidArgument);
        const token = create(ApiTokenSchema, {
          id: `t${tokens.length + 1}`,
          name: req.name,
          userId: p.user.id,
          username: p.user.username,
          scope,
          prefix: "rfapi_9f8e7d",
          createTime: timestampFromDate(new Date()),
          expireTime: timestampFromDate(new Date(Date.now() + secs * 1000)),
        });
        tokens.unshift(token);
        return { token, secret: "rfapi_9f8e7d_supersecretvalue" };
      },
      listApiTokens(req) {
        lists.push(req.allUsers);
        const p = session.principal!;
        if (req.allUsers && p.role !== Role.ADMIN) throw new ConnectError("listing everyone's tokens needs the admin role", Code.PermissionDenied);
        return { tokens: req.allUsers ? tokens : tokens.filter((t) => t.userId === p.user?.id) };
      },
      revokeApiToken(req) {
        const t = tokens.find((x) => x.id === req.id);
        if (!t) throw notFound("API token", req.id);
        t.revokeTime ??= timestampFromDate(new Date());
        return { token: t };
      },
    });
  };
  return { routes, creates, lists, tokens };
}

const person = (role: Role) => (session.principal = { kind: "session", role, user: { id: "u-olu", username: "olu", role } } as never);
const token = (over: Partial<ApiToken> = {}) =>
  create(ApiTokenSchema, {
    id: "t-report",
    name: "nightly report",
    userId: "u-olu",
    username: "olu",
    scope: Role.VIEWER,
    prefix: "rfapi_abcdef",
    createTime: timestampFromDate(new Date(Date.now() - 10 * 86_400_000)),
    expireTime: timestampFromDate(new Date(Date.now() + 80 * 86_400_000)),
    lastUseTime: timestampFromDate(new Date(Date.now() - 2 * 3_600_000)),
    ...over,
  });
const scopeChoices = () => Array.from((screen.getByLabelText("Scope") as HTMLSelectElement).options).map((o) => o.text.split(":")[0]);

describe("API tokens in settings", () => {
  beforeEach(() => {
    setTestUrl("/settings?tab=api-tokens");
    navigations.length = 0;
  });

  it("offers only scopes up to the person's own role", async () => {
    person(Role.VIEWER);
    const first = renderWithApi(Settings, fakeServer().routes);
    expect(scopeChoices()).toEqual(["viewer"]);
    first.unmount();

    person(Role.OPERATOR);
    const second = renderWithApi(Settings, fakeServer().routes);
    expect(scopeChoices()).toEqual(["viewer", "operator"]);
    expect(screen.getByText(/You are operator, so a token can be at most operator/)).toBeTruthy();
    second.unmount();

    person(Role.ADMIN);
    renderWithApi(Settings, fakeServer().routes);
    expect(scopeChoices()).toEqual(["viewer", "operator", "admin"]);
  });

  it("creates a token and shows its secret once", async () => {
    person(Role.OPERATOR);
    const server = fakeServer();
    renderWithApi(Settings, server.routes);
    expect(await screen.findByText(/You have no API tokens/)).toBeTruthy();
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "deploy hook" } });
    await fireEvent.change(screen.getByLabelText("Scope"), { target: { value: String(Role.OPERATOR) } });
    await fireEvent.change(screen.getByLabelText("Expires after"), { target: { value: String(30 * 86_400) } });
    await fireEvent.click(screen.getByRole("button", { name: "Create API token" }));

    expect((await screen.findByTestId("api-token-secret")).textContent).toBe("rfapi_9f8e7d_supersecretvalue");
    expect(server.creates[0]).toMatchObject({ name: "deploy hook", scope: Role.OPERATOR });
    expect(server.creates[0]!.ttl?.seconds).toBe(BigInt(30 * 86_400));
    const row = await screen.findByTestId("api-token");
    expect(row.textContent).toContain("deploy hook");
    expect(row.textContent).toContain("operator");
    expect(row.textContent).not.toContain("supersecret");
    await fireEvent.click(screen.getByRole("button", { name: "I have copied it" }));
    expect(screen.queryByTestId("api-token-secret")).toBeNull();
  });

  it("shows the server's words when a token is refused", async () => {
    person(Role.OPERATOR);
    renderWithApi(Settings, fakeServer().routes);
    await screen.findByText(/You have no API tokens/);
    await fireEvent.input(screen.getByLabelText("Name"), { target: { value: "   " } });
    await fireEvent.click(screen.getByRole("button", { name: "Create API token" }));
    expect((await screen.findByRole("alert")).textContent).toBe("name is required");
  });

  it("asks before revoking, then shows it revoked", async () => {
    person(Role.OPERATOR);
    renderWithApi(Settings, fakeServer([token()]).routes);
    const row = await screen.findByTestId("api-token");
    expect(row.textContent).toContain("2 h ago");
    await fireEvent.click(within(row).getByRole("button", { name: "Revoke API token nightly report" }));
    await fireEvent.click(within(screen.getByRole("dialog", { name: "Revoke the API token “nightly report”?" })).getByRole("button", { name: "Revoke API token" }));
    await waitFor(() => expect(screen.getByTestId("api-token").dataset.state).toBe("revoked"));
    expect(within(screen.getByTestId("api-token")).queryByRole("button", { name: /Revoke/ })).toBeNull();
  });

  it("lets admins see everyone's tokens, kept in the URL", async () => {
    person(Role.ADMIN);
    const server = fakeServer([token({ id: "t-other", name: "backup", userId: "u-bo", username: "bo" })]);
    renderWithApi(Settings, server.routes);
    expect(await screen.findByText(/You have no API tokens/)).toBeTruthy();
    await fireEvent.click(screen.getByLabelText("Show everyone's"));
    expect(navigations).toEqual(["/settings?tab=api-tokens&all=1"]);

    setTestUrl("/settings?tab=api-tokens&all=1");
    const row = await screen.findByTestId("api-token");
    expect(row.textContent).toContain("bo");
    expect(screen.getByRole("columnheader", { name: "Owner" })).toBeTruthy();
    expect(server.lists).toEqual([false, true]);
  });

  it("never offers everyone's tokens to non-admins, even from the URL", async () => {
    person(Role.OPERATOR);
    setTestUrl("/settings?tab=api-tokens&all=1");
    const server = fakeServer();
    renderWithApi(Settings, server.routes);
    await screen.findByText(/You have no API tokens/);
    expect(screen.queryByLabelText("Show everyone's")).toBeNull();
    expect(server.lists).toEqual([false]);
  });

  it("explains that the admin key cannot make tokens", async () => {
    session.principal = { kind: "admin_key", role: Role.ADMIN, credentialName: "admin.key" } as never;
    renderWithApi(Settings, fakeServer().routes);
    expect(screen.getByText(/signed in with the admin key/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Create API token" })).toBeNull();
  });
});

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { passwordProblem } from "@redflag/common/passwords";
import { Role, UserSchema, type User } from "@redflag/gen/identity_pb";
import { SettingsService } from "@redflag/gen/settings_service_pb";
import { UserService, type ResetPasswordRequest } from "@redflag/gen/user_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { notFound } from "#lib/testing/server-rules.ts";
import People from "./People.svelte";

// A UserService like the control plane's: its password rule (shared, from @redflag/common), the last admin kept.
function fakeServer() {
  const users: User[] = [
    create(UserSchema, { id: "u-ana", username: "ana", displayName: "Ana Lima", role: Role.ADMIN, totpEnabled: true, authSource: "password", lastLoginTime: timestampFromDate(new Date(Date.now() - 3_600_000)) }),
    create(UserSchema, { id: "u-bo", username: "bo", displayName: "bo", role: Role.OPERATOR, totpEnabled: true, authSource: "password" }),
    create(UserSchema, { id: "u-cy", username: "cy", displayName: "Cy", role: Role.VIEWER, authSource: "oidc", lastLoginTime: timestampFromDate(new Date(Date.now() - 2 * 86_400_000)) }),
  ];
  const resets: ResetPasswordRequest[] = [];
  const find = (id: string) => {
    const u = users.find((x) => x.id === id);
    if (!u) throw notFound("user", id);
    return u;
  };
  const activeAdmins = () => users.filter((u) => u.role === Role.ADMIN && !u.disabled).length;
  const routes = (router: ConnectRouter) => {
    router.service(SettingsService, { listSettings: () => ({ settings: [] }) });
    router.service(UserService, {
      listUsers: () => ({ users }),
      createUser(req) {
        const name = req.username.trim().toLowerCase();
        if (!/^[a-z0-9][a-z0-9._-]{1,31}$/.test(name)) throw new ConnectError("username must be 2–32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit", Code.InvalidArgument);
        const problem = passwordProblem(req.password, name);
        if (problem) throw new ConnectError(problem, Code.InvalidArgument);
        if (users.some((u) => u.username === name)) throw new ConnectError(`the username "${name}" is taken`, Code.AlreadyExists);
        const user = create(UserSchema, { id: `u-${name}`, username: name, displayName: req.displayName || name, role: req.role, authSource: "password" });
        users.push(user);
        return { user };
      },
      updateUser(req) {
        const u = find(req.id);
        if (req.role !== Role.ADMIN && u.role === Role.ADMIN && activeAdmins() <= 1) throw new ConnectError("cannot demote the last admin; make someone else admin first", Code.FailedPrecondition);
        if (req.role) u.role = req.role;
        return { user: u };
      },
      disableUser(req) {
        const u = find(req.id);
        if (u.id === "u-ana") throw new ConnectError("you cannot disable yourself", Code.FailedPrecondition);
        u.disabled = true;
        return { user: u };
      },
      enableUser(req) {
        const u = find(req.id);
        u.disabled = false;
        return { user: u };
      },
      resetPassword(req) {
        const u = find(req.id);
        resets.push(req);
        const problem = passwordProblem(req.newPassword, u.username);
        if (problem) throw new ConnectError(problem, Code.InvalidArgument);
        if (req.clearTotp) u.totpEnabled = false;
        return { user: u };
      },
    });
  };
  return { routes, users, resets };
}

const row = (username: string) => screen.getAllByTestId("person").find((r) => r.dataset.username === username)!;

describe("people in settings", () => {
  beforeEach(() => {
    setTestUrl("/settings?tab=people");
    notices.list = [];
    session.principal = { kind: "session", role: Role.ADMIN, user: { id: "u-ana", username: "ana", role: Role.ADMIN } } as never;
  });

  it("lists people with how they sign in, TOTP and the last sign-in", async () => {
    renderWithApi(People, fakeServer().routes);
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(3));
    expect(row("ana").textContent).toMatch(/Ana Lima.*ana.*you/);
    expect(row("ana").textContent).toContain("1 h ago");
    expect(row("bo").textContent).toContain("password");
    expect(row("bo").textContent).toContain("never");
    expect(within(row("bo")).getByText("on")).toBeTruthy();
    expect(row("cy").textContent).toContain("single sign-on");
    expect(row("cy").textContent).toContain("from single sign-on");
    // One's own row offers no way to lock oneself out.
    expect(within(row("ana")).queryByRole("button", { name: /Disable/ })).toBeNull();
    expect(within(row("ana")).queryByRole("combobox")).toBeNull();
    // No password to reset for single sign-on.
    expect(within(row("cy")).queryByRole("button", { name: /Reset the password/ })).toBeNull();
  });

  it("adds a person with a role, and shows the server's words for a bad password", async () => {
    const server = fakeServer();
    renderWithApi(People, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(3));
    await fireEvent.click(screen.getByRole("button", { name: "Add a person" }));
    await fireEvent.input(screen.getByLabelText("Username"), { target: { value: "dee" } });
    await fireEvent.input(screen.getByLabelText("Password (12 characters or more)"), { target: { value: "short" } });
    await fireEvent.change(screen.getByLabelText("Role"), { target: { value: String(Role.OPERATOR) } });
    await fireEvent.click(screen.getByRole("button", { name: "Add person" }));
    expect((await screen.findByRole("alert")).textContent).toBe("the password must be at least 12 characters");
    expect(server.users).toHaveLength(3);

    await fireEvent.input(screen.getByLabelText("Password (12 characters or more)"), { target: { value: "a long pass phrase" } });
    await fireEvent.click(screen.getByRole("button", { name: "Add person" }));
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(4));
    expect(server.users.at(-1)).toMatchObject({ username: "dee", role: Role.OPERATOR });
    expect(notices.list.at(-1)?.text).toBe("dee added as operator.");
  });

  it("changes a role only when saved, and shows why the server refuses", async () => {
    const server = fakeServer();
    server.users[1]!.role = Role.ADMIN; // bo is an admin too
    server.users[0]!.disabled = true; // …and the only enabled one
    renderWithApi(People, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(3));
    const select = within(row("bo")).getByLabelText("Role of bo");
    await fireEvent.change(select, { target: { value: String(Role.VIEWER) } });
    expect(server.users[1]!.role).toBe(Role.ADMIN);
    await fireEvent.click(within(row("bo")).getByRole("button", { name: "Save the role of bo" }));
    expect((await screen.findByRole("alert")).textContent).toBe("cannot demote the last admin; make someone else admin first");
    expect(server.users[1]!.role).toBe(Role.ADMIN);

    server.users[0]!.disabled = false;
    await fireEvent.click(within(row("bo")).getByRole("button", { name: "Save the role of bo" }));
    await waitFor(() => expect(server.users[1]!.role).toBe(Role.VIEWER));
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    expect(notices.list.at(-1)?.text).toBe("bo is now viewer.");
    expect(within(row("bo")).queryByRole("button", { name: "Save the role of bo" })).toBeNull();
  });

  it("disables someone only after asking, and enables them again", async () => {
    const server = fakeServer();
    renderWithApi(People, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(3));
    await fireEvent.click(within(row("bo")).getByRole("button", { name: "Disable bo" }));
    expect(server.users[1]!.disabled).toBe(false);
    const dialog = screen.getByRole("dialog", { name: "Disable bo?" });
    expect(dialog.textContent).toContain("They are signed out at once");
    await fireEvent.click(within(dialog).getByRole("button", { name: "Disable" }));
    await waitFor(() => expect(row("bo").textContent).toContain("disabled"));
    expect(server.users[1]!.disabled).toBe(true);
    await fireEvent.click(within(row("bo")).getByRole("button", { name: "Enable bo" }));
    await fireEvent.click(within(screen.getByRole("dialog", { name: "Enable bo?" })).getByRole("button", { name: "Enable" }));
    await waitFor(() => expect(within(row("bo")).getByRole("button", { name: "Disable bo" })).toBeTruthy());
  });

  it("resets a password and can turn TOTP off", async () => {
    const server = fakeServer();
    renderWithApi(People, server.routes);
    await waitFor(() => expect(screen.getAllByTestId("person")).toHaveLength(3));
    await fireEvent.click(within(row("bo")).getByRole("button", { name: "Reset the password of bo" }));
    const form = screen.getByRole("form", { name: "New password for bo" });
    await fireEvent.input(within(form).getByLabelText("New password for bo"), { target: { value: "bo bo bo bo bo" } });
    await fireEvent.input(within(form).getByLabelText("Repeat it"), { target: { value: "bo bo bo bo bo" } });
    await fireEvent.click(within(form).getByLabelText(/Also turn off TOTP/));
    await fireEvent.click(within(form).getByRole("button", { name: "Set password" }));
    expect((await within(form).findByRole("alert")).textContent).toBe("the password is too repetitive");

    await fireEvent.input(within(form).getByLabelText("New password for bo"), { target: { value: "a fresh passphrase" } });
    await fireEvent.input(within(form).getByLabelText("Repeat it"), { target: { value: "a fresh passphrase" } });
    await fireEvent.click(within(form).getByRole("button", { name: "Set password" }));
    await waitFor(() => expect(screen.queryByRole("form", { name: "New password for bo" })).toBeNull());
    expect(server.resets.at(-1)).toMatchObject({ id: "u-bo", newPassword: "a fresh passphrase", clearTotp: true });
    expect(within(row("bo")).getByText("off")).toBeTruthy();
    expect(notices.list.at(-1)?.text).toBe("Password for bo set and TOTP turned off; their sessions have ended.");
  });
});

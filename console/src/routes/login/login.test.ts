import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { fireEvent, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import Login from "./+page.svelte";

// A server with one person, "ana", whose account has TOTP on. Like the real one, it asks for the
// code before checking anything, and then answers a wrong password and a wrong code alike.
function routes(router: import("@connectrpc/connect").ConnectRouter) {
  router.service(AuthService, {
    login(req) {
      if (req.username === "ana" && !req.totpCode) throw new ConnectError("this account needs a TOTP code: send totp_code", Code.Unauthenticated);
      const wrong = req.totpCode ? "wrong username, password or TOTP code" : "wrong username or password";
      if (req.username !== "ana" || req.password !== "correct horse battery" || req.totpCode !== "123456") throw new ConnectError(wrong, Code.Unauthenticated);
      return { user: { username: "ana" }, sessionToken: "s" };
    },
    whoAmI: () => ({ principal: { kind: "session", role: Role.OPERATOR, user: { username: "ana" } } }),
  });
}

describe("the sign-in page", () => {
  beforeEach(() => {
    navigations.length = 0;
    session.principal = undefined;
  });

  it("shows the server's words for a wrong password and stays put", async () => {
    setTestUrl("/login");
    renderWithApi(Login, routes);
    await fireEvent.input(screen.getByLabelText("Username"), { target: { value: "bob" } });
    await fireEvent.input(screen.getByLabelText("Password"), { target: { value: "nope" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("wrong username or password");
    expect(navigations).toEqual([]);
    expect(session.principal).toBeUndefined();
  });

  it("asks for the TOTP code when the account has one, then goes where the person was headed", async () => {
    setTestUrl("/login?next=%2Fagents%3Fhealth%3Doffline");
    renderWithApi(Login, routes);
    await fireEvent.input(screen.getByLabelText("Username"), { target: { value: "ana" } });
    await fireEvent.input(screen.getByLabelText("Password"), { target: { value: "correct horse battery" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    const code = await screen.findByLabelText("Code from your authenticator app");
    expect(screen.queryByRole("alert")).toBeNull();
    await fireEvent.input(code, { target: { value: "000000" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("wrong username, password or TOTP code");
    await fireEvent.input(code, { target: { value: "123456" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(navigations).toEqual(["/agents?health=offline"]));
    expect(session.name).toBe("ana");
  });

  it("never redirects off the console after signing in", async () => {
    setTestUrl("/login?next=%2F%2Fevil.example%2F");
    renderWithApi(Login, routes);
    await fireEvent.input(screen.getByLabelText("Username"), { target: { value: "ana" } });
    await fireEvent.input(screen.getByLabelText("Password"), { target: { value: "correct horse battery" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await fireEvent.input(await screen.findByLabelText("Code from your authenticator app"), { target: { value: "123456" } });
    await fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(navigations).toEqual(["/"]));
  });
});

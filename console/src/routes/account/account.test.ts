import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { passwordProblem } from "@redflag/common/passwords";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { PrincipalSchema, Role } from "@redflag/gen/identity_pb";
import { fireEvent, screen, waitFor } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { invalid } from "#lib/testing/server-rules.ts";
import Account from "./+page.svelte";

const SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const URI = `otpauth://totp/RedFlag:ana?secret=${SECRET}&issuer=RedFlag&algorithm=SHA1&digits=6&period=30`;

// An AuthService like the control plane's for one person, "ana": the same checks, codes and
// messages (wrong password is PermissionDenied, a wrong enrolment code InvalidArgument).
function fakeServer() {
  const state = { password: "correct horse battery", totp: false, pending: "", calls: [] as string[] };
  const principal = () =>
    create(PrincipalSchema, { kind: "session", role: Role.OPERATOR, user: { id: "u-ana", username: "ana", displayName: "Ana Lima", role: Role.OPERATOR, authSource: "password", totpEnabled: state.totp } });
  const routes = (router: ConnectRouter) =>
    router.service(AuthService, {
      whoAmI: () => ({ principal: principal() }),
      changePassword(req) {
        state.calls.push("changePassword");
        if (req.currentPassword !== state.password) throw new ConnectError("the current password is wrong", Code.PermissionDenied);
        const problem = passwordProblem(req.newPassword, "ana");
        if (problem) throw invalid(problem);
        state.password = req.newPassword;
        return {};
      },
      beginTotpEnrollment(req) {
        state.calls.push("begin");
        if (req.password !== state.password) throw new ConnectError("the password is wrong", Code.PermissionDenied);
        if (state.totp) throw new ConnectError("TOTP is already on; disable it first to enrol a new authenticator", Code.FailedPrecondition);
        state.pending = SECRET;
        return { secret: SECRET, uri: URI };
      },
      confirmTotpEnrollment(req) {
        state.calls.push("confirm");
        if (!state.pending) throw new ConnectError("start with BeginTotpEnrollment", Code.FailedPrecondition);
        if (req.code !== "123456") throw new ConnectError("the code does not match; check the authenticator's clock and try the next code", Code.InvalidArgument);
        state.totp = true;
        return {};
      },
      disableTotp(req) {
        state.calls.push("disable");
        if (!state.totp) throw new ConnectError("TOTP is not on", Code.FailedPrecondition);
        if (req.password !== state.password) throw new ConnectError("the password is wrong", Code.PermissionDenied);
        if (req.code !== "654321") throw new ConnectError("the TOTP code is wrong or was already used", Code.PermissionDenied);
        state.totp = false;
        state.pending = "";
        return {};
      },
    });
  return { routes, state, principal };
}

describe("the account page", () => {
  beforeEach(() => {
    setTestUrl("/account");
    notices.list = [];
  });

  it("shows who one is and how one signed in", () => {
    const server = fakeServer();
    session.principal = server.principal();
    renderWithApi(Account, server.routes);
    expect(screen.getByTestId("account-username").textContent).toBe("ana");
    expect(screen.getByText("operator")).toBeTruthy();
    expect(screen.getByTestId("account-auth").textContent).toBe("username and password");
    expect(screen.getByTestId("totp-status").textContent).toBe("off");
  });

  it("enrols TOTP: password, then the QR code and key, then a code (a wrong one shows the server's words)", async () => {
    const server = fakeServer();
    session.principal = server.principal();
    renderWithApi(Account, server.routes);

    await fireEvent.input(screen.getByLabelText("Confirm your password"), { target: { value: "wrong" } });
    await fireEvent.click(screen.getByRole("button", { name: "Set up two-factor sign-in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Not allowed: the password is wrong");
    expect(screen.queryByTestId("totp-secret")).toBeNull();

    await fireEvent.input(screen.getByLabelText("Confirm your password"), { target: { value: "correct horse battery" } });
    await fireEvent.click(screen.getByRole("button", { name: "Set up two-factor sign-in" }));
    expect((await screen.findByTestId("totp-secret")).textContent).toBe("JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP");
    expect(screen.getByTestId("totp-uri").textContent).toBe(URI);
    const qr = (await screen.findByRole("img", { name: /QR code/ })) as HTMLImageElement;
    expect(qr.src).toMatch(/^data:image\/svg\+xml/);
    expect(decodeURIComponent(qr.src)).toContain("<svg");
    const code = screen.getByLabelText("Enter the 6-digit code it shows");
    await waitFor(() => expect(document.activeElement).toBe(code));

    await fireEvent.input(code, { target: { value: "000000" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn on" }));
    expect((await screen.findByRole("alert")).textContent).toBe("the code does not match; check the authenticator's clock and try the next code");
    expect(server.state.totp).toBe(false);
    expect(screen.getByTestId("totp-secret")).toBeTruthy();

    await fireEvent.input(code, { target: { value: "123456" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn on" }));
    await waitFor(() => expect(screen.getByTestId("totp-status").textContent).toBe("on"));
    expect(server.state.totp).toBe(true);
    expect(screen.queryByTestId("totp-secret")).toBeNull();
    expect(session.principal?.user?.totpEnabled).toBe(true);
    expect(notices.list.at(-1)?.text).toMatch(/Two-factor sign-in is on/);
    expect(screen.getByRole("button", { name: "Turn off two-factor sign-in" })).toBeTruthy();
  });

  it("turns TOTP off with the password and a current code", async () => {
    const server = fakeServer();
    server.state.totp = true;
    session.principal = server.principal();
    renderWithApi(Account, server.routes);
    await fireEvent.input(screen.getByLabelText("Password"), { target: { value: "correct horse battery" } });
    await fireEvent.input(screen.getByLabelText("Code from your authenticator app"), { target: { value: "111111" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn off two-factor sign-in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Not allowed: the TOTP code is wrong or was already used");
    expect(server.state.totp).toBe(true);
    await fireEvent.input(screen.getByLabelText("Code from your authenticator app"), { target: { value: "654321" } });
    await fireEvent.click(screen.getByRole("button", { name: "Turn off two-factor sign-in" }));
    await waitFor(() => expect(screen.getByTestId("totp-status").textContent).toBe("off"));
    expect(server.state.totp).toBe(false);
  });

  it("changes the password, checking the repetition first and showing the server's words", async () => {
    const server = fakeServer();
    session.principal = server.principal();
    renderWithApi(Account, server.routes);
    const fill = async (current: string, next: string, repeat: string) => {
      await fireEvent.input(screen.getByLabelText("Current password"), { target: { value: current } });
      await fireEvent.input(screen.getByLabelText("New password (12 characters or more)"), { target: { value: next } });
      await fireEvent.input(screen.getByLabelText("Repeat the new password"), { target: { value: repeat } });
      await fireEvent.click(screen.getByRole("button", { name: "Change password" }));
    };
    await fill("correct horse battery", "a new passphrase", "a new pasphrase");
    expect((await screen.findByRole("alert")).textContent).toBe("The new password and its repetition differ.");
    expect(server.state.calls).toEqual([]);

    await fill("nope", "a new passphrase", "a new passphrase");
    expect((await screen.findByRole("alert")).textContent).toBe("Not allowed: the current password is wrong");

    await fill("correct horse battery", "short", "short");
    expect((await screen.findByRole("alert")).textContent).toBe("the password must be at least 12 characters");

    await fill("correct horse battery", "a new passphrase", "a new passphrase");
    await waitFor(() => expect(server.state.password).toBe("a new passphrase"));
    expect(notices.list.at(-1)?.text).toBe("Password changed; your other sessions were signed out.");
    expect((screen.getByLabelText("Current password") as HTMLInputElement).value).toBe("");
  });

  it("explains that API tokens and the admin key are managed elsewhere", () => {
    session.principal = create(PrincipalSchema, { kind: "api_token", role: Role.VIEWER, credentialName: "nightly", user: { username: "ana" } });
    renderWithApi(Account, fakeServer().routes);
    expect(screen.getByText(/the API token “nightly”/)).toBeTruthy();
    expect(screen.getByText(/managed elsewhere/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Change password" })).toBeNull();
  });

  it("sends people from single sign-on to their provider", () => {
    session.principal = create(PrincipalSchema, { kind: "session", role: Role.VIEWER, user: { username: "cy", authSource: "oidc" } });
    renderWithApi(Account, fakeServer().routes);
    expect(screen.getByTestId("account-auth").textContent).toContain("single sign-on");
    expect(screen.getByText(/managed by your identity provider/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Change password" })).toBeNull();
  });
});

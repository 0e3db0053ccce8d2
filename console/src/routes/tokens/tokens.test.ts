import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Role } from "@redflag/gen/identity_pb";
import {
  RegistrationTokenSchema,
  RegistrationTokenState,
  TokenService,
  type CreateRegistrationTokenRequest,
  type RegistrationToken,
} from "@redflag/gen/token_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import { notFound } from "#lib/testing/server-rules.ts";
import Tokens from "./+page.svelte";

// A TokenService like the control plane's: the same checks, messages and codes.
function fakeServer(initial: RegistrationToken[] = [], serverUrlWarning = "") {
  const tokens = [...initial];
  const calls: string[] = [];
  const creates: CreateRegistrationTokenRequest[] = [];
  let n = 0;
  const routes = (router: ConnectRouter) =>
    router.service(TokenService, {
      createRegistrationToken(req) {
        calls.push("create");
        creates.push(req);
        if (req.seats < 1 || req.seats > 100_000) throw new ConnectError("seats must be from 1 to 100000", Code.InvalidArgument);
        if (req.note.length > 200) throw new ConnectError("note is longer than 200 characters", Code.InvalidArgument);
        const secret = `rfreg_secret${++n}abcdefghijklmnop`;
        const now = new Date();
        const token = create(RegistrationTokenSchema, {
          id: `00000000-0000-4000-8000-00000000000${n}`,
          note: req.note,
          seats: req.seats,
          usedSeats: 0,
          prefix: secret.slice(0, 12),
          state: RegistrationTokenState.ACTIVE,
          createTime: timestampFromDate(now),
          expireTime: req.ttl ? timestampFromDate(new Date(now.getTime() + Number(req.ttl.seconds) * 1000)) : undefined,
        });
        tokens.unshift(token);
        return {
          token,
          secret,
          installCommands: [
            { platform: "linux", command: `umask 077; printf '%s' '${secret}' > /root/redflag-token\nsudo redflag-agent register --server http://cp:8080 --token-file /root/redflag-token --fingerprint ${FINGERPRINT}` },
            { platform: "macos", command: `printf '%s' '${secret}' | sudo tee /var/root/redflag-token > /dev/null` },
            { platform: "windows", command: `& "$env:ProgramFiles\\RedFlag\\redflag-agent.exe" register --server http://cp:8080 --token '${secret}' --fingerprint ${FINGERPRINT}` },
          ],
          signingKeyFingerprint: FINGERPRINT,
          serverUrl: "http://cp:8080",
          serverUrlWarning,
        };
      },
      listRegistrationTokens() {
        calls.push("list");
        return { tokens };
      },
      revokeRegistrationToken(req) {
        calls.push("revoke");
        const t = tokens.find((x) => x.id === req.id);
        if (!t) throw notFound("registration token", req.id);
        t.state = RegistrationTokenState.REVOKED;
        t.revokeTime = timestampFromDate(new Date());
        return { token: t };
      },
      deleteRegistrationToken(req) {
        calls.push("delete");
        const i = tokens.findIndex((x) => x.id === req.id);
        if (i < 0) throw notFound("registration token", req.id);
        if (tokens[i]!.state === RegistrationTokenState.ACTIVE) throw new ConnectError("the token is still active; revoke it first", Code.FailedPrecondition);
        tokens.splice(i, 1);
        return {};
      },
    });
  return { routes, calls, creates, tokens };
}

const FINGERPRINT = Array.from({ length: 32 }, (_, i) => (i * 7).toString(16).padStart(2, "0")).join(":");

const token = (over: Partial<RegistrationToken>) =>
  create(RegistrationTokenSchema, {
    id: "11111111-1111-4111-8111-111111111111",
    note: "office laptops",
    seats: 5,
    usedSeats: 2,
    prefix: "rfreg_ab12cd",
    state: RegistrationTokenState.ACTIVE,
    createTime: timestampFromDate(new Date(Date.now() - 3 * 86_400_000)),
    ...over,
  });

const asAdmin = () => (session.principal = { kind: "session", role: Role.ADMIN, user: { username: "ana" } } as never);

describe("the registration tokens page", () => {
  beforeEach(() => {
    setTestUrl("/tokens");
    notices.list = [];
    asAdmin();
  });
  afterEach(() => {
    Reflect.deleteProperty(navigator, "clipboard");
  });

  it("tells non-admins plainly and never asks the server", async () => {
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
    const server = fakeServer([token({})]);
    renderWithApi(Tokens, server.routes);
    expect(screen.getByText(/Only admins can manage registration tokens/)).toBeTruthy();
    expect(screen.queryByRole("button", { name: "Create token" })).toBeNull();
    await new Promise((r) => setTimeout(r, 20));
    expect(server.calls).toEqual([]);
  });

  it("shows an empty state that says what to do", async () => {
    renderWithApi(Tokens, fakeServer().routes);
    expect(await screen.findByText(/No registration tokens yet/)).toBeTruthy();
  });

  it("creates a token, shows its secret once with a command per platform, each with a copy button", async () => {
    const server = fakeServer();
    const writeText = vi.fn(async () => {});
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    renderWithApi(Tokens, server.routes);
    await screen.findByText(/No registration tokens yet/);

    await fireEvent.input(screen.getByLabelText("Seats"), { target: { value: "2" } });
    await fireEvent.change(screen.getByLabelText("Expires after"), { target: { value: "86400" } });
    await fireEvent.input(screen.getByLabelText("Note"), { target: { value: "lab machines" } });
    await fireEvent.click(screen.getByRole("button", { name: "Create token" }));

    const secret = await screen.findByTestId("token-secret");
    expect(secret.textContent).toBe("rfreg_secret1abcdefghijklmnop");
    expect(server.creates[0]).toMatchObject({ seats: 2, note: "lab machines" });
    expect(server.creates[0]!.ttl?.seconds).toBe(86_400n);
    expect(screen.getByRole("heading", { name: /shown only once/ })).toBeTruthy();

    // One block per platform, each with its own copy button; every command carries the secret.
    const blocks = screen.getAllByTestId("install-block");
    expect(blocks.map((b) => within(b).getByRole("heading").textContent)).toEqual(["Linux", "macOS", "Windows"]);
    expect(screen.getByTestId("install-linux").textContent).toContain(secret.textContent);
    // The commands pin the signing key; the page says which, to compare with the Security page.
    expect(screen.getByTestId("signing-key-fingerprint").textContent).toBe(FINGERPRINT);
    expect(screen.getByTestId("install-linux").textContent).toContain(`--fingerprint ${FINGERPRINT}`);
    // The server's URL is one other machines can reach: no warning.
    expect(screen.queryByTestId("server-url-warning")).toBeNull();

    // Copy puts that platform's command on the clipboard and says so.
    await fireEvent.click(within(blocks[2]!).getByRole("button", { name: "Copy windows command" }));
    await waitFor(() => expect(writeText).toHaveBeenCalledWith(screen.getByTestId("install-windows").textContent));
    expect(notices.list.at(-1)?.text).toBe("Windows command copied");
    expect(within(blocks[2]!).getByRole("button", { name: "Copied windows command" })).toBeTruthy();

    // The new token is in the list, without its secret.
    const row = await screen.findByTestId("token");
    expect(row.textContent).toContain("lab machines");
    expect(row.textContent).toContain("0 / 2");
    expect(row.textContent).toContain("active");
    expect(row.textContent).not.toContain("rfreg_secret1abcdefghijklmnop");

    // Once dismissed, the secret is gone for good.
    await fireEvent.click(screen.getByRole("button", { name: "I have copied it" }));
    expect(screen.queryByTestId("token-secret")).toBeNull();
    expect(document.body.textContent).not.toContain("rfreg_secret1abcdefghijklmnop");
  });

  it("says above the commands when other machines cannot reach the server's URL", async () => {
    const warning = "127.0.0.1:8080 is this machine's loopback address: the commands work on this machine only, other machines cannot reach it. Set REDFLAG_PUBLIC_URL to an address they can reach (for example REDFLAG_PUBLIC_URL=http://192.168.1.10:8080) and restart the control plane.";
    renderWithApi(Tokens, fakeServer([], warning).routes);
    await screen.findByText(/No registration tokens yet/);
    await fireEvent.click(screen.getByRole("button", { name: "Create token" }));
    const shown = await screen.findByTestId("server-url-warning");
    expect(shown.textContent).toContain(warning);
    expect(shown.textContent).toContain("Other machines cannot use these commands yet.");
    // Above the first command, where it is read before anything is copied.
    const first = screen.getAllByTestId("install-block")[0]!;
    expect(shown.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
  });

  it("selects the text when the clipboard is unavailable", async () => {
    renderWithApi(Tokens, fakeServer().routes);
    await screen.findByText(/No registration tokens yet/);
    await fireEvent.click(screen.getByRole("button", { name: "Create token" }));
    const secret = await screen.findByTestId("token-secret");
    await fireEvent.click(screen.getByRole("button", { name: "Copy token secret" }));
    await waitFor(() => expect(globalThis.getSelection()?.toString()).toBe(secret.textContent));
  });

  it("shows the server's reason when a token cannot be made", async () => {
    const server = fakeServer();
    renderWithApi(Tokens, server.routes);
    await screen.findByText(/No registration tokens yet/);
    await fireEvent.input(screen.getByLabelText("Note"), { target: { value: "x".repeat(201) } });
    await fireEvent.click(screen.getByRole("button", { name: "Create token" }));
    expect((await screen.findByRole("alert")).textContent).toBe("note is longer than 200 characters");
    expect(screen.queryByTestId("token-secret")).toBeNull();
  });

  it("asks before revoking, then shows the row as revoked with Delete offered", async () => {
    const server = fakeServer([token({})]);
    renderWithApi(Tokens, server.routes);
    const row = await screen.findByTestId("token");
    expect(row.textContent).toContain("2 / 5");
    expect(within(row).queryByRole("button", { name: /Delete/ })).toBeNull();

    const revokeButton = within(row).getByRole("button", { name: "Revoke token rfreg_ab12cd" });
    revokeButton.focus();
    await fireEvent.click(revokeButton);
    const dialog = screen.getByRole("dialog", { name: "Revoke token rfreg_ab12cd?" });
    expect(dialog.textContent).toContain("No more machines can enrol with it (office laptops)");
    await waitFor(() => expect(document.activeElement).toBe(within(dialog).getByRole("button", { name: "Revoke token" })));
    await fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(document.activeElement).toBe(revokeButton);
    expect(server.calls).not.toContain("revoke");

    await fireEvent.click(within(row).getByRole("button", { name: "Revoke token rfreg_ab12cd" }));
    await fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Revoke token" }));
    await waitFor(() => expect(screen.getByTestId("token").dataset.state).toBe("revoked"));
    expect(server.calls.filter((c) => c === "list")).toHaveLength(1);
    expect(notices.list.at(-1)?.text).toBe("Token rfreg_ab12cd revoked; it can enrol no more machines.");
    const revoked = screen.getByTestId("token");
    expect(within(revoked).queryByRole("button", { name: /Revoke token/ })).toBeNull();

    await fireEvent.click(within(revoked).getByRole("button", { name: "Delete token rfreg_ab12cd" }));
    await fireEvent.click(within(screen.getByRole("dialog", { name: "Delete token rfreg_ab12cd?" })).getByRole("button", { name: "Delete token" }));
    await waitFor(() => expect(screen.queryByTestId("token")).toBeNull());
    expect(server.tokens).toEqual([]);
  });

  it("shows the server's words when revoking fails and leaves the row as it was", async () => {
    const server = fakeServer([token({})]);
    renderWithApi(Tokens, server.routes);
    const row = await screen.findByTestId("token");
    server.tokens.length = 0; // deleted meanwhile, elsewhere
    await fireEvent.click(within(row).getByRole("button", { name: "Revoke token rfreg_ab12cd" }));
    await fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Revoke token" }));
    expect((await screen.findByRole("alert")).textContent).toBe(
      "Could not revoke rfreg_ab12cd: registration token 11111111-1111-4111-8111-111111111111 does not exist",
    );
    expect(screen.getByTestId("token").dataset.state).toBe("active");
  });

  it("labels each state in words", async () => {
    renderWithApi(
      Tokens,
      fakeServer([
        token({ id: "a", prefix: "rfreg_aaaaaa", state: RegistrationTokenState.EXPIRED, expireTime: timestampFromDate(new Date(Date.now() - 3_600_000)) }),
        token({ id: "b", prefix: "rfreg_bbbbbb", state: RegistrationTokenState.EXHAUSTED, usedSeats: 5 }),
      ]).routes,
    );
    await waitFor(() => expect(screen.getAllByTestId("token")).toHaveLength(2));
    expect(screen.getAllByTestId("token").map((r) => r.dataset.state)).toEqual(["expired", "used up"]);
    expect(screen.getAllByTestId("token")[0]!.textContent).toContain("1 h ago");
    expect(screen.getAllByTestId("token")[1]!.textContent).toContain("never");
  });
});

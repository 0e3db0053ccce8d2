import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Role } from "@redflag/gen/identity_pb";
import {
  SecurityEventSchema,
  SecurityService,
  SigningKeyInfoSchema,
  type ListSecurityEventsRequest,
  type SecurityEvent,
  type SigningKeyInfo,
} from "@redflag/gen/security_service_pb";
import { fireEvent, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it } from "vitest";
import { notices } from "#lib/notices.svelte.ts";
import { session } from "#lib/session.svelte.ts";
import { renderWithApi } from "#lib/testing/api.ts";
import { navigations } from "#lib/testing/app-navigation.ts";
import { setTestUrl } from "#lib/testing/app-state.svelte.ts";
import Security from "./+page.svelte";

const FP1 = "aa:".repeat(31) + "aa";
const FP2 = "bb:".repeat(31) + "bb";
const TYPES = ["machine_id_mismatch", "refresh_token_reuse", "renew_bad_signature", "result_for_foreign_command", "registration_token_invalid", "login_failed", "machine_id_rebound"];

// A SecurityService like the control plane's: rotation makes a new active key and keeps the
// old one trusted for the grace period (1 hour to 90 days); events page by ID.
function fakeServer(opts: { events?: SecurityEvent[]; adminKeyActive?: boolean; usersWithoutTotp?: number; admins?: number } = {}) {
  const keys: SigningKeyInfo[] = [
    create(SigningKeyInfoSchema, { keyId: "k1-0000-aaaa", fingerprint: FP1, algorithm: "Ed25519", state: "active", createTime: timestampFromDate(new Date(Date.now() - 40 * 86_400_000)) }),
  ];
  const events = opts.events ?? [];
  const rotations: bigint[] = [];
  let adminKeyActive = opts.adminKeyActive ?? true;
  let adminKeyRevokes = 0;
  const listed: ListSecurityEventsRequest[] = [];
  const routes = (router: ConnectRouter) =>
    router.service(SecurityService, {
      getSecurityOverview: () => ({
        signingKeys: keys,
        commandExpiry: { seconds: 900n },
        accessTokenTtl: { seconds: 3600n },
        refreshTokenTtl: { seconds: BigInt(30 * 86_400) },
        refreshTokenMaxAge: { seconds: BigInt(365 * 86_400) },
        eventCounts: TYPES.map((type) => ({ type, last24h: type === "login_failed" ? 2 : 0, last30d: type === "login_failed" ? 5 : 0 })),
        adminKeyActive,
        usersWithoutTotp: opts.usersWithoutTotp ?? 2,
        admins: opts.admins ?? 1,
      }),
      listSecurityEvents(req) {
        listed.push(req);
        if (req.severity && !["info", "warning", "critical"].includes(req.severity)) throw new ConnectError("severity must be info, warning or critical", Code.InvalidArgument);
        const all = events.filter((e) => (!req.type || e.type === req.type) && (!req.severity || e.severity === req.severity));
        const start = req.pageToken ? Number(req.pageToken) : 0;
        const size = req.pageSize || 50;
        return { events: all.slice(start, start + size), nextPageToken: start + size < all.length ? String(start + size) : "" };
      },
      revokeAdminKey() {
        if ((opts.admins ?? 1) === 0) throw new ConnectError("no enabled admin person exists: revoking the admin key now would lock everyone out; set up or create an admin user first, then revoke it", Code.FailedPrecondition);
        if (!adminKeyActive) throw new ConnectError("the admin key is already revoked", Code.FailedPrecondition);
        adminKeyActive = false;
        adminKeyRevokes++;
        return { revokeTime: timestampFromDate(new Date()) };
      },
      rotateSigningKey(req) {
        const grace = req.grace ? Number(req.grace.seconds) : 7 * 86_400;
        if (grace < 3600 || grace > 90 * 86_400) throw new ConnectError("grace must be from 1 hour to 90 days", Code.InvalidArgument);
        rotations.push(BigInt(grace));
        const old = keys[0]!;
        old.state = "trusted";
        old.retireTime = timestampFromDate(new Date(Date.now() + grace * 1000));
        const next = create(SigningKeyInfoSchema, { keyId: "k2-0000-bbbb", fingerprint: FP2, algorithm: "Ed25519", state: "active", createTime: timestampFromDate(new Date()) });
        keys.unshift(next);
        return { activeKey: next, previousKey: old };
      },
    });
  return { routes, rotations, listed, keys, revokes: () => adminKeyRevokes };
}

const event = (i: number, over: { type?: string; severity?: string; message?: string; agentId?: string; machineId?: string; detailJson?: string } = {}) =>
  create(SecurityEventSchema, {
    id: String(100 - i),
    time: timestampFromDate(new Date(Date.now() - i * 60_000)),
    type: "login_failed",
    severity: "warning",
    message: `sign-in failed for "mallory": wrong username or password`,
    remoteAddr: "203.0.113.9",
    detailJson: JSON.stringify({ username: "mallory", reason: "wrong username or password" }),
    ...over,
  });

describe("the security page", () => {
  beforeEach(() => {
    setTestUrl("/security");
    navigations.length = 0;
    notices.list = [];
    session.principal = { kind: "session", role: Role.ADMIN, user: { username: "ana" } } as never;
  });

  it("is for admins only and says so", async () => {
    session.principal = { kind: "session", role: Role.OPERATOR, user: { username: "olu" } } as never;
    const server = fakeServer();
    renderWithApi(Security, server.routes);
    expect(screen.getByText(/Only admins can see the security overview/)).toBeTruthy();
    await new Promise((r) => setTimeout(r, 20));
    expect(server.listed).toEqual([]);
  });

  it("shows the active key's fingerprint, lifetimes, counts and what needs attention", async () => {
    renderWithApi(Security, fakeServer().routes);
    expect((await screen.findByTestId("active-fingerprint")).textContent).toBe(FP1);
    expect(screen.getByTestId("command-expiry").textContent).toBe("15 min");
    expect(screen.getByText("30 d")).toBeTruthy();
    const posture = screen.getByTestId("posture");
    expect(posture.textContent).toContain("The bootstrap admin key still works.");
    expect(posture.textContent).toContain("2 people sign in with a password only.");
    expect(posture.textContent).toContain("Only one admin.");
    const failed = screen.getAllByTestId("event-count").find((r) => r.textContent?.includes("failed sign-in"))!;
    expect(failed.textContent).toContain("25");
  });

  it("says when nothing needs attention", async () => {
    renderWithApi(Security, fakeServer({ adminKeyActive: false, usersWithoutTotp: 0, admins: 2 }).routes);
    expect((await screen.findByTestId("posture-ok")).textContent).toMatch(/^Nothing/);
  });

  it("revokes the admin key after confirming, and offers it only when an admin person exists", async () => {
    const server = fakeServer({ usersWithoutTotp: 0, admins: 2 });
    renderWithApi(Security, server.routes);
    await fireEvent.click(await screen.findByRole("button", { name: "Revoke the admin key" }));
    const dialog = screen.getByRole("dialog", { name: "Revoke the admin key?" });
    expect(server.revokes()).toBe(0);
    await fireEvent.click(within(dialog).getByRole("button", { name: "Revoke the admin key" }));
    await waitFor(() => expect(server.revokes()).toBe(1));
    expect((await screen.findByTestId("posture-ok")).textContent).toContain("the admin key is revoked");
    expect(notices.list.map((n) => n.text)).toContain("The admin key is revoked; admin.key no longer works.");
  });

  it("does not offer to revoke the admin key while no person is an admin", async () => {
    renderWithApi(Security, fakeServer({ admins: 0 }).routes);
    expect((await screen.findByTestId("posture")).textContent).toContain("revoking it now would lock everyone out");
    expect(screen.queryByRole("button", { name: "Revoke the admin key" })).toBeNull();
  });

  it("rotates the key only after confirming, then shows the new fingerprint and the previous key", async () => {
    const server = fakeServer();
    renderWithApi(Security, server.routes);
    await screen.findByTestId("active-fingerprint");
    await fireEvent.change(screen.getByLabelText("Grace period"), { target: { value: String(30 * 86_400) } });
    await fireEvent.click(screen.getByRole("button", { name: "Rotate signing key" }));
    const dialog = screen.getByRole("dialog", { name: "Rotate the signing key now?" });
    expect(dialog.textContent).toContain("Agents that do not poll within 30 days must be registered again.");
    expect(server.rotations).toEqual([]);
    await fireEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(server.rotations).toEqual([]);

    await fireEvent.click(screen.getByRole("button", { name: "Rotate signing key" }));
    await fireEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Rotate the key" }));
    expect((await screen.findByTestId("new-fingerprint")).textContent).toBe(FP2);
    expect(server.rotations).toEqual([BigInt(30 * 86_400)]);
    expect(screen.getByTestId("rotation").textContent).toContain(FP1);
    expect(screen.getByTestId("rotation").textContent).toContain("trusted until in 30 days");
    await waitFor(() => expect(screen.getByTestId("active-fingerprint").textContent).toBe(FP2));
    expect(screen.getAllByTestId("signing-key").map((r) => r.dataset.state)).toEqual(["active", "trusted"]);
  });

  it("lists events with the filters from the URL, details in a disclosure, agent links and paging", async () => {
    const events = [
      ...Array.from({ length: 60 }, (_, i) => event(i)),
      event(60, { type: "machine_id_mismatch", severity: "critical", message: "machine ID differs", agentId: "9b2f0c1e-0000-4000-8000-000000000001", machineId: "m-abc", detailJson: "{}" }),
    ];
    const server = fakeServer({ events });
    setTestUrl("/security?severity=critical");
    renderWithApi(Security, server.routes);
    const row = await screen.findByTestId("security-event");
    expect(server.listed[0]).toMatchObject({ severity: "critical", type: "" });
    expect(row.textContent).toContain("machine ID mismatch");
    expect(within(row).getByRole("link", { name: "9b2f0c1e" }).getAttribute("href")).toBe("/agents/9b2f0c1e-0000-4000-8000-000000000001");

    // Changing a filter goes through the URL.
    await fireEvent.change(screen.getByLabelText("Type"), { target: { value: "login_failed" } });
    expect(navigations.at(-1)).toBe("/security?severity=critical&type=login_failed");

    setTestUrl("/security?type=login_failed");
    await waitFor(() => expect(screen.getAllByTestId("security-event")).toHaveLength(50));
    expect(server.listed.at(-1)).toMatchObject({ type: "login_failed", severity: "", pageToken: "" });
    const details = within(screen.getAllByTestId("security-event")[0]!).getByText("Details").closest("details")!;
    expect(details.open).toBe(false);
    expect(details.querySelector("pre")!.textContent).toBe(JSON.stringify({ username: "mallory", reason: "wrong username or password" }, null, 2));

    await fireEvent.click(screen.getByRole("button", { name: "Load more" }));
    await waitFor(() => expect(screen.getAllByTestId("security-event")).toHaveLength(60));
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
    expect(server.listed.at(-1)!.pageToken).toBe("50");
  });
});

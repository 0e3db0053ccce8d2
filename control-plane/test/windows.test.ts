import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { MaintenanceService, WindowKind, WindowSpecSchema } from "@redflag/gen/maintenance_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Maintenance windows end to end (issue 16): MaintenanceService over Connect, who may change
// windows, and the blackout refusal of CreateCommand and RebootAgent (InstallApprovedUpdates: test/domain/windows.test.ts).

const PASSWORD = "a long enough passphrase 42";
let cp: TestControlPlane;
let agent: TestAgent;
let admin: Client<typeof MaintenanceService>;
let viewer: Client<typeof MaintenanceService>;
let operator: Client<typeof MaintenanceService>;

const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
type SpecInit = Exclude<MessageInitShape<typeof WindowSpecSchema>, { $typeName: string }>;
const spec = (over: SpecInit = {}) =>
  create(WindowSpecSchema, {
    name: "db saturdays",
    kind: WindowKind.MAINTENANCE,
    rrule: "FREQ=WEEKLY;BYDAY=SA",
    dtstart: "2026-01-03T22:00",
    duration: { seconds: 4n * 3600n },
    timeZone: "Europe/Berlin",
    targets: { groups: ["DB"] },
    enabled: true,
    ...over,
  });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

async function signIn(username: string, role: Role) {
  await createClient(UserService, as(cp.adminKey)).createUser({ username, password: PASSWORD, role });
  const login = await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD });
  return createClient(MaintenanceService, as(login.sessionToken));
}

beforeAll(async () => {
  cp = await startTestControlPlane();
  agent = await registerTestAgent(cp, await newRegistrationToken(cp));
  admin = createClient(MaintenanceService, as(cp.adminKey));
  viewer = await signIn("vera", Role.VIEWER);
  operator = await signIn("oscar", Role.OPERATOR);
});
afterAll(async () => {
  await cp?.close();
});

describe("MaintenanceService", () => {
  it("creates, lists, previews, updates and deletes windows; operators change them, viewers only read", async () => {
    expect(Code[(await failure(viewer.createWindow({ window: spec() }))).code]).toBe("PermissionDenied");
    const created = (await operator.createWindow({ window: spec() })).window!;
    expect(created.spec).toMatchObject({ name: "db saturdays", rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-01-03T22:00:00", targets: { groups: ["db"] } });
    expect(created.createdBy).toBe("oscar");
    expect(created.nextStartTime).toBeDefined();

    const listed = await viewer.listWindows({});
    expect(listed.windows.map((w) => w.spec!.name)).toEqual(["db saturdays"]);
    // The agent is in no group yet: no window applies to it.
    expect((await viewer.listWindows({ agentId: agent.agentId })).windows).toEqual([]);
    await cp.admin.fleet.setAgentLabels({ agentId: agent.agentId, group: "db", tags: [] });
    expect((await viewer.listWindows({ agentId: agent.agentId })).windows.map((w) => w.id)).toEqual([created.id]);

    // A saved window from a fixed time, across the spring-forward weekend in Berlin.
    const saved = await viewer.previewWindow({ window: { case: "id", value: created.id }, count: 3, after: timestampFromDate(new Date("2026-03-20T00:00Z")) });
    expect(saved.occurrences.map((o) => [o.localStart, o.localEnd])).toEqual([
      ["2026-03-21T22:00:00+01:00", "2026-03-22T02:00:00+01:00"],
      ["2026-03-28T22:00:00+01:00", "2026-03-29T03:00:00+02:00"],
      ["2026-04-04T22:00:00+02:00", "2026-04-05T02:00:00+02:00"],
    ]);
    expect(timestampDate(saved.occurrences[1]!.endTime!).toISOString()).toBe("2026-03-29T01:00:00.000Z");
    // An unsaved definition: 02:30 every day in New York skips the spring-forward day.
    const unsaved = await viewer.previewWindow({
      window: { case: "spec", value: spec({ rrule: "FREQ=DAILY", dtstart: "2026-03-06T02:30", timeZone: "America/New_York" }) },
      count: 3,
      after: timestampFromDate(new Date("2026-03-07T00:00Z")),
    });
    expect(unsaved.occurrences.map((o) => o.localStart)).toEqual(["2026-03-07T02:30:00-05:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]);
    expect((await viewer.previewWindow({ window: { case: "id", value: created.id } })).occurrences).toHaveLength(10);

    const updated = (await operator.updateWindow({ id: created.id, window: spec({ name: "db sundays", rrule: "FREQ=WEEKLY;BYDAY=SU", enabled: false }) })).window!;
    expect(updated.spec).toMatchObject({ name: "db sundays", enabled: false });
    expect(updated.nextStartTime).toBeUndefined();
    await operator.deleteWindow({ id: created.id });
    expect(Code[(await failure(operator.deleteWindow({ id: created.id }))).code]).toBe("NotFound");
    expect((await admin.listWindows({})).windows).toEqual([]);
  });

  it("refuses bad input with InvalidArgument (or the right code) and changes nothing", async () => {
    const cases: [SpecInit, string, RegExp][] = [
      [{ name: "" }, "InvalidArgument", /window.name is required/],
      [{ kind: WindowKind.UNSPECIFIED }, "InvalidArgument", /window.kind must be MAINTENANCE or BLACKOUT/],
      [{ rrule: "FREQ=MINUTELY" }, "InvalidArgument", /FREQ=MINUTELY is not accepted/],
      [{ rrule: "FREQ=DAILY;" + "BYMONTH=1;".repeat(60) }, "InvalidArgument", /longer than 512 characters/],
      [{ dtstart: "tomorrow" }, "InvalidArgument", /dtstart "tomorrow" must be a local date and time/],
      [{ timeZone: "Europe/Atlantis" }, "InvalidArgument", /not an IANA time zone/],
      [{ duration: { seconds: 0n } }, "InvalidArgument", /duration must be from 1 minute to 31 days/],
      [{ duration: undefined }, "InvalidArgument", /duration is required/],
      [{ targets: {} }, "InvalidArgument", /names no agents/],
      [{ targets: { tags: ["Not A Label"] } }, "InvalidArgument", /window.targets.tags\[0\] "Not A Label" is not a label/],
      [{ targets: { agentIds: ["web-1"] } }, "InvalidArgument", /agent_ids\[0\] must be a UUID/],
      [{ targets: { agentIds: ["00000000-0000-4000-8000-000000000000"] } }, "NotFound", /agent 00000000-0000-4000-8000-000000000000 does not exist/],
    ];
    for (const [over, code, message] of cases) {
      const err = await failure(admin.createWindow({ window: spec(over) }));
      expect(Code[err.code], message.source).toBe(code);
      expect(err.rawMessage).toMatch(message);
    }
    expect(Code[(await failure(admin.previewWindow({ count: 5 }))).code]).toBe("InvalidArgument");
    expect((await failure(admin.previewWindow({ window: { case: "spec", value: spec() }, count: 101 }))).rawMessage).toBe("count must be at most 100");
    await admin.createWindow({ window: spec({ name: "once" }) });
    expect(Code[(await failure(admin.createWindow({ window: spec({ name: "once" }) }))).code]).toBe("AlreadyExists");
    expect((await admin.listWindows({})).windows.map((w) => w.spec!.name)).toEqual(["once"]);
    await admin.deleteWindow({ id: (await admin.listWindows({})).windows[0]!.id });
  });

  it("refuses installs and reboots for an agent in an open blackout, naming the window and its end; the audit log has every change", async () => {
    // Open since yesterday, every day for a day: open now, whatever the time.
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const freeze = (
      await admin.createWindow({
        window: spec({ name: "freeze", kind: WindowKind.BLACKOUT, rrule: "FREQ=DAILY;COUNT=3", dtstart: `${yesterday}T00:00`, timeZone: "UTC", duration: { seconds: 86_400n }, targets: { agentIds: [agent.agentId] } }),
      })
    ).window!;
    expect(freeze.openUntil).toBeDefined();
    const until = timestampDate(freeze.openUntil!).toISOString().replace(".000Z", "Z");
    const message = new RegExp(`^agent \\S+ is in blackout window "freeze" until ${until} \\(.* UTC\\): no install, reboot or agent upgrade can be queued for it before then$`);

    const reboot = await failure(cp.admin.fleet.rebootAgent({ agentId: agent.agentId }));
    expect([Code[reboot.code], reboot.rawMessage]).toEqual(["FailedPrecondition", expect.stringMatching(message)]);
    const install = await failure(
      cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "installUpdates", value: { packages: [{ source: "apt", name: "curl" }] } } }),
    );
    expect([Code[install.code], install.rawMessage]).toEqual(["FailedPrecondition", expect.stringMatching(message)]);
    // A scan is no change: it still goes.
    await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "scanUpdates", value: {} } });
    await admin.deleteWindow({ id: freeze.id });
    await cp.admin.fleet.rebootAgent({ agentId: agent.agentId });

    const audit = await cp.app.db.prisma.auditEntry.findMany({ where: { action: { startsWith: "redflag.v1.MaintenanceService/" } }, orderBy: { id: "asc" } });
    expect(audit.map((e) => `${e.action.split("/")[1]} ${e.actorName}`)).toEqual([
      "CreateWindow oscar",
      "UpdateWindow oscar",
      "DeleteWindow oscar",
      "CreateWindow admin.key",
      "DeleteWindow admin.key",
      "CreateWindow admin.key",
      "DeleteWindow admin.key",
    ]);
  });
});

import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandOutcome, CommandSchema, PackageResultState } from "@redflag/gen/command_pb";
import { Role } from "@redflag/gen/identity_pb";
import { MaintenanceService, RebootMode, RebootPolicySpecSchema, WindowKind } from "@redflag/gen/maintenance_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { recordScanReports } from "../src/store/commands.ts";
import { runInProcess } from "./support/cli.ts";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Scheduled installs and reboot policies end to end (issue 16): policies kept over Connect by
// role, and the fleet patching itself through the leader's scheduler: an auto-install window
// queues the approved update's install, the agent reports it installed, the reboot policy queues
// a signed reboot naming its hooks, and a host that does not come back is flagged in ListAgents.

const PASSWORD = "a long enough passphrase 42";

type SpecInit = Exclude<MessageInitShape<typeof RebootPolicySpecSchema>, { $typeName: string }>;
const spec = (over: SpecInit = {}) =>
  create(RebootPolicySpecSchema, {
    name: "web reboots",
    targets: { groups: ["web"] },
    mode: RebootMode.ALWAYS,
    windowOnly: false,
    preHook: "drain",
    postHook: "undrain",
    hookTimeout: { seconds: 120n },
    returnTimeout: { seconds: 600n },
    enabled: true,
    ...over,
  });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return err;
}

describe("scheduled installs and reboot policies", () => {
  let cp: TestControlPlane;
  let web: TestAgent;
  let operator: Client<typeof MaintenanceService>;
  let viewer: Client<typeof MaintenanceService>;

  const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
  const poll = async () => {
    const res = await web.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0" } });
    await cp.app.lastSeen.flush();
    return res.commands.map((c) => fromBinary(CommandSchema, c.command));
  };

  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
    const users = createClient(UserService, as(cp.adminKey));
    await users.createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
    await users.createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER });
    const login = async (username: string) =>
      (await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD })).sessionToken;
    operator = createClient(MaintenanceService, as(await login("oscar")));
    viewer = createClient(MaintenanceService, as(await login("victor")));
    web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-1" });
    await cp.admin.fleet.setAgentLabels({ agentId: web.agentId, group: "web", tags: [] });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
  });

  it("keeps reboot policies by role and refuses bad input with the field's name, changing nothing", async () => {
    expect((await failure(viewer.createRebootPolicy({ policy: spec() }))).code).toBe(Code.PermissionDenied);
    const cases: [SpecInit, Code, RegExp][] = [
      [{ mode: RebootMode.UNSPECIFIED }, Code.InvalidArgument, /^policy.mode must be NEVER, WHEN_REQUIRED or ALWAYS$/],
      [{ preHook: "../../bin/sh" }, Code.InvalidArgument, /^policy.pre_hook "..\/..\/bin\/sh" is not a hook name/],
      [{ postHook: "rm -rf /" }, Code.InvalidArgument, /^policy.post_hook "rm -rf \/" is not a hook name/],
      [{ hookTimeout: { seconds: 1801n } }, Code.InvalidArgument, /^policy.hook_timeout must be from 1 second to 30 minutes$/],
      [{ returnTimeout: { seconds: 30n } }, Code.InvalidArgument, /^policy.return_timeout must be from 1 minute to 24 hours$/],
      [{ targets: {} }, Code.InvalidArgument, /^policy.targets names no agents/],
      [{ name: "" }, Code.InvalidArgument, /^policy.name is required/],
      [{ targets: { agentIds: ["00000000-0000-4000-8000-000000000000"] } }, Code.NotFound, /does not exist/],
    ];
    for (const [over, code, message] of cases) {
      const err = await failure(operator.createRebootPolicy({ policy: spec(over) }));
      expect([Code[err.code], err.rawMessage], message.source).toEqual([Code[code], expect.stringMatching(message)]);
    }
    const blackout = await failure(
      operator.createWindow({ window: { name: "no", kind: WindowKind.BLACKOUT, rrule: "FREQ=DAILY", dtstart: "2026-01-01T00:00", duration: { seconds: 3600n }, timeZone: "UTC", targets: { allAgents: true }, enabled: true, autoInstall: true } }),
    );
    expect([blackout.code, blackout.rawMessage]).toEqual([Code.InvalidArgument, "window.auto_install is for maintenance windows: a blackout window installs nothing"]);
    expect((await viewer.listRebootPolicies({})).policies).toEqual([]);
    expect((await viewer.listWindows({})).windows).toEqual([]);

    const { policy } = await operator.createRebootPolicy({ policy: spec({ hookTimeout: undefined, returnTimeout: undefined }) });
    expect(policy!.spec).toMatchObject({ name: "web reboots", mode: RebootMode.ALWAYS, hookTimeout: { seconds: 300n }, returnTimeout: { seconds: 900n } });
    expect(policy!.createdBy).toBe("oscar");
    expect((await failure(operator.createRebootPolicy({ policy: spec() }))).code).toBe(Code.AlreadyExists);
    const updated = await operator.updateRebootPolicy({ id: policy!.id, policy: spec() });
    expect(updated.policy!.spec).toMatchObject({ returnTimeout: { seconds: 600n } });
    expect((await viewer.listRebootPolicies({})).policies.map((p) => p.spec!.name)).toEqual(["web reboots"]);
    const audit = await cp.app.db.prisma.auditEntry.findMany({ where: { target: `reboot_policy:${policy!.id}` }, orderBy: { id: "asc" } });
    expect(audit.map((e) => `${e.action.split("/")[1]} ${e.actorName}`)).toEqual(["CreateRebootPolicy oscar", "UpdateRebootPolicy oscar"]);
  });

  it("installs the approved update in the open window, reboots by policy with its hooks, and flags the host that does not come back", async () => {
    // Open since yesterday, every day for a day: open now, whatever the time.
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const { window } = await operator.createWindow({
      window: { name: "web any time", kind: WindowKind.MAINTENANCE, rrule: "FREQ=DAILY", dtstart: `${yesterday}T00:00`, duration: { seconds: 86_400n }, timeZone: "UTC", targets: { groups: ["web"] }, enabled: true, autoInstall: true },
    });
    expect(window!.spec!.autoInstall).toBe(true);
    const update = { source: "apt", name: "openssl", architecture: "amd64", currentVersion: "3.0.14", availableVersion: "3.0.15", repository: "bookworm-security", severity: "security", security: true, sizeBytes: 1000n, rebootRequired: true };
    await recordScanReports(cp.app.db.prisma, cp.app.db.statements, web.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(), scan: { updates: [update], parts: 0, sources: ["apt"] } }], { rows: 10_000 });
    await createClient(UpdateService, as(cp.adminKey)).approveUpdates({ selection: { agentIds: [web.agentId] } });

    await cp.app.scheduler.tick();
    const [install] = await poll();
    expect(install?.action.case).toBe("installUpdates");
    const value = install!.action.case === "installUpdates" ? install!.action.value : undefined;
    expect(value?.packages.map((p) => `${p.name}=${p.version}`)).toEqual(["openssl=3.0.15"]);
    expect(timestampDate(value!.notAfter!).getTime()).toBeGreaterThan(Date.now());
    expect((await cp.app.db.prisma.command.findUniqueOrThrow({ where: { id: install!.id } })).createdBy).toBe("window:web any time");

    await web.client.reportResults({
      results: [
        {
          commandId: install!.id,
          outcome: CommandOutcome.SUCCEEDED,
          message: "1 installed",
          detail: { case: "installUpdates", value: { packages: [{ source: "apt", name: "openssl", architecture: "amd64", fromVersion: "3.0.14", toVersion: "3.0.15", state: PackageResultState.INSTALLED }] } },
        },
      ],
    });
    await cp.app.scheduler.tick();
    const [reboot] = await poll();
    expect(reboot?.action).toMatchObject({ case: "reboot", value: { force: true, preHook: "drain", postHook: "undrain", hookTimeoutSeconds: 120 } });
    // Decided once: another run queues nothing more.
    await cp.app.scheduler.tick();
    expect(await cp.app.db.prisma.command.count({ where: { agentId: web.agentId, type: "reboot" } })).toBe(1);

    const rebootTime = new Date(Date.now() + 60_000);
    await web.client.reportResults({
      results: [{ commandId: reboot!.id, outcome: CommandOutcome.SUCCEEDED, message: "reboot scheduled", detail: { case: "reboot", value: { scheduled: true, rebootTime: timestampFromDate(rebootTime), wasRequired: true, preHookOutcome: "ok" } } }],
    });
    const fleet = cp.admin.fleet;
    const overdue = async () => (await fleet.getAgent({ agentId: web.agentId })).agent!.rebootOverdueSince;
    // Within its ten minutes: nothing. After them: flagged, and reboot_overdue is in the outbox.
    await cp.app.scheduler.tick(new Date(rebootTime.getTime() + 9 * 60_000));
    expect(await overdue()).toBeUndefined();
    await cp.app.scheduler.tick(new Date(rebootTime.getTime() + 11 * 60_000));
    expect(timestampDate((await overdue())!)).toEqual(new Date(rebootTime.getTime() + 10 * 60_000));
    const listed = (await fleet.listAgents({ group: "web" })).agents.find((a) => a.id === web.agentId);
    expect(listed?.rebootOverdueSince).toBeDefined();
    expect(await cp.app.db.prisma.notificationEvent.count({ where: { kind: "reboot_overdue", agentId: web.agentId } })).toBe(1);
    // The CLI says so too.
    const config = await mkdtemp(path.join(tmpdir(), "rf-reboots-"));
    try {
      const cli = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });
      const since = new Date(rebootTime.getTime() + 10 * 60_000).toISOString();
      expect((await cli(["agents", "get", web.agentId])).stdout).toContain(`; not back after its reboot (overdue since ${since})`);
      expect((await cli(["agents", "list", "--group", "web"])).stdout).toMatch(/^\S+\s+web-1\s+.*\s(required, )?overdue$/m);
    } finally {
      await rm(config, { recursive: true, force: true });
    }
  });
});

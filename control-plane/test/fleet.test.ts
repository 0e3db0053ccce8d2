import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandType } from "@redflag/gen/command_pb";
import { CommandCreator } from "@redflag/gen/command_service_pb";
import { OsFamily } from "@redflag/gen/common_pb";
import { AgentHealth, AgentSort, FleetService } from "@redflag/gen/fleet_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configIn, newRegistrationToken, nonce, randomMachineId, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
let fleet: ReturnType<typeof createClient<typeof FleetService>>;
let a: TestAgent;
let b: TestAgent;

async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectError);
  expect(Code[(err as ConnectError).code], (err as ConnectError).rawMessage).toBe(Code[code]);
  if (message) expect((err as ConnectError).rawMessage).toMatch(message);
}

beforeAll(async () => {
  cp = await startTestControlPlane();
  fleet = createClient(FleetService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
  a = await registerTestAgent(cp, await newRegistrationToken(cp));
  b = await registerTestAgent(cp, await newRegistrationToken(cp));
  // Only a has polled: b was never heard from.
  await a.client.pollCommands({ nonce: nonce() });
  await cp.app.lastSeen.flush();
});
afterAll(async () => {
  await cp?.close();
});

describe("FleetService", () => {
  it("labels agents and filters by tag, group, health, OS and text, sorted as asked", async () => {
    await fleet.setAgentLabels({ agentId: a.agentId, tags: ["Web", "prod", "web"], group: "dmz" });
    await expectCode(fleet.setAgentLabels({ agentId: a.agentId, tags: ["has space"] }), Code.InvalidArgument, /tag "has space" must be/);
    expect((await fleet.listAgents({ tag: "web" })).agents.map((x) => x.id)).toEqual([a.agentId]);
    expect((await fleet.listAgents({ group: "dmz" })).agents[0]).toMatchObject({ tags: ["web", "prod"], group: "dmz" });
    expect((await fleet.listAgents({ health: AgentHealth.NEVER_REPORTED })).agents.map((x) => x.id)).toEqual([b.agentId]);
    expect((await fleet.listAgents({ health: AgentHealth.ONLINE })).agents.map((x) => x.id)).toEqual([a.agentId]);
    expect((await fleet.listAgents({ osFamily: OsFamily.LINUX })).agents).toHaveLength(2);
    expect((await fleet.listAgents({ osFamily: OsFamily.WINDOWS })).agents).toHaveLength(0);
    const hostname = (await fleet.getAgent({ agentId: b.agentId })).agent!.hostname;
    expect((await fleet.listAgents({ search: hostname.toUpperCase() })).agents.map((x) => x.id)).toEqual([b.agentId]);
    expect((await fleet.listAgents({ search: a.agentId })).agents.map((x) => x.id)).toEqual([a.agentId]);
    const byRegistration = await fleet.listAgents({ sort: AgentSort.REGISTERED, descending: true });
    expect(byRegistration.agents.map((x) => x.id)).toEqual([b.agentId, a.agentId]);
    await expectCode(fleet.listAgents({ health: 42 as AgentHealth }), Code.InvalidArgument, /not an agent health/);
    await expectCode(fleet.listAgents({ sort: 42 as AgentSort }), Code.InvalidArgument, /not an agent sort/);
  });

  it("keeps the reboot flag of every poll on the agent record, with the sources that said so, and filters by it", async () => {
    const needsReboot = () => fleet.listAgents({ rebootRequired: true }).then((r) => r.agents.map((x) => x.id));
    expect(await needsReboot()).toEqual([]);
    await a.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0", rebootRequired: true, rebootRequiredBy: ["dpkg", "dnf"] } });
    // Before the buffered status is written, readers see it already.
    expect((await fleet.getAgent({ agentId: a.agentId })).agent).toMatchObject({ rebootRequired: true, status: { rebootRequiredBy: ["dpkg", "dnf"] } });
    await cp.app.lastSeen.flush();
    expect(await needsReboot()).toEqual([a.agentId]);
    expect((await fleet.listAgents({})).agents.find((x) => x.id === b.agentId)?.rebootRequired).toBe(false);
    // A poll without the reboot flag (after the reboot) clears it.
    await a.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0", rebootRequired: false, rebootRequiredUnknown: "/usr/bin/dnf needs-restarting failed (exit status 1)" } });
    await cp.app.lastSeen.flush();
    expect(await needsReboot()).toEqual([]);
    expect((await fleet.getAgent({ agentId: a.agentId })).agent).toMatchObject({ rebootRequired: false, status: { rebootRequiredBy: [], rebootRequiredUnknown: "/usr/bin/dnf needs-restarting failed (exit status 1)" } });
  });

  it("overrides subsystems per agent and delivers them in that agent's config only", async () => {
    await expectCode(fleet.updateSubsystems({ agentId: a.agentId, subsystems: [{ name: "portage", enabled: true, timeoutSeconds: 60 }] }), Code.InvalidArgument, /not a subsystem/);
    await expectCode(fleet.updateSubsystems({ agentId: a.agentId, subsystems: [{ name: "apt", enabled: true, autoRun: true, intervalSeconds: 5, timeoutSeconds: 60 }] }), Code.InvalidArgument, /interval_seconds must be from 300/);
    const res = await fleet.updateSubsystems({ agentId: a.agentId, subsystems: [{ name: "docker", enabled: false, autoRun: false, timeoutSeconds: 120 }] });
    expect(res.config?.subsystems.find((s) => s.name === "docker")).toMatchObject({ enabled: false, autoRun: false, timeoutSeconds: 120 });
    const polled = await a.client.pollCommands({ nonce: nonce() });
    expect(configIn(a, polled.signedConfig)?.subsystems.find((s) => s.name === "docker")?.enabled).toBe(false);
    const other = await b.client.pollCommands({ nonce: nonce() });
    expect(configIn(b, other.signedConfig)?.subsystems.find((s) => s.name === "docker")?.enabled).toBe(true);
    expect((await fleet.getAgentConfig({ agentId: a.agentId })).overrides.map((s) => s.name)).toEqual(["docker"]);
    await fleet.updateSubsystems({ agentId: a.agentId, subsystems: [] });
    expect((await fleet.getAgentConfig({ agentId: a.agentId })).overrides).toEqual([]);
  });

  it("queues scans, heartbeat and reboots as signed commands, checking their input", async () => {
    const scan = await fleet.triggerScan({ agentId: a.agentId, subsystems: ["apt", "docker"] });
    expect(scan.command).toMatchObject({ type: CommandType.SCAN_UPDATES, createdBy: "admin.key", createdByKind: CommandCreator.ADMIN_KEY });
    expect((await fleet.setHeartbeat({ agentId: a.agentId, enabled: true, intervalSeconds: 3 })).command?.type).toBe(CommandType.ENABLE_HEARTBEAT);
    expect((await fleet.setHeartbeat({ agentId: a.agentId, enabled: false })).command?.type).toBe(CommandType.DISABLE_HEARTBEAT);
    await expectCode(fleet.setHeartbeat({ agentId: a.agentId, enabled: true, intervalSeconds: 600 }), Code.InvalidArgument, /at most 60/);
    expect((await fleet.rebootAgent({ agentId: a.agentId, delaySeconds: 300, message: "patch night" })).command).toMatchObject({ type: CommandType.REBOOT, createdByKind: CommandCreator.ADMIN_KEY });
    await expectCode(fleet.rebootAgent({ agentId: a.agentId, delaySeconds: 90 * 86_400 }), Code.InvalidArgument, /delay_seconds/);
    await expectCode(fleet.triggerScan({ agentId: "00000000-0000-4000-8000-000000000000" }), Code.NotFound);
  });

  it("rebinds a machine ID for an admin, recording it, and refuses the old one afterwards", async () => {
    await expectCode(fleet.rebindMachineId({ agentId: b.agentId, machineId: "xyz" }), Code.InvalidArgument, /64 lower-case hex/);
    await expectCode(fleet.rebindMachineId({ agentId: b.agentId, machineId: a.machineId }), Code.AlreadyExists);
    const fresh = randomMachineId();
    const res = await fleet.rebindMachineId({ agentId: b.agentId, machineId: fresh });
    expect(res.agent?.machineId).toBe(fresh);
    await expectCode(b.client.pollCommands({ nonce: nonce() }), Code.PermissionDenied, /machine ID does not match/);
    const events = await cp.app.db.prisma.securityEvent.findMany({ where: { type: "machine_id_rebound" } });
    expect(events).toHaveLength(1);
  });

  it("decommissions: credentials stop at once and pending commands are cancelled", async () => {
    const res = await fleet.decommissionAgent({ agentId: a.agentId });
    expect(res.agent?.health).toBe(AgentHealth.DECOMMISSIONED);
    expect(res.cancelledCommands).toBeGreaterThanOrEqual(4);
    await expectCode(a.client.pollCommands({ nonce: nonce() }), Code.PermissionDenied, /this agent has been decommissioned/);
    await expectCode(fleet.triggerScan({ agentId: a.agentId }), Code.FailedPrecondition, /decommissioned/);
    expect((await fleet.decommissionAgent({ agentId: a.agentId })).cancelledCommands).toBe(0);
  });
});

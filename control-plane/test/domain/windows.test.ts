import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandSchema } from "@redflag/gen/command_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { MaintenanceService } from "@redflag/gen/maintenance_service_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { describe, expect, it } from "vitest";
import type { EventBus } from "../../src/cluster/events.ts";
import type { Wakeups } from "../../src/cluster/wakeups.ts";
import { createCommandQueue, type CommandCaller } from "../../src/domain/commands.ts";
import { installApproved } from "../../src/domain/updates.ts";
import { addWindow, agentWindowsAt, changeWindow, removeWindow } from "../../src/domain/windows.ts";
import type { CommandSigner } from "../../src/signing/signer.ts";
import type { CommandRow } from "../../src/store/commands.ts";
import type { WindowInput } from "../../src/store/windows.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, insertUpdate, mediumDatabase } from "../support/medium.ts";

const events = { publish: () => {} } as unknown as EventBus;
const wakeups = { notify: () => {} } as unknown as Wakeups;
const noMinimum = { minimumAgentVersion: "" };
const oscar: CommandCaller = {
  role: "admin",
  keyScope: "user:oscar",
  creator: { createdBy: "oscar", createdByKind: "person" },
  record: (tx, { row }) => auditAs("CreateCommand", CommandService, `agent:${row.agentId}`)(tx, undefined),
};
const reboot = { case: "reboot" as const, value: { $typeName: "redflag.v1.Reboot" as const, delaySeconds: 0, message: "", force: false } };
const scan = { case: "scanUpdates" as const, value: { $typeName: "redflag.v1.ScanUpdates" as const, subsystems: [] } };
const install = (name: string) => ({
  case: "installUpdates" as const,
  value: { $typeName: "redflag.v1.InstallUpdates" as const, packages: [{ $typeName: "redflag.v1.PackageRef" as const, source: "apt", name, version: "", architecture: "" }], sources: [] },
});
const notAfterOf = (row: CommandRow) => {
  const action = fromBinary(CommandSchema, row.action).action;
  if (action.case !== "installUpdates") throw new Error("not an install");
  return action.value.notAfter ? timestampDate(action.value.notAfter).toISOString() : undefined;
};
const code = (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err));

// Saturday nights 22:00–02:00 Berlin time for the "db" group; a freeze every 24 December for
// 3 days on the "frozen" tag.
const window = (over: Partial<WindowInput>): WindowInput => ({
  name: "w",
  kind: "maintenance",
  rrule: "FREQ=WEEKLY;BYDAY=SA",
  dtstart: "2026-01-03T22:00",
  durationSeconds: 4 * 3600,
  timeZone: "Europe/Berlin",
  allAgents: false,
  groups: [],
  tags: [],
  agentIds: [],
  enabled: true,
  ...over,
});
const record = <T>(method: string) => auditAs<T>(method, MaintenanceService, "window");

describe.each(availableBackends)("maintenance windows on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  it("creates, updates and deletes a window with its audit entry, or (when that cannot be written) not at all", async () => {
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(addWindow(m.db, window({ name: "atomic", allAgents: true }), "oscar", record("CreateWindow"))).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.maintenanceWindow.count({ where: { name: "atomic" } })).toBe(0);

    const row = await addWindow(m.db, window({ name: "atomic", allAgents: true, rrule: "freq=weekly;byday=sa", dtstart: "2026-01-03T22:00" }), "oscar", record("CreateWindow"));
    expect(row).toMatchObject({ rrule: "FREQ=WEEKLY;BYDAY=SA", dtstart: "2026-01-03T22:00:00", createdBy: "oscar" });
    const taken = await addWindow(m.db, window({ name: "atomic", allAgents: true }), "oscar", record("CreateWindow")).catch(code);
    expect(taken).toBe("AlreadyExists");
    const ghost = await addWindow(m.db, window({ name: "ghost", agentIds: ["00000000-0000-4000-8000-000000000000"] }), "oscar", record("CreateWindow")).catch(code);
    expect(ghost).toBe("NotFound");
    const bad = await addWindow(m.db, window({ name: "bad", allAgents: true, timeZone: "Mars/Olympus" }), "oscar", record("CreateWindow")).catch(code);
    expect(bad).toBe("InvalidArgument");

    const changed = await changeWindow(m.db, row.id, window({ name: "atomic", allAgents: true, kind: "blackout" }), new Date("2026-07-01T00:00Z"), record("UpdateWindow"));
    expect(changed).toMatchObject({ kind: "blackout", updatedAt: new Date("2026-07-01T00:00Z") });
    await removeWindow(m.db, row.id, record("DeleteWindow"));
    expect(await m.db.maintenanceWindow.count({ where: { id: row.id } })).toBe(0);
    expect(await removeWindow(m.db, row.id, record("DeleteWindow")).catch(code)).toBe("NotFound");
    const actions = (await m.db.auditEntry.findMany({ where: { action: { startsWith: "redflag.v1.MaintenanceService/" } } })).map((e) => e.action.split("/")[1]);
    expect(actions.sort()).toEqual(["CreateWindow", "DeleteWindow", "UpdateWindow"]);
  });

  it("says which windows are open for an agent, by group, tag or ID, and ignores disabled ones", async () => {
    const db1 = await insertAgent(m.db, "db-1");
    await m.db.agent.update({ where: { id: db1.id }, data: { group: "db", tags: ["frozen"] } });
    const other = await insertAgent(m.db, "web-1");
    await addWindow(m.db, window({ name: "db nights", groups: ["db"] }), "oscar", record("CreateWindow"));
    await addWindow(m.db, window({ name: "freeze", kind: "blackout", tags: ["frozen"], rrule: "FREQ=YEARLY", dtstart: "2026-12-24T00:00", durationSeconds: 3 * 86_400 }), "oscar", record("CreateWindow"));
    await addWindow(m.db, window({ name: "off", kind: "blackout", agentIds: [db1.id], enabled: false, rrule: "FREQ=DAILY", dtstart: "2026-01-01T00:00", durationSeconds: 86_400 }), "oscar", record("CreateWindow"));

    // Saturday 2026-06-13 23:00 Berlin (21:00Z): the db window is open until 02:00 (00:00Z).
    const saturday = await agentWindowsAt(m.db, [db1.id, other.id], new Date("2026-06-13T21:00Z"));
    expect(saturday.get(db1.id)?.maintenance).toMatchObject({ window: { name: "db nights" }, until: new Date("2026-06-14T00:00Z") });
    expect(saturday.get(db1.id)?.blackout).toBeUndefined();
    expect(saturday.get(db1.id)?.nextBlackout).toMatchObject({ window: { name: "freeze" }, start: new Date("2026-12-23T23:00Z") });
    expect(saturday.get(other.id)).toEqual({ hostname: "web-1" });
    expect((await agentWindowsAt(m.db, [db1.id], new Date("2026-06-14T00:00Z"))).get(db1.id)?.maintenance).toBeUndefined();
    // Christmas: the freeze is on until 27 December 00:00 Berlin time.
    expect((await agentWindowsAt(m.db, [db1.id], new Date("2026-12-25T12:00Z"))).get(db1.id)?.blackout).toMatchObject({ until: new Date("2026-12-26T23:00Z") });
    await m.db.maintenanceWindow.deleteMany({});
  });

  it("refuses installs and reboots in a blackout, naming it and its end, and bounds installs by the open maintenance window (injected clock)", async () => {
    let now = new Date("2026-06-13T21:00Z");
    const queue = createCommandQueue(m.db, wakeups, {} as CommandSigner, events, 86_400, noMinimum, () => now);
    const agent = await insertAgent(m.db, "app-9");
    await m.db.agent.update({ where: { id: agent.id }, data: { group: "apps" } });
    await addWindow(m.db, window({ name: "apps nightly", groups: ["apps"] }), "oscar", record("CreateWindow"));
    await addWindow(m.db, window({ name: "audit week", kind: "blackout", agentIds: [agent.id], rrule: "FREQ=YEARLY", dtstart: "2026-06-15T08:00", durationSeconds: 5 * 86_400 }), "oscar", record("CreateWindow"));

    // Inside the maintenance window: the install carries its end (02:00 Berlin = 00:00Z).
    expect(notAfterOf(await queue.queue(oscar, agent.id, install("openssl")))).toBe("2026-06-14T00:00:00.000Z");
    // Outside it: bounded by the next blackout's start (Monday 08:00 Berlin = 06:00Z).
    now = new Date("2026-06-14T12:00Z");
    expect(notAfterOf(await queue.queue(oscar, agent.id, install("openssl")))).toBe("2026-06-15T06:00:00.000Z");
    // In the blackout: refused, nothing queued; scans still go.
    now = new Date("2026-06-16T12:00Z");
    const before = await m.db.command.count({ where: { agentId: agent.id } });
    for (const action of [install("openssl"), reboot]) {
      const err = await queue.queue(oscar, agent.id, action).catch((e: unknown) => e);
      expect(code(err)).toBe("FailedPrecondition");
      expect((err as ConnectError).rawMessage).toBe(
        'agent app-9 is in blackout window "audit week" until 2026-06-20T06:00:00Z (2026-06-20 08:00 Europe/Berlin): no install, reboot or agent upgrade can be queued for it before then',
      );
    }
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(before);
    await queue.queue(oscar, agent.id, scan);
    // After it, with no window open or coming: no bound at all... until next year's audit week.
    now = new Date("2026-06-20T06:00Z");
    expect(notAfterOf(await queue.queue(oscar, agent.id, install("openssl")))).toBe("2027-06-15T06:00:00.000Z");
    await m.db.maintenanceWindow.deleteMany({});
    expect(notAfterOf(await queue.queue(oscar, agent.id, install("openssl")))).toBeUndefined();
  });

  it("refuses InstallApprovedUpdates for every selected agent when one is in a blackout, and bounds each install otherwise", async () => {
    const a = await insertAgent(m.db, "ring-a");
    const b = await insertAgent(m.db, "ring-b");
    await m.db.agent.update({ where: { id: a.id }, data: { tags: ["ring"] } });
    await m.db.agent.update({ where: { id: b.id }, data: { tags: ["ring", "locked"] } });
    for (const agent of [a, b]) await insertUpdate(m.db, agent.id, "curl", { status: "approved" });
    await addWindow(m.db, window({ name: "ring hours", tags: ["ring"], rrule: "FREQ=DAILY", dtstart: "2026-01-01T01:00", timeZone: "America/New_York", durationSeconds: 3 * 3600 }), "oscar", record("CreateWindow"));
    await addWindow(m.db, window({ name: "locked", kind: "blackout", tags: ["locked"], rrule: "FREQ=DAILY;COUNT=1", dtstart: "2026-06-10T00:00", timeZone: "UTC", durationSeconds: 86_400 }), "oscar", record("CreateWindow"));
    const filter = { keys: [], agentIds: [a.id, b.id], severities: [], securityOnly: false, packageName: "", source: "", group: "", tag: "", status: "" };
    const creator = { createdBy: "oscar", createdByKind: "person" as const };
    const rec = auditAs<unknown>("InstallApprovedUpdates", UpdateService, "updates");

    const refused = await installApproved({ db: m.db, wakeups, events, settings: noMinimum, now: () => new Date("2026-06-10T06:00Z") }, filter, creator, rec).catch((e: unknown) => e);
    expect(code(refused)).toBe("FailedPrecondition");
    expect((refused as ConnectError).rawMessage).toMatch(/^agent ring-b is in blackout window "locked" until 2026-06-11T00:00:00Z/);
    expect(await m.db.command.count({ where: { agentId: { in: [a.id, b.id] } } })).toBe(0);

    // 2026-06-11 02:00 New York (06:00Z): the ring window is open until 04:00 (08:00Z).
    const { commands } = await installApproved({ db: m.db, wakeups, events, settings: noMinimum, now: () => new Date("2026-06-11T06:00Z") }, filter, creator, rec);
    expect(commands.map(notAfterOf)).toEqual(["2026-06-11T08:00:00.000Z", "2026-06-11T08:00:00.000Z"]);
    await m.db.maintenanceWindow.deleteMany({});
  });
});

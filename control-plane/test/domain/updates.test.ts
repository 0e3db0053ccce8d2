import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandSchema } from "@redflag/gen/command_pb";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { describe, expect, it } from "vitest";
import type { AgentConfigs } from "../../src/domain/agent-config.ts";
import { removeHold, setHold } from "../../src/domain/holds.ts";
import { decide, installApproved, updatePage } from "../../src/domain/updates.ts";
import { storeCommand } from "../../src/domain/store-command.ts";
import type { EventBus } from "../../src/cluster/events.ts";
import type { UpdateFilter } from "../../src/store/package-updates.ts";
import type { Wakeups } from "../../src/cluster/wakeups.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, insertUpdate, mediumDatabase } from "../support/medium.ts";

// No minimum supported agent version: every agent may be sent anything.
const noMinimum = { minimumAgentVersion: "" };

const filter = (f: Partial<UpdateFilter>): UpdateFilter => ({
  keys: [],
  agentIds: [],
  severities: [],
  securityOnly: false,
  packageName: "",
  source: "",
  group: "",
  tag: "",
  status: "",
  ...f,
});
const configs = { invalidate: () => {} } as unknown as AgentConfigs;
const oscar = { createdBy: "oscar", createdByKind: "person" as const };
const hold = (agentId: string | null, name: string) => ({ agentId, source: "apt", name, reason: "pinned", createdBy: "oscar" });
const woken: string[] = [];
const published: string[] = [];
const wakeups = { notify: (id: string) => woken.push(id) } as unknown as Wakeups;
const events = { publish: (e: { commandId: string }[]) => published.push(...e.map((x) => x.commandId)) } as unknown as EventBus;

describe.each(availableBackends)("updates and holds on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  const statuses = async (agentId: string) =>
    Object.fromEntries((await m.db.packageUpdate.findMany({ where: { agentId }, orderBy: { name: "asc" } })).map((u) => [u.name, u.status]));
  const audits = (action: string) => m.db.auditEntry.count({ where: { action: `redflag.v1.UpdateService/${action}` } });

  it("approves the selection except held packages, and records it in the audit log", async () => {
    const agent = await insertAgent(m.db, "web-1");
    for (const name of ["curl", "nginx", "openssl"]) await insertUpdate(m.db, agent.id, name);
    await setHold(m.db, configs, hold(agent.id, "open*"), auditAs("SetHold", UpdateService, `agent:${agent.id}`));

    const approve = auditAs("ApproveUpdates", UpdateService, `agent:${agent.id}`, (chosen: { name: string }[]) => ({ count: chosen.length, names: chosen.map((u) => u.name) }));
    const outcome = await decide(m.db, filter({ agentIds: [agent.id] }), { status: "approved", from: ["pending"], by: "oscar" }, approve);
    expect(outcome).toEqual({ changed: 2, held: 1 });
    expect(await statuses(agent.id)).toEqual({ curl: "approved", nginx: "approved", openssl: "pending" });
    const entry = await m.db.auditEntry.findFirstOrThrow({ where: { action: "redflag.v1.UpdateService/ApproveUpdates" } });
    expect(entry).toMatchObject({ actorName: "oscar", target: `agent:${agent.id}`, after: { count: 2, names: ["curl", "nginx"] } });
    expect((await m.db.packageUpdate.findFirstOrThrow({ where: { agentId: agent.id, name: "curl" } })).decidedBy).toBe("oscar");

    const page = await updatePage(m.db, filter({ agentIds: [agent.id] }), { offset: 0, limit: 10 });
    expect(page.rows.map((r) => [r.name, r.held])).toEqual([["curl", false], ["nginx", false], ["openssl", true]]);
  });

  it("a bulk approve whose audit entry cannot be written approves nothing", async () => {
    const agent = await insertAgent(m.db, "web-2");
    for (const name of ["curl", "nginx"]) await insertUpdate(m.db, agent.id, name);
    const before = await audits("ApproveUpdates");
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      const approve = auditAs("ApproveUpdates", UpdateService, "updates");
      await expect(decide(m.db, filter({ agentIds: [agent.id] }), { status: "approved", from: ["pending"], by: "oscar" }, approve)).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await statuses(agent.id)).toEqual({ curl: "pending", nginx: "pending" });
    expect(await audits("ApproveUpdates")).toBe(before);
  });

  it("installs approved updates with one command per agent; a failed audit entry leaves no command and no link", async () => {
    const agent = await insertAgent(m.db, "web-3");
    for (const name of ["curl", "nginx"]) await insertUpdate(m.db, agent.id, name, { status: "approved" });
    const record = auditAs("InstallApprovedUpdates", UpdateService, `agent:${agent.id}`);

    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(installApproved({ db: m.db, wakeups, events, settings: noMinimum }, filter({ agentIds: [agent.id] }), oscar, record)).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(0);
    expect(woken).not.toContain(agent.id);

    const { commands, packages } = await installApproved({ db: m.db, wakeups, events, settings: noMinimum }, filter({ agentIds: [agent.id] }), oscar, record);
    expect(packages).toBe(2);
    expect(commands.map((c) => [c.agentId, c.type, c.createdBy])).toEqual([[agent.id, "install_updates", "oscar"]]);
    expect((await m.db.packageUpdate.findMany({ where: { agentId: agent.id } })).map((u) => u.commandId)).toEqual([commands[0]!.id, commands[0]!.id]);
    expect(woken).toContain(agent.id);
    expect(published).toContain(commands[0]!.id);
  });

  it("merges into the install already pending for an agent instead of queuing a second; one it cannot join leaves the agent out, saying why", async () => {
    const agent = await insertAgent(m.db, "web-5");
    await insertUpdate(m.db, agent.id, "curl", { status: "approved" });
    const record = auditAs("InstallApprovedUpdates", UpdateService, `agent:${agent.id}`);
    const first = await installApproved({ db: m.db, wakeups, events, settings: noMinimum }, filter({ agentIds: [agent.id] }), oscar, record);
    await insertUpdate(m.db, agent.id, "nginx", { status: "approved" });
    const second = await installApproved({ db: m.db, wakeups, events, settings: noMinimum }, filter({ agentIds: [agent.id] }), oscar, record);
    expect(second.commands.map((c) => c.id)).toEqual(first.commands.map((c) => c.id));
    expect(await m.db.command.count({ where: { agentId: agent.id, state: "pending" } })).toBe(1);
    const pending = fromBinary(CommandSchema, (await m.db.command.findFirstOrThrow({ where: { agentId: agent.id } })).action);
    expect(pending.action.case === "installUpdates" && pending.action.value.packages.map((p) => `${p.name}=${p.version}`).sort()).toEqual(["curl=1.1", "nginx=1.1"]);

    // A pending install by source (apt upgrade of everything) cannot take pinned packages.
    const other = await insertAgent(m.db, "web-6");
    await insertUpdate(m.db, other.id, "curl", { status: "approved" });
    const bySource = await storeCommand(m.db, {
      agentId: other.id,
      type: "install_updates",
      action: toBinary(CommandSchema, create(CommandSchema, { action: { case: "installUpdates", value: { sources: ["apt"] } } })),
      timeoutSeconds: 0,
      ...oscar,
    });
    const left = await installApproved({ db: m.db, wakeups, events, settings: noMinimum }, filter({ agentIds: [other.id] }), oscar, record);
    expect(left.commands).toEqual([]);
    expect(left.packages).toBe(0);
    expect(left.skipped).toEqual([{ agentId: other.id, reason: expect.stringContaining(`it names packages and the pending install names sources; cancel it first (redflag commands cancel ${bySource.id})`) }]);
    expect(await m.db.command.count({ where: { agentId: other.id } })).toBe(1);
  });

  it("a hold whose audit entry cannot be written is not set; removing one that does not exist is NotFound", async () => {
    const agent = await insertAgent(m.db, "web-4");
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(setHold(m.db, configs, hold(agent.id, "nginx"), auditAs("SetHold", UpdateService, "fleet"))).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.hold.count({ where: { agentId: agent.id } })).toBe(0);

    const missing = await setHold(m.db, configs, hold("00000000-0000-4000-8000-000000000000", "x"), auditAs("SetHold", UpdateService, "fleet")).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConnectError);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
    const gone = await removeHold(m.db, configs, "00000000-0000-4000-8000-000000000000", auditAs("RemoveHold", UpdateService, "fleet")).catch((e: unknown) => e);
    expect((gone as ConnectError).code).toBe(Code.NotFound);
  });
});

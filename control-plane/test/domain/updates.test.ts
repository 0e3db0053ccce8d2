import { Code, ConnectError } from "@connectrpc/connect";
import { UpdateService } from "@redflag/gen/update_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentConfigs } from "../../src/domain/agent-config.ts";
import { removeHold, setHold } from "../../src/domain/holds.ts";
import { decide, installApproved, updatePage } from "../../src/domain/updates.ts";
import type { EventBus } from "../../src/events.ts";
import type { UpdateFilter } from "../../src/store/package-updates.ts";
import type { Wakeups } from "../../src/wakeups.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { adminContext, failInsertsInto, insertAgent, insertUpdate, openMediumDatabase, type MediumDatabase } from "../support/medium.ts";

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
const woken: string[] = [];
const published: string[] = [];
const wakeups = { notify: (id: string) => woken.push(id) } as unknown as Wakeups;
const events = { publish: (e: { commandId: string }[]) => published.push(...e.map((x) => x.commandId)) } as unknown as EventBus;

describe.each(availableBackends)("updates and holds on %s", (backend: Backend) => {
  let m: MediumDatabase;
  beforeAll(async () => {
    m = await openMediumDatabase(backend);
  });
  afterAll(async () => {
    await m?.close();
  });

  const statuses = async (agentId: string) =>
    Object.fromEntries((await m.db.packageUpdate.findMany({ where: { agentId }, orderBy: { name: "asc" } })).map((u) => [u.name, u.status]));
  const audits = (action: string) => m.db.auditEntry.count({ where: { action: `redflag.v1.UpdateService/${action}` } });

  it("approves the selection except held packages, and records it in the audit log", async () => {
    const agent = await insertAgent(m.db, "web-1");
    for (const name of ["curl", "nginx", "openssl"]) await insertUpdate(m.db, agent.id, name);
    await setHold(m.db, configs, adminContext("SetHold", UpdateService), { agentId: agent.id, source: "apt", name: "open*", reason: "pinned" });

    const outcome = await decide(m.db, adminContext("ApproveUpdates", UpdateService), filter({ agentIds: [agent.id] }), `agent:${agent.id}`, "approved", ["pending"]);
    expect(outcome).toEqual({ changed: 2, held: 1 });
    expect(await statuses(agent.id)).toEqual({ curl: "approved", nginx: "approved", openssl: "pending" });
    const entry = await m.db.auditEntry.findFirstOrThrow({ where: { action: "redflag.v1.UpdateService/ApproveUpdates" } });
    expect(entry).toMatchObject({ actorName: "oscar", target: `agent:${agent.id}`, after: { status: "approved", count: 2 } });

    const page = await updatePage(m.db, filter({ agentIds: [agent.id] }), { offset: 0, limit: 10 });
    expect(page.rows.map((r) => [r.name, r.held])).toEqual([["curl", false], ["nginx", false], ["openssl", true]]);
  });

  it("a bulk approve whose audit entry cannot be written approves nothing", async () => {
    const agent = await insertAgent(m.db, "web-2");
    for (const name of ["curl", "nginx"]) await insertUpdate(m.db, agent.id, name);
    const before = await audits("ApproveUpdates");
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(decide(m.db, adminContext("ApproveUpdates", UpdateService), filter({ agentIds: [agent.id] }), "updates", "approved", ["pending"])).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await statuses(agent.id)).toEqual({ curl: "pending", nginx: "pending" });
    expect(await audits("ApproveUpdates")).toBe(before);
  });

  it("installs approved updates with one command per agent; a failed audit entry leaves no command and no link", async () => {
    const agent = await insertAgent(m.db, "web-3");
    for (const name of ["curl", "nginx"]) await insertUpdate(m.db, agent.id, name, { status: "approved" });
    const ctx = adminContext("InstallApprovedUpdates", UpdateService);

    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(installApproved({ db: m.db, wakeups, events }, ctx, filter({ agentIds: [agent.id] }))).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(0);
    expect(woken).not.toContain(agent.id);

    const { commands, packages } = await installApproved({ db: m.db, wakeups, events }, ctx, filter({ agentIds: [agent.id] }));
    expect(packages).toBe(2);
    expect(commands.map((c) => [c.agentId, c.type, c.createdBy])).toEqual([[agent.id, "install_updates", "oscar"]]);
    expect((await m.db.packageUpdate.findMany({ where: { agentId: agent.id } })).map((u) => u.commandId)).toEqual([commands[0]!.id, commands[0]!.id]);
    expect(woken).toContain(agent.id);
    expect(published).toContain(commands[0]!.id);
  });

  it("a hold whose audit entry cannot be written is not set; removing one that does not exist is NotFound", async () => {
    const agent = await insertAgent(m.db, "web-4");
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(setHold(m.db, configs, adminContext("SetHold", UpdateService), { agentId: agent.id, source: "apt", name: "nginx", reason: "" })).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    expect(await m.db.hold.count({ where: { agentId: agent.id } })).toBe(0);

    const missing = await setHold(m.db, configs, adminContext("SetHold", UpdateService), { agentId: "00000000-0000-4000-8000-000000000000", source: "apt", name: "x", reason: "" }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConnectError);
    expect((missing as ConnectError).code).toBe(Code.NotFound);
    const gone = await removeHold(m.db, configs, adminContext("RemoveHold", UpdateService), "00000000-0000-4000-8000-000000000000").catch((e: unknown) => e);
    expect((gone as ConnectError).code).toBe(Code.NotFound);
  });
});

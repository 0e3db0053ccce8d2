import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, CommandSchema, PackageRefSchema } from "@redflag/gen/command_pb";
import { CommandService } from "@redflag/gen/command_service_pb";
import { describe, expect, it } from "vitest";
import { createCommandQueue, type CommandCaller } from "../../src/domain/commands.ts";
import type { EventBus } from "../../src/cluster/events.ts";
import type { CommandSigner } from "../../src/signing/signer.ts";
import type { Wakeups } from "../../src/cluster/wakeups.ts";
import type { Prisma } from "../../src/store/types.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, failInsertsInto, insertAgent, mediumDatabase } from "../support/medium.ts";

// One pending command of a kind per agent (domain/pending-commands.ts), on both databases.

const events = { publish: () => {} } as unknown as EventBus;
const wakeups = { notify: () => {} } as unknown as Wakeups;
const caller = (recorded: { merged: boolean }[] = []): CommandCaller => ({
  role: "admin",
  keyScope: "user:oscar",
  creator: { createdBy: "oscar", createdByKind: "person" },
  record: async (tx, { row, merged }) => {
    recorded.push({ merged });
    await auditAs("CreateCommand", CommandService, `agent:${row.agentId}`)(tx, undefined);
  },
});
const scan = (...subsystems: string[]): Command["action"] => ({ case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems } });
const reboot: Command["action"] = { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: 0, message: "", force: false, preHook: "", postHook: "", hookTimeoutSeconds: 0 } };
const pkg = (name: string, version = "") => create(PackageRefSchema, { source: "apt", name, version, architecture: "amd64" });
const install = (...packages: ReturnType<typeof pkg>[]): Command["action"] => ({ case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages, sources: [] } });
const installSources = (...sources: string[]): Command["action"] => ({ case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [], sources } });

const actionOf = async (db: Prisma, id: string) => fromBinary(CommandSchema, (await db.command.findUniqueOrThrow({ where: { id } })).action);
const refusal = (e: unknown) => e as ConnectError;

describe.each(availableBackends)("one pending command of a kind per agent on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);
  const newQueue = () => createCommandQueue(m.db, wakeups, {} as CommandSigner, events, 86_400, { minimumAgentVersion: "" });

  it("merges a second scan into the pending one (the subsystems of both, every one when either asked for all) and says so", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "scan-1");
    const recorded: { merged: boolean }[] = [];
    const first = await queue.queue(caller(recorded), agent.id, scan("apt"));
    expect(first.merged).toBe(false);
    const second = await queue.queue(caller(recorded), agent.id, scan("docker", "apt"));
    expect(second).toMatchObject({ id: first.id, merged: true, state: "pending" });
    expect((await actionOf(m.db, first.id)).action).toMatchObject({ case: "scanUpdates", value: { subsystems: ["apt", "docker"] } });
    await queue.queue(caller(recorded), agent.id, scan());
    expect((await actionOf(m.db, first.id)).action).toMatchObject({ case: "scanUpdates", value: { subsystems: [] } });
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);
    // Each request is audited; the merged ones say so.
    expect(recorded).toEqual([{ merged: false }, { merged: true }, { merged: true }]);

    // Once delivered, it no longer counts: the next scan is a new command.
    await m.db.command.update({ where: { id: first.id }, data: { state: "sent", sentAt: new Date() } });
    const after = await queue.queue(caller(), agent.id, scan());
    expect(after.merged).toBe(false);
    expect(after.id).not.toBe(first.id);
  });

  it("refuses a second reboot while one is pending, naming it, and stores nothing", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "reboot-1");
    const first = await queue.queue(caller(), agent.id, reboot);
    const audits = await m.db.auditEntry.count();
    const err = refusal(await queue.queue(caller(), agent.id, reboot).catch((e: unknown) => e));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toBe(
      `agent ${agent.id} already has a reboot pending (command ${first.id}, queued ${first.createdAt.toISOString()}); cancel it first (redflag commands cancel ${first.id}) or wait until it is delivered`,
    );
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);
    expect(await m.db.auditEntry.count()).toBe(audits);
    // Another kind is not affected.
    expect((await queue.queue(caller(), agent.id, scan())).merged).toBe(false);
  });

  it("merges the packages of a second install into the pending one, and refuses what cannot be one install", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "install-1");
    const first = await queue.queue(caller(), agent.id, install(pkg("curl", "8.5.0-2")), 600);
    const merged = await queue.queue(caller(), agent.id, install(pkg("openssl"), pkg("curl", "8.5.0-2")), 900);
    expect(merged).toMatchObject({ id: first.id, merged: true, timeoutSeconds: 900 });
    const stored = await actionOf(m.db, first.id);
    expect(stored.timeoutSeconds).toBe(900);
    expect(stored.action.case === "installUpdates" && stored.action.value.packages.map((p) => `${p.name}=${p.version}`)).toEqual(["curl=8.5.0-2", "openssl="]);

    const versions = refusal(await queue.queue(caller(), agent.id, install(pkg("curl", "8.6.0-1"))).catch((e: unknown) => e));
    expect(versions.code).toBe(Code.FailedPrecondition);
    expect(versions.rawMessage).toContain(`already has a pending install (command ${first.id}`);
    expect(versions.rawMessage).toContain("it asks for curl (apt) at 8.6.0-1 and the pending install at 8.5.0-2");
    const mixed = refusal(await queue.queue(caller(), agent.id, installSources("apt")).catch((e: unknown) => e));
    expect(mixed.code).toBe(Code.FailedPrecondition);
    expect(mixed.rawMessage).toContain("it names sources and the pending install names packages");
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);

    // Refused or failed, the pending install is as it was.
    const undo = await failInsertsInto(m.db, "audit_entries");
    try {
      await expect(queue.queue(caller(), agent.id, install(pkg("zlib1g")))).rejects.toThrow(/refused by the test/);
    } finally {
      await undo();
    }
    const unchanged = await actionOf(m.db, first.id);
    expect(unchanged.action.case === "installUpdates" && unchanged.action.value.packages.map((p) => p.name)).toEqual(["curl", "openssl"]);
  });

  it("merges a dry run of the same packages, queues one of other packages beside it, refuses a second rollback of one package, and does not check collect_specs", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "kinds-1");
    const dryRun = (...packages: ReturnType<typeof pkg>[]): Command["action"] => ({ case: "dryRunUpdate", value: { $typeName: "redflag.v1.DryRunUpdate", packages } });
    const first = await queue.queue(caller(), agent.id, dryRun(pkg("curl"), pkg("openssl")));
    expect(await queue.queue(caller(), agent.id, dryRun(pkg("openssl"), pkg("curl")))).toMatchObject({ id: first.id, merged: true });
    expect(await queue.queue(caller(), agent.id, dryRun(pkg("zlib1g")))).toMatchObject({ merged: false });

    const rollback = (name: string): Command["action"] => ({ case: "rollbackUpdate", value: { $typeName: "redflag.v1.RollbackUpdate", package: pkg(name), targetVersion: "1.0-1" } });
    const back = await queue.queue(caller(), agent.id, rollback("curl"));
    const again = refusal(await queue.queue(caller(), agent.id, rollback("curl")).catch((e: unknown) => e));
    expect(again.code).toBe(Code.FailedPrecondition);
    expect(again.rawMessage).toContain(`already has a rollback of curl pending (command ${back.id}`);
    expect(await queue.queue(caller(), agent.id, rollback("openssl"))).toMatchObject({ merged: false });

    const specs: Command["action"] = { case: "collectSpecs", value: { $typeName: "redflag.v1.CollectSpecs" } };
    const a = await queue.queue(caller(), agent.id, specs);
    const b = await queue.queue(caller(), agent.id, specs);
    expect(b.id).not.toBe(a.id);
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(6);
  });

  it("merges a version listing of the same packages (versions asked are dropped), queues one of other packages beside it", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "versions-1");
    const list = (...packages: ReturnType<typeof pkg>[]): Command["action"] => ({ case: "listPackageVersions", value: { $typeName: "redflag.v1.ListPackageVersions", packages } });
    const first = await queue.queue(caller(), agent.id, list(pkg("curl", "7.88.1-10"), pkg("openssl")));
    const stored = await actionOf(m.db, first.id);
    expect(stored.action.case === "listPackageVersions" && stored.action.value.packages.map((p) => [p.name, p.version])).toEqual([["curl", ""], ["openssl", ""]]);
    expect(await queue.queue(caller(), agent.id, list(pkg("openssl"), pkg("curl")))).toMatchObject({ id: first.id, merged: true });
    expect(await queue.queue(caller(), agent.id, list(pkg("zlib1g")))).toMatchObject({ merged: false });
    expect(await m.db.command.count({ where: { agentId: agent.id, type: "list_package_versions" } })).toBe(2);
  });

  it("remembers a merge under an idempotency key: the retry returns the same command, merged", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "key-1");
    const first = await queue.queue(caller(), agent.id, scan(), 0, "k-first");
    const merged = await queue.queue(caller(), agent.id, scan("apt"), 0, "k-second");
    expect(merged).toMatchObject({ id: first.id, merged: true });
    expect(await queue.queue(caller(), agent.id, scan("apt"), 0, "k-second")).toMatchObject({ id: first.id, merged: true });
    expect(await queue.queue(caller(), agent.id, scan(), 0, "k-first")).toMatchObject({ id: first.id, merged: false });
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(1);
  });

  it("queues one command when several creates of a kind race, with and without idempotency keys", async () => {
    const queue = newQueue();
    const agent = await insertAgent(m.db, "race-1");
    const scans = await Promise.all(Array.from({ length: 6 }, (_, i) => queue.queue(caller(), agent.id, scan(`s${i}`), 0, i % 2 ? `race-${i}` : "")));
    expect(new Set(scans.map((s) => s.id)).size).toBe(1);
    expect(scans.filter((s) => !s.merged)).toHaveLength(1);
    const stored = await actionOf(m.db, scans[0]!.id);
    expect(stored.action.case === "scanUpdates" && [...stored.action.value.subsystems].sort()).toEqual(["s0", "s1", "s2", "s3", "s4", "s5"]);

    const reboots = await Promise.allSettled(Array.from({ length: 6 }, () => queue.queue(caller(), agent.id, reboot)));
    expect(reboots.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of reboots) if (r.status === "rejected") expect(refusal(r.reason).code).toBe(Code.FailedPrecondition);
    expect(await m.db.command.count({ where: { agentId: agent.id } })).toBe(2);
  });
});

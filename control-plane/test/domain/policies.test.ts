import { Code, ConnectError } from "@connectrpc/connect";
import { globMatcher } from "@redflag/common/glob";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { autoApprove, createPolicy, preview, removePolicy, updatePolicy } from "../../src/domain/policies.ts";
import { newId } from "../../src/ids.ts";
import { databaseGlobMatches, type PolicyDefinition } from "../../src/store/policies.ts";
import { availableBackends, type Backend } from "../support/database.ts";
import { auditAs, insertAgent, mediumDatabase } from "../support/medium.ts";

const DAY = 86_400_000;
const T0 = new Date("2026-03-01T10:00:00.000Z");
const at = (ms: number) => new Date(T0.getTime() + ms);

const rule = (over: Partial<PolicyDefinition> = {}): PolicyDefinition => ({
  name: `rule-${newId().slice(0, 8)}`,
  enabled: true,
  severities: [],
  securityOnly: false,
  sources: [],
  namePatterns: [],
  groups: [],
  tags: [],
  exclusions: [],
  delaySeconds: 0,
  position: 0,
  ...over,
});
const audited = <T>() => auditAs<T>("CreatePolicy", PolicyService, "policy");
const limits = { batch: 200, maxBatches: 10 };

// The backfill statement of the migration that added version_seen_at, as it is in its file.
const MIGRATIONS = path.join(import.meta.dirname, "../../../prisma/migrations");
const backfill = (() => {
  const folder = readdirSync(MIGRATIONS).find((f) => f.endsWith("_add_policies"))!;
  const sql = readFileSync(path.join(MIGRATIONS, folder, "migration.sql"), "utf8");
  return sql.slice(sql.indexOf('UPDATE "package_updates"'), sql.indexOf(";", sql.indexOf('UPDATE "package_updates"')) + 1);
})();

async function refused(p: Promise<unknown>, code: Code, message: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConnectError);
  expect((err as ConnectError).code).toBe(code);
  expect((err as ConnectError).rawMessage).toMatch(message);
}

describe.each(availableBackends)("policies on %s", (backend: Backend) => {
  const m = mediumDatabase(backend);

  // An update first seen (at this version) at `seen`.
  const update = (agentId: string, name: string, o: { severity?: string; security?: boolean; source?: string; seen?: Date; status?: string } = {}) =>
    m.db.packageUpdate.create({
      data: {
        agentId,
        source: o.source ?? "apt",
        name,
        architecture: "amd64",
        currentVersion: "1.0",
        availableVersion: "1.1",
        repository: "debian",
        severity: o.severity ?? "important",
        security: o.security ?? false,
        sizeBytes: 1n,
        rebootRequired: false,
        firstSeenAt: new Date(T0.getTime() - 30 * DAY),
        versionSeenAt: o.seen ?? T0,
        status: o.status ?? "pending",
      },
    });
  const statusOf = async (agentId: string, name: string) => (await m.db.packageUpdate.findFirst({ where: { agentId, name } }))?.status;
  // A fresh fleet for one test: no rules, updates or holds left from another.
  const reset = async () => {
    await m.db.policy.deleteMany();
    await m.db.hold.deleteMany();
    await m.db.agent.deleteMany();
    await m.db.auditEntry.deleteMany();
  };
  const create = (d: PolicyDefinition) => createPolicy(m.db, d, "oscar", T0, audited());

  it("matches name patterns in the database exactly as common/glob.ts does, and a pathological pattern at once", async () => {
    const names = ["linux-image-6.1", "linux-headers", "python3_pip", "python3-pip", "a_b", "axb", "nginx", "libc6", "x", "node@20", "aaaa", ""];
    const patterns = ["linux-*", "*image*", "python3_*", "a_b", "*", "**", "n*x", "*6", "lib*6*", "x*", "*@*", "a*a*a", "a*b*"];
    for (const p of patterns) for (const n of names) expect(await databaseGlobMatches(m.db, n, p), `${n} ~ ${p}`).toBe(globMatcher(p)(n));
    const start = performance.now();
    expect(await databaseGlobMatches(m.db, "a".repeat(255), `${"*a".repeat(120)}*b`)).toBe(false);
    expect(performance.now() - start).toBeLessThan(2000);
  });

  it("approves when the delay has passed, to the second, and audits it with the rule as the actor", async () => {
    await reset();
    const host = await insertAgent(m.db, "web-1");
    await update(host.id, "openssl", { security: true, seen: T0 });
    const p = await create(rule({ name: "security after 2 days", securityOnly: true, delaySeconds: 2 * 86_400 }));
    expect(await autoApprove(m.db, at(2 * DAY - 1000), limits)).toEqual([]);
    expect(await statusOf(host.id, "openssl")).toBe("pending");
    expect((await preview(m.db, { id: p.id }, at(2 * DAY - 1000), 10)).waiting).toBe(1);
    const approved = await autoApprove(m.db, at(2 * DAY), limits);
    expect(approved.map((a) => [a.name, a.policyId, a.policyName])).toEqual([["openssl", p.id, "security after 2 days"]]);
    const row = await m.db.packageUpdate.findFirst({ where: { agentId: host.id } });
    expect(row).toMatchObject({ status: "approved", decidedBy: "policy: security after 2 days", decidedAt: at(2 * DAY) });
    const entries = await m.db.auditEntry.findMany({ where: { action: "scheduler/AutoApprove" } });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ actorKind: "policy", actorId: p.id, actorName: "security after 2 days", target: `policy:${p.id}` });
    expect(entries[0]!.after).toMatchObject({ count: 1, updates: [`${host.id}/apt/openssl=1.1`] });
    // Idempotent: nothing is left to do, nothing more is recorded.
    expect(await autoApprove(m.db, at(3 * DAY), limits)).toEqual([]);
    expect(await m.db.auditEntry.count({ where: { action: "scheduler/AutoApprove" } })).toBe(1);
  });

  it("never approves a held package, fleet-wide or per agent, nor on a decommissioned agent; exclusions win; a disabled rule does nothing", async () => {
    await reset();
    const a = await insertAgent(m.db, "db-1");
    const b = await insertAgent(m.db, "db-2");
    const gone = await insertAgent(m.db, "gone-1");
    await m.db.agent.update({ where: { id: gone.id }, data: { decommissionedAt: T0 } });
    for (const host of [a, b, gone]) for (const n of ["linux-image-6.1", "postgresql-16", "curl", "bash"]) await update(host.id, n);
    await m.db.hold.create({ data: { id: newId(), agentId: null, source: "*", name: "linux-image-*", createdBy: "oscar" } });
    await m.db.hold.create({ data: { id: newId(), agentId: a.id, source: "apt", name: "postgresql*", createdBy: "oscar" } });
    await create(rule({ name: "off", enabled: false, namePatterns: ["*"] }));
    expect(await autoApprove(m.db, T0, limits)).toEqual([]);
    const p = await create(rule({ namePatterns: ["*"], exclusions: ["ba*"] }));
    const shown = await preview(m.db, { id: p.id }, T0, 10);
    expect(shown).toMatchObject({ approvable: 3, agents: 2, waiting: 0, held: 3 });
    const approved = await autoApprove(m.db, T0, limits);
    expect(approved.map((r) => `${r.agentId === a.id ? "a" : "b"}:${r.name}`).sort()).toEqual(["a:curl", "b:curl", "b:postgresql-16"]);
    expect(await statusOf(a.id, "bash")).toBe("pending");
    expect(await statusOf(a.id, "linux-image-6.1")).toBe("pending");
    expect(await statusOf(b.id, "linux-image-6.1")).toBe("pending");
    expect(await statusOf(a.id, "postgresql-16")).toBe("pending");
    // A decommissioned agent's updates are nobody's to approve.
    expect(await statusOf(gone.id, "curl")).toBe("pending");
  });

  it("chooses by severity, source, group and tag; the first rule in order is the one recorded", async () => {
    await reset();
    const web = await insertAgent(m.db, "web-1");
    const db = await insertAgent(m.db, "db-1");
    await m.db.agent.update({ where: { id: web.id }, data: { group: "web", tags: ["canary"] } });
    await m.db.agent.update({ where: { id: db.id }, data: { group: "db" } });
    await update(web.id, "nginx", { severity: "critical" });
    await update(web.id, "jq", { severity: "low" });
    await update(web.id, "ghcr.io/org/app", { severity: "critical", source: "docker" });
    await update(db.id, "nginx", { severity: "critical" });
    const later = await create(rule({ name: "later", position: 2, severities: ["critical"] }));
    const first = await create(rule({ name: "first", position: 1, severities: ["critical"], sources: ["apt"], groups: ["web"], tags: ["canary"] }));
    const approved = await autoApprove(m.db, T0, limits);
    const by = Object.fromEntries(approved.map((r) => [`${r.agentId === web.id ? "web" : "db"}:${r.name}`, r.policyName]));
    expect(by).toEqual({ "web:nginx": "first", "web:ghcr.io/org/app": "later", "db:nginx": "later" });
    expect(await statusOf(web.id, "jq")).toBe("pending");
    expect(await m.db.auditEntry.findMany({ where: { action: "scheduler/AutoApprove" }, orderBy: { actorName: "asc" }, select: { actorId: true, after: true } })).toEqual([
      { actorId: first.id, after: expect.objectContaining({ count: 1 }) },
      { actorId: later.id, after: expect.objectContaining({ count: 2 }) },
    ]);
  });

  it("approves in bounded batches, each update once even with two runs at the same time", async () => {
    await reset();
    const host = await insertAgent(m.db, "big-1");
    for (let i = 0; i < 25; i++) await update(host.id, `pkg-${i}`);
    await create(rule({ namePatterns: ["pkg-*"] }));
    const runs = await Promise.all([autoApprove(m.db, T0, { batch: 4, maxBatches: 100 }), autoApprove(m.db, T0, { batch: 4, maxBatches: 100 })]);
    const names = runs.flat().map((r) => r.name);
    expect(names).toHaveLength(25);
    expect(new Set(names).size).toBe(25);
    const entries = await m.db.auditEntry.findMany({ where: { action: "scheduler/AutoApprove" } });
    expect(entries.reduce((n, e) => n + (e.after as { count: number }).count, 0)).toBe(25);
    expect(entries.every((e) => (e.after as { count: number }).count <= 4)).toBe(true);
    // A bounded run leaves the rest for the next tick.
    await reset();
    const h2 = await insertAgent(m.db, "big-2");
    for (let i = 0; i < 10; i++) await update(h2.id, `pkg-${i}`);
    await create(rule({ namePatterns: ["pkg-*"] }));
    expect(await autoApprove(m.db, T0, { batch: 3, maxBatches: 2 })).toHaveLength(6);
    expect(await autoApprove(m.db, T0, { batch: 3, maxBatches: 2 })).toHaveLength(4);
  });

  it("lists at most 200 updates in one audit entry", async () => {
    await reset();
    const host = await insertAgent(m.db, "many-1");
    const base = { agentId: host.id, source: "apt", architecture: "amd64", currentVersion: "1", availableVersion: "2", repository: "r", severity: "low", security: false, sizeBytes: 1n, rebootRequired: false, versionSeenAt: T0 };
    await m.db.packageUpdate.createMany({ data: Array.from({ length: 250 }, (_, i) => ({ ...base, name: `lib-${i}` })) });
    await create(rule({ namePatterns: ["lib-*"] }));
    expect(await autoApprove(m.db, T0, { batch: 1000, maxBatches: 1 })).toHaveLength(250);
    const entries = await m.db.auditEntry.findMany({ where: { action: "scheduler/AutoApprove" }, orderBy: { id: "asc" } });
    expect(entries.map((e) => (e.after as { updates: string[] }).updates.length)).toEqual([200, 50]);
  });

  it("previews a saved or unsaved rule without changing anything", async () => {
    await reset();
    const host = await insertAgent(m.db, "web-1");
    await update(host.id, "curl", { seen: at(-DAY) });
    await update(host.id, "bash", { seen: T0 });
    await update(host.id, "vim", { status: "approved" });
    const before = await m.db.packageUpdate.findMany({ orderBy: { name: "asc" } });
    const shown = await preview(m.db, { definition: rule({ namePatterns: ["*"], delaySeconds: 3600 }) }, T0, 10);
    expect(shown).toMatchObject({ approvable: 1, agents: 1, waiting: 1, held: 0 });
    expect(shown.matches).toEqual([expect.objectContaining({ hostname: "web-1", name: "curl", availableVersion: "1.1", versionSeenAt: at(-DAY) })]);
    expect(await m.db.packageUpdate.findMany({ orderBy: { name: "asc" } })).toEqual(before);
    expect(await m.db.policy.count()).toBe(0);
    expect(await m.db.auditEntry.count()).toBe(0);
  });

  it("backfills version_seen_at from the latest 'found' event of the current version, else first_seen_at", async () => {
    await reset();
    const host = await insertAgent(m.db, "old-1");
    await update(host.id, "openssl", { seen: at(DAY) });
    await update(host.id, "bash", { seen: at(DAY) });
    const event = (version: string, time: Date) =>
      m.db.updateEvent.create({ data: { agentId: host.id, time, kind: "found", source: "apt", name: "openssl", architecture: "amd64", version } });
    await event("1.0", at(-20 * DAY));
    await event("1.1", at(-9 * DAY));
    await event("1.1", at(-5 * DAY));
    expect(backfill).toMatch(/^UPDATE "package_updates" p SET "version_seen_at" = COALESCE\(/);
    await m.db.$executeRawUnsafe(backfill);
    const seen = Object.fromEntries((await m.db.packageUpdate.findMany({ where: { agentId: host.id } })).map((u) => [u.name, u.versionSeenAt]));
    expect(seen).toEqual({ openssl: at(-5 * DAY), bash: new Date(T0.getTime() - 30 * DAY) });
  });

  it("refuses bad definitions with InvalidArgument and stores nothing", async () => {
    await reset();
    const cases: [Partial<PolicyDefinition>, RegExp][] = [
      [{ namePatterns: ["x".repeat(256)] }, /name_patterns\[0\].*is not a package name pattern/],
      [{ namePatterns: Array.from({ length: 51 }, (_, i) => `p${i}*`) }, /name_patterns has 51 entries; at most 50/],
      [{ namePatterns: ["*"], exclusions: ["bad name"] }, /exclusions\[0\] "bad name" is not a package name pattern/],
      [{ namePatterns: ["*"], exclusions: Array.from({ length: 51 }, (_, i) => `p${i}`) }, /exclusions has 51 entries/],
      [{ severities: ["urgent"] }, /severities\[0\] "urgent" is not a severity/],
      [{ sources: ["npm"] }, /sources\[0\] "npm" is not a package source/],
      [{ groups: ["Web Servers"] }, /groups\[0\].*is not a group/],
      [{}, /criteria is empty/],
      [{ name: "  ", namePatterns: ["*"] }, /definition.name is required/],
      [{ namePatterns: ["*"], delaySeconds: 366 * 86_400 }, /delay_seconds must be between 0 and/],
    ];
    for (const [over, message] of cases) {
      await refused(create(rule(over)), Code.InvalidArgument, message);
      await refused(preview(m.db, { definition: rule(over) }, T0, 10), Code.InvalidArgument, message);
    }
    expect(await m.db.policy.count()).toBe(0);
    expect(await m.db.auditEntry.count()).toBe(0);
  });

  it("updates and deletes with an audit entry each; unknown IDs and taken names are refused", async () => {
    await reset();
    const p = await create(rule({ name: "one", namePatterns: ["*"] }));
    await refused(create(rule({ name: "one", namePatterns: ["*"] })), Code.AlreadyExists, /"one" already exists/);
    const changed = await updatePolicy(m.db, p.id, rule({ name: "uno", namePatterns: ["curl"], delaySeconds: 60 }), "oscar", at(1000), audited());
    expect(changed).toMatchObject({ id: p.id, name: "uno", namePatterns: ["curl"], delaySeconds: 60, updatedAt: at(1000), createdAt: T0 });
    await refused(updatePolicy(m.db, newId(), rule({ namePatterns: ["*"] }), "oscar", T0, audited()), Code.NotFound, /does not exist/);
    await refused(preview(m.db, { id: newId() }, T0, 10), Code.NotFound, /does not exist/);
    await removePolicy(m.db, p.id, audited());
    await refused(removePolicy(m.db, p.id, audited()), Code.NotFound, /does not exist/);
    expect(await m.db.policy.count()).toBe(0);
    expect(await m.db.auditEntry.count()).toBe(3);
  });
});

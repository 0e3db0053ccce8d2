import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import { UpdateService, UpdateStatus } from "@redflag/gen/update_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports, type PackageUpdateInput } from "../src/store/commands.ts";
import { recordSmallScan, statementsRunner, withScanLease } from "../src/store/scans.ts";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";
import { availableBackends, freshDatabase, type Backend } from "./support/database.ts";

// The Updates page's by-package view: one row per package and version with how many hosts need
// it, grouped and counted by the database, on the embedded database and on PostgreSQL.
const pkg = (name: string, availableVersion: string, severity: string, over: Partial<PackageUpdateInput> = {}): PackageUpdateInput => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion,
  repository: severity === "unknown" ? "bookworm" : "bookworm-security",
  severity,
  security: severity !== "unknown",
  sizeBytes: 1000n,
  rebootRequired: name.startsWith("linux-image"),
  ...over,
});

describe.each(availableBackends)("ListPackageUpdates on %s", (backend: Backend) => {
  let cp: TestControlPlane;
  let updates: Client<typeof UpdateService>;
  const hosts: TestAgent[] = [];
  let scanClock = Date.now();
  const scan = (agent: TestAgent, list: PackageUpdateInput[]) =>
    recordScanReports(cp.app.db.prisma, cp.app.db.statements, agent.agentId, [{ id: crypto.randomUUID(), scanTime: new Date(++scanClock), scan: { updates: list, parts: 0, sources: ["apt"] } }], { rows: 10_000 });

  beforeAll(async () => {
    cp = await startTestControlPlane({}, { db: await freshDatabase({ backend }), port: 0 });
    updates = createClient(UpdateService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    const token = await newRegistrationToken(cp);
    for (let i = 0; i < 4; i++) hosts.push(await registerTestAgent(cp, token));
    const [web, db, mail, old] = hosts as [TestAgent, TestAgent, TestAgent, TestAgent];
    await cp.admin.fleet.setAgentLabels({ agentId: web.agentId, group: "web", tags: ["prod"] });
    // tzdata: regular, on three hosts, one of them in two architectures; openssl: a security fix
    // on two hosts at one version and on a third at another; the kernel on one host.
    await scan(web, [pkg("tzdata", "2024b", "unknown"), pkg("tzdata", "2024b", "unknown", { architecture: "all" }), pkg("openssl", "3.0.15", "security"), pkg("linux-image-amd64", "6.1.119", "important")]);
    await scan(db, [pkg("tzdata", "2024b", "unknown"), pkg("openssl", "3.0.15", "security")]);
    await scan(mail, [pkg("tzdata", "2024b", "unknown"), pkg("openssl", "3.0.14", "security")]);
    // A decommissioned host's updates are not the fleet's.
    await scan(old, [pkg("tzdata", "2024b", "unknown"), pkg("curl", "7.88", "low")]);
    await cp.admin.fleet.decommissionAgent({ agentId: old.agentId });
  });
  afterAll(async () => {
    await cp?.close();
  });

  it("writes a small scan sent whole in one statement: found events, changed and removed rows, the scan time; never over a held lease or an older view", async () => {
    const host = await registerTestAgent(cp, await newRegistrationToken(cp));
    const prisma = cp.app.db.prisma;
    const sql = statementsRunner(cp.app.db.statements);
    const small = (list: PackageUpdateInput[], sources = ["apt"], time = new Date(++scanClock)) =>
      recordSmallScan(sql, host.agentId, list, { sources, time, commandId: null, rebootRequired: undefined }, { newerOnly: true, leaseHeld: false });
    const view = async () => (await prisma.packageUpdate.findMany({ where: { agentId: host.agentId }, orderBy: { name: "asc" } })).map((r) => `${r.name} ${r.availableVersion} ${r.severity} ${r.status}`);
    const found = () => prisma.updateEvent.count({ where: { agentId: host.agentId, kind: "found" } });
    const notified = () => prisma.notificationEvent.findMany({ where: { agentId: host.agentId, kind: "critical_updates" } });
    const lastScan = async () => (await prisma.agent.findUniqueOrThrow({ where: { id: host.agentId } })).lastScanAt?.getTime() ?? 0;

    const base = [pkg("zlib1g", "1.3", "unknown"), pkg("bash", "5.2", "security")];
    expect(await small(base)).toBe("recorded");
    expect(await view()).toEqual(["bash 5.2 security pending", "zlib1g 1.3 unknown pending"]);
    expect(await found()).toBe(2);
    expect((await notified()).map((n) => n.text)).toEqual(["1 new critical or security update: bash"]);
    await prisma.packageUpdate.updateMany({ where: { agentId: host.agentId, name: "zlib1g" }, data: { status: "approved" } });

    // The same again (in another order, with a duplicate whose first copy counts): only the time moves.
    const before = await lastScan();
    expect(await small([...base].reverse().concat(pkg("bash", "9.9", "security")))).toBe("recorded");
    expect(await lastScan()).toBeGreaterThan(before);
    expect(await view()).toEqual(["bash 5.2 security pending", "zlib1g 1.3 unknown approved"]);
    expect(await found()).toBe(2);

    // A new version is found (and its decision starts over), a gone update is deleted, the
    // other keeps its decision.
    expect(await small([pkg("zlib1g", "1.3", "unknown"), pkg("bash", "5.3", "security"), ...Array.from({ length: 6 }, (_, i) => pkg(`lib${i}`, "1", "critical"))])).toBe("recorded");
    expect(await found()).toBe(9);
    expect((await notified()).map((n) => n.text).sort()).toEqual(["1 new critical or security update: bash", "7 new critical or security updates: bash, lib0, lib1, lib2, lib3 and 2 more"]);
    expect(await small([pkg("zlib1g", "1.3", "unknown")])).toBe("recorded");
    expect(await view()).toEqual(["zlib1g 1.3 unknown approved"]);
    // Another source's scan leaves apt's view alone.
    expect(await small([], ["flatpak"])).toBe("recorded");
    expect(await view()).toEqual(["zlib1g 1.3 unknown approved"]);

    // Older than the view: nothing changes.
    expect(await small([], ["apt"], new Date(0))).toBe("older");
    expect(await view()).toEqual(["zlib1g 1.3 unknown approved"]);
    // While another scan of the agent holds the lease, it is left to the usual way.
    await withScanLease(prisma, host.agentId, async () => {
      expect(await small([])).toBe("changed");
    });
    expect(await view()).toEqual(["zlib1g 1.3 unknown approved"]);
    expect(await small([])).toBe("recorded");
    expect(await view()).toEqual([]);
    // Out of the fleet the other tests count.
    await cp.admin.fleet.decommissionAgent({ agentId: host.agentId });
  });

  it("groups by package and version, most severe first, then the most hosts, with a total", async () => {
    const res = await updates.listPackageUpdates({});
    expect(res.total).toBe(4);
    expect(res.nextPageToken).toBe("");
    expect(res.packages.map((p) => [p.name, p.availableVersion, p.agentCount])).toEqual([
      ["linux-image-amd64", "6.1.119", 1],
      ["openssl", "3.0.15", 2],
      ["openssl", "3.0.14", 1],
      ["tzdata", "2024b", 3],
    ]);
    const tzdata = res.packages[3]!;
    expect(tzdata).toMatchObject({ source: "apt", architectures: ["all", "amd64"], severity: UpdateSeverity.UNKNOWN, security: false, rebootRequired: false, pendingCount: 4 });
    expect(res.packages[0]).toMatchObject({ severity: UpdateSeverity.IMPORTANT, rebootRequired: true });
    expect(res.packages[1]).toMatchObject({ severity: UpdateSeverity.SECURITY, security: true });
    expect(tzdata.firstSeenTime).toBeDefined();
  });

  it("counts each status, and takes the same filters as ListUpdates", async () => {
    const [web] = hosts as [TestAgent];
    await updates.approveUpdates({ selection: { keys: [{ agentId: web.agentId, source: "apt", name: "openssl", architecture: "amd64" }] } });
    const openssl = (await updates.listPackageUpdates({ filter: { packageName: "openssl" } })).packages;
    expect(openssl.map((p) => [p.availableVersion, p.agentCount, p.pendingCount, p.approvedCount, p.rejectedCount])).toEqual([
      ["3.0.15", 2, 1, 1, 0],
      ["3.0.14", 1, 1, 0, 0],
    ]);
    const approved = await updates.listPackageUpdates({ status: UpdateStatus.APPROVED });
    expect(approved.packages.map((p) => [p.name, p.agentCount])).toEqual([["openssl", 1]]);
    const inGroup = await updates.listPackageUpdates({ filter: { group: "web", securityOnly: true } });
    expect(inGroup.packages.map((p) => p.name)).toEqual(["linux-image-amd64", "openssl"]);
    const tagged = await updates.listPackageUpdates({ filter: { tag: "prod", severities: [UpdateSeverity.UNKNOWN] } });
    expect(tagged.packages.map((p) => [p.name, p.agentCount])).toEqual([["tzdata", 1]]);
    const oneHost = await updates.listPackageUpdates({ filter: { agentIds: [hosts[2]!.agentId] } });
    expect(oneHost.packages.map((p) => `${p.name}=${p.availableVersion}`)).toEqual(["openssl=3.0.14", "tzdata=2024b"]);
    expect((await updates.listPackageUpdates({ filter: { source: "snap" } })).total).toBe(0);
  });

  it("pages through the groups, and says past the end how many there are", async () => {
    const first = await updates.listPackageUpdates({ pageSize: 3 });
    expect(first.packages).toHaveLength(3);
    expect(first.total).toBe(4);
    const rest = await updates.listPackageUpdates({ pageSize: 3, pageToken: first.nextPageToken });
    expect(rest.packages.map((p) => p.name)).toEqual(["tzdata"]);
    expect(rest.nextPageToken).toBe("");
    const beyond = await updates.listPackageUpdates({ pageToken: Buffer.from("o40").toString("base64url") });
    expect(beyond).toMatchObject({ packages: [], total: 4, nextPageToken: "" });
  });

  it("refuses bad input with InvalidArgument and a clear message", async () => {
    const code = async (p: Promise<unknown>) => {
      const err = await p.then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      return [Code[(err as ConnectError).code], (err as ConnectError).rawMessage];
    };
    expect(await code(updates.listPackageUpdates({ pageToken: "garbage!" }))).toEqual(["InvalidArgument", expect.stringMatching(/page_token/)]);
    expect(await code(updates.listPackageUpdates({ pageSize: 501 }))).toEqual(["InvalidArgument", expect.stringMatching(/page_size/)]);
    expect(await code(updates.listPackageUpdates({ filter: { packageName: "'; DROP TABLE agents; --" } }))).toEqual(["InvalidArgument", expect.stringMatching(/not a package name/)]);
    expect(await code(updates.listPackageUpdates({ status: 9 as UpdateStatus }))).toEqual(["InvalidArgument", expect.stringMatching(/not an update status/)]);
    expect(await code(updates.listPackageUpdates({ filter: { agentIds: ["x"] } }))).toEqual(["InvalidArgument", expect.stringMatching(/must be a UUID/)]);
  });
});

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { UpdateSeverity } from "@redflag/gen/command_pb";
import { Role } from "@redflag/gen/identity_pb";
import { PolicyService } from "@redflag/gen/policy_service_pb";
import { UpdateService, UpdateStatus } from "@redflag/gen/update_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordScanReports, type PackageUpdateInput } from "../src/store/commands.ts";
import { newRegistrationToken, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Auto-approval end to end: rules kept over Connect by role, the leader's scheduler applying them
// at an injected time, audited with the rule as the actor; and the `redflag policies` verbs.

const PASSWORD = "a long enough passphrase 42";
const DAY = 86_400_000;
// Scans ten days ago, so that previews at the real time see every delay passed.
const T0 = new Date(Math.floor(Date.now() / 1000) * 1000 - 10 * DAY);
const at = (ms: number) => new Date(T0.getTime() + ms);

const pkg = (name: string, availableVersion: string, security: boolean): PackageUpdateInput => ({
  source: "apt",
  name,
  architecture: "amd64",
  currentVersion: "1.0",
  availableVersion,
  repository: security ? "bookworm-security" : "bookworm",
  severity: security ? "security" : "unknown",
  security,
  sizeBytes: 1000n,
  rebootRequired: false,
});

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return err;
}

describe("auto-approval policies", () => {
  let cp: TestControlPlane;
  let web: TestAgent;
  let operator: Client<typeof PolicyService>;
  let viewer: Client<typeof PolicyService>;
  let updates: Client<typeof UpdateService>;
  let audit: Client<typeof AuditService>;
  let config: string;

  const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
  const scan = (scanTime: Date, list: PackageUpdateInput[]) =>
    recordScanReports(cp.app.db.prisma, cp.app.db.statements, web.agentId, [{ id: crypto.randomUUID(), scanTime, scan: { updates: list, parts: 0, sources: ["apt"] } }], { rows: 10_000 });
  const statuses = async () =>
    Object.fromEntries((await updates.listUpdates({ filter: { agentIds: [web.agentId] } })).updates.map((u) => [u.update!.name, `${UpdateStatus[u.status]} ${u.decidedBy}`.trim()]));
  const cli = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });

  beforeAll(async () => {
    cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
    config = await mkdtemp(path.join(tmpdir(), "rf-policies-"));
    const users = createClient(UserService, as(cp.adminKey));
    await users.createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
    await users.createUser({ username: "victor", password: PASSWORD, role: Role.VIEWER });
    const login = async (username: string) =>
      (await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username, password: PASSWORD })).sessionToken;
    operator = createClient(PolicyService, as(await login("oscar")));
    viewer = createClient(PolicyService, as(await login("victor")));
    updates = createClient(UpdateService, as(cp.adminKey));
    audit = createClient(AuditService, as(cp.adminKey));
    web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-1" });
    await scan(T0, [pkg("openssl", "3.0.15", true), pkg("linux-image-amd64", "6.1.119", true), pkg("curl", "7.88.1", true), pkg("tzdata", "2024b", false)]);
    await updates.setHold({ source: "apt", name: "curl", reason: "pinned for the test" });
  }, 60_000);
  afterAll(async () => {
    await cp?.close();
    await rm(config, { recursive: true, force: true });
  });

  const securityAfterTwoDays = {
    name: "security after 2 days",
    enabled: true,
    criteria: { securityOnly: true },
    exclusions: ["linux-image-*"],
    delaySeconds: 2 * 86_400,
  };

  it("lets operators keep rules and viewers read and preview them; bad input changes nothing", async () => {
    expect((await failure(viewer.createPolicy({ definition: securityAfterTwoDays }))).code).toBe(Code.PermissionDenied);
    const tooMany = await failure(operator.createPolicy({ definition: { ...securityAfterTwoDays, exclusions: Array.from({ length: 51 }, (_, i) => `p${i}`) } }));
    expect([tooMany.code, tooMany.rawMessage]).toEqual([Code.InvalidArgument, "definition.exclusions has 51 entries; at most 50 are allowed"]);
    const tooLong = await failure(operator.createPolicy({ definition: { ...securityAfterTwoDays, criteria: { namePatterns: ["a".repeat(256)] } } }));
    expect(tooLong.code).toBe(Code.InvalidArgument);
    expect((await failure(operator.createPolicy({ definition: { ...securityAfterTwoDays, criteria: { severities: [UpdateSeverity.UNSPECIFIED] } } }))).code).toBe(Code.InvalidArgument);
    expect((await failure(operator.previewPolicy({}))).rawMessage).toMatch(/name a saved policy \(id\) or give a definition/);
    expect((await failure(operator.updatePolicy({ id: "nope", definition: securityAfterTwoDays }))).code).toBe(Code.InvalidArgument);
    expect((await viewer.listPolicies({})).policies).toEqual([]);
  });

  it("previews without changing anything, then the scheduler approves when the delay has passed, to the second", async () => {
    const { policy } = await operator.createPolicy({ definition: securityAfterTwoDays });
    expect(policy!.createdBy).toBe("oscar");
    const shown = await viewer.previewPolicy({ rule: { case: "id", value: policy!.id } });
    expect({ approvable: shown.approvable, agents: shown.agents, waiting: shown.waiting, held: shown.held }).toEqual({ approvable: 1n, agents: 1n, waiting: 0n, held: 1n });
    expect(shown.matches.map((m) => [m.hostname, m.name, m.availableVersion])).toEqual([["web-1", "openssl", "3.0.15"]]);
    const pending = { openssl: "PENDING", "linux-image-amd64": "PENDING", curl: "PENDING", tzdata: "PENDING" };
    expect(await statuses()).toEqual(pending);

    await cp.app.scheduler.tick(at(2 * DAY - 1000));
    expect(await statuses()).toEqual(pending);
    await cp.app.scheduler.tick(at(2 * DAY));
    expect(await statuses()).toEqual({ ...pending, openssl: "APPROVED policy: security after 2 days" });
    const { entries } = await audit.listAuditEntries({ action: "AutoApprove" });
    expect(entries.map((e) => [e.actorKind, e.actorName, e.target])).toEqual([["policy", "security after 2 days", `policy:${policy!.id}`]]);
    expect(JSON.parse(entries[0]!.afterJson)).toMatchObject({ count: 1, updates: [`${web.agentId}/apt/openssl=3.0.15`] });

    // A new version starts the delay again: it counts from when that version was first seen.
    await scan(at(3 * DAY), [pkg("openssl", "3.0.16", true), pkg("linux-image-amd64", "6.1.119", true), pkg("curl", "7.88.1", true), pkg("tzdata", "2024b", false)]);
    expect((await statuses()).openssl).toBe("PENDING");
    await cp.app.scheduler.tick(at(5 * DAY - 1000));
    expect((await statuses()).openssl).toBe("PENDING");
    await cp.app.scheduler.tick(at(5 * DAY));
    expect((await statuses()).openssl).toBe("APPROVED policy: security after 2 days");
    // The hold and the exclusion won throughout; the rule's creation, and two approvals, are audited.
    expect(await statuses()).toMatchObject({ curl: "PENDING", "linux-image-amd64": "PENDING" });
    expect((await audit.listAuditEntries({ action: "AutoApprove" })).entries).toHaveLength(2);
    expect((await audit.listAuditEntries({ action: "CreatePolicy" })).entries.map((e) => [e.actorName, e.target])).toEqual([["oscar", `policy:${policy!.id}`]]);
    await operator.deletePolicy({ id: policy!.id });
  });

  it("has CLI verbs whose help works as printed", async () => {
    const help = await runInProcess(["policies", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: redflag policies \[options\] \[command\]\n/);
    for (const verb of ["list", "create [options]", "update [options] <policy>", "delete <policy>", "preview [options] [policy]"]) expect(help.stdout).toContain(verb);
    // The example in the help text, run as printed.
    const example = help.stdout.split("\n").filter((l) => l.startsWith("  redflag policies "));
    expect(example).toHaveLength(2);
    const argv = (line: string) => [...line.trim().matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!).slice(1);
    const created = await cli(argv(example[0]!));
    expect(created.stderr).toBe("");
    expect(created.stdout).toMatch(/^policy "security after 2 days" created: approves security only, except linux-image-\* after 2d: [0-9a-f-]{36}\n$/);
    const previewed = await cli(argv(example[1]!));
    expect(previewed.code).toBe(0);
    expect(previewed.stdout).toMatch(/^would approve 0 update\(s\) on 0 agent\(s\) now; 0 more once the delay has passed; 1 kept by holds\n/);

    const changed = await cli(["policies", "update", "security after 2 days", "--disable", "--delay", "12h", "--package", "open*", "--clear", "exclusions"]);
    expect(changed.stdout).toBe('policy "security after 2 days" updated (disabled): approves security only, package open* after 12h\n');
    const listed = await cli(["policies", "list"]);
    expect(listed.stdout).toMatch(/^ORDER\s+NAME\s+ENABLED\s+CHOOSES\s+APPROVES\s+ID\n0\s+security after 2 days\s+no\s+security only, package open\*\s+after 12h\s+[0-9a-f-]{36}\n$/);
    const unsaved = await cli(["policies", "preview", "--package", "tz*"]);
    expect(unsaved.stdout).toMatch(/^would approve 1 update\(s\) on 1 agent\(s\) now;.*\nHOST\s+SOURCE\s+PACKAGE\s+VERSION\s+SEVERITY\s+SEEN\nweb-1\s+apt\s+tzdata\s+2024b\s+unknown\s+\S+\n$/);

    const bad = await cli(["policies", "create", "--name", "x", "--package", "a".repeat(256)]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/name_patterns\[0\].*is not a package name pattern/);
    const badDelay = await cli(["policies", "create", "--name", "x", "--package", "*", "--delay", "soon"]);
    expect(badDelay.code).toBe(2);
    expect((await cli(["policies", "delete", "nothing-like-it"])).stderr).toMatch(/no policy has the ID or name "nothing-like-it"/);
    expect((await cli(["policies", "delete", "security after 2 days"])).stdout).toBe('policy "security after 2 days" deleted\n');
    expect((await cli(["policies", "list"])).stdout).toBe("(none)\n");
  });
});

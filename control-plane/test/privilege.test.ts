import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@redflag/gen/auth_service_pb";
import {
  ArtifactManifestSchema,
  CommandOutcome,
  CommandSchema,
  PackageChangeKind,
  type PackageChange,
  UpdateAgentSchema,
} from "@redflag/gen/command_pb";
import { CommandService, CommandState, type CreateCommandRequest } from "@redflag/gen/command_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import { PublishReleaseRequestSchema, ReleaseService } from "@redflag/gen/release_service_pb";
import { UserService } from "@redflag/gen/user_service_pb";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MANIFEST_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Who may make an agent run what (issue 13, item 3): agent upgrades only from the registry and
// only by admins; operators install and roll back updates of what a host reported.

const PASSWORD = "a long enough passphrase 42";
const sha = (data: Uint8Array) => new Uint8Array(createHash("sha256").update(data).digest());

let cp: TestControlPlane;
let agent: TestAgent;
let admin: Client<typeof CommandService>;
let operator: Client<typeof CommandService>;
let releases: Client<typeof ReleaseService>;

const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });

beforeAll(async () => {
  cp = await startTestControlPlane();
  agent = await registerTestAgent(cp, await newRegistrationToken(cp));
  admin = cp.admin.commands;
  releases = createClient(ReleaseService, as(cp.adminKey));
  await createClient(UserService, as(cp.adminKey)).createUser({ username: "oscar", password: PASSWORD, role: Role.OPERATOR });
  const login = await createClient(AuthService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).login({ username: "oscar", password: PASSWORD });
  operator = createClient(CommandService, as(login.sessionToken));
});
afterAll(async () => {
  await cp?.close();
});

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

async function refused(call: () => Promise<unknown>, code: keyof typeof Code, message: RegExp) {
  const before = await cp.app.db.prisma.command.count();
  const err = await failure(call());
  expect(Code[err.code], err.rawMessage).toBe(code);
  expect(err.rawMessage).toMatch(message);
  expect(await cp.app.db.prisma.command.count()).toBe(before);
}

async function publish(version: string, platform: string, data = new Uint8Array(randomBytes(2048))) {
  await releases.publishRelease(
    (async function* () {
      yield create(PublishReleaseRequestSchema, { part: { case: "header", value: { version, platform, sizeBytes: BigInt(data.length), sha256: sha(data) } } });
      yield create(PublishReleaseRequestSchema, { part: { case: "chunk", value: data } });
    })(),
  );
  return data;
}

// What the agent gets when it polls next: the single delivered command, decoded.
async function delivered(to: TestAgent = agent) {
  const polled = await to.client.pollCommands({ nonce: nonce() });
  expect(polled.commands).toHaveLength(1);
  return fromBinary(CommandSchema, polled.commands[0]!.command);
}

const upgrade = (fields: Partial<{ version: string; downloadUrl: string; manifest: Uint8Array; manifestSignature: Uint8Array; keyId: string }> = {}): CreateCommandRequest["action"] => ({
  case: "updateAgent",
  value: create(UpdateAgentSchema, { version: "0.2.0", ...fields }),
});

// The manifest an operator used to get signed: a tarball of their own, on their own server.
const attackerManifest = () =>
  toBinary(ArtifactManifestSchema, create(ArtifactManifestSchema, { version: "0.2.0", platform: "any", sizeBytes: 1234n, sha256: sha(Buffer.from("evil")) }));

describe("update_agent", () => {
  it("refuses an operator's update_agent with a URL and a manifest of their own, and queues nothing", async () => {
    await refused(
      () => operator.createCommand({ agentId: agent.agentId, action: upgrade({ downloadUrl: "http://attacker.example/agent.tgz", manifest: attackerManifest() }) }),
      "PermissionDenied",
      /^update_agent needs the admin role \(you act as operator\): an agent upgrade replaces the agent, which runs as root, so only admins queue one, and only from the control plane's release registry$/,
    );
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
  });

  it("refuses an operator's upgrade from the registry too", async () => {
    await publish("0.2.0", "linux-x64");
    await refused(() => operator.createCommand({ agentId: agent.agentId, action: upgrade() }), "PermissionDenied", /^update_agent needs the admin role/);
  });

  it.each<[string, CreateCommandRequest["action"], RegExp]>([
    ["a download URL", upgrade({ downloadUrl: "https://releases.example/redflag-agent.tgz" }), /^update_agent\.download_url is set \("https:\/\/releases\.example\/redflag-agent\.tgz"\); agent upgrades come only from the control plane's release registry/],
    ["a relative download URL", upgrade({ downloadUrl: "downloads/any?version=0.2.0" }), /^update_agent\.download_url is set/],
    ["a manifest", upgrade({ manifest: attackerManifest() }), /^update_agent\.manifest, manifest_signature and key_id are set; the control plane signs the manifest of the release it picks/],
    ["a signature", upgrade({ manifestSignature: new Uint8Array(64).fill(7), keyId: "attacker" }), /^update_agent\.manifest, manifest_signature and key_id are set/],
    ["a version that is a path", upgrade({ version: "../../0.2.0" }), /^update_agent\.version "\.\.\/\.\.\/0\.2\.0" is not a release version/],
  ])("refuses an admin's update_agent with %s: InvalidArgument, nothing queued", async (_, action, message) => {
    await refused(() => admin.createCommand({ agentId: agent.agentId, action }), "InvalidArgument", message);
  });

  it("refuses a version the registry does not have, saying how to publish it", async () => {
    await refused(
      () => admin.createCommand({ agentId: agent.agentId, action: upgrade({ version: "7.7.7" }) }),
      "FailedPrecondition",
      /^release 7\.7\.7 for linux-x64 \(this agent's platform\) or "any" is not in the registry; publish builds with `redflag releases publish DIR`, see `redflag releases list`$/,
    );
  });

  it("fills in an admin's upgrade from the registry: the agent's platform, a path on the control plane, a manifest signed now", async () => {
    const created = (await admin.createCommand({ agentId: agent.agentId, action: upgrade() })).command!;
    const command = await delivered();
    expect(command.id).toBe(created.id);
    if (command.action.case !== "updateAgent") throw new Error("not an update_agent command");
    const value = command.action.value;
    expect(value.version).toBe("0.2.0");
    expect(value.downloadUrl).toBe("downloads/linux-x64?version=0.2.0");
    const release = (await releases.listReleases({ platform: "linux-x64" })).releases[0]!;
    expect(value.manifest).toEqual(release.manifest);
    expect(value.keyId).toBe(cp.app.signer.activeKeyId);
    const pinned = agent.registration.trustedKeys.find((k) => k.keyId === value.keyId)!;
    expect(verifySignature(pinned.publicKey, MANIFEST_TYPE, value.manifest, value.manifestSignature)).toBe(true);
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: command.sequence }] });
  });

  it("picks the newest release without a version, and a build for any platform when there is none for the agent's", async () => {
    await publish("0.10.0", "linux-x64");
    await publish("0.9.0", "linux-x64");
    await publish("1.0.0-rc.1", "linux-x64");
    await admin.createCommand({ agentId: agent.agentId, action: upgrade({ version: "" }) });
    let command = await delivered();
    expect(command.action.value).toMatchObject({ version: "1.0.0-rc.1", downloadUrl: "downloads/linux-x64?version=1.0.0-rc.1" });
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: command.sequence }] });

    await publish("2.0.0", "any");
    await admin.createCommand({ agentId: agent.agentId, action: upgrade({ version: "2.0.0" }) });
    command = await delivered();
    expect(command.action.value).toMatchObject({ version: "2.0.0", downloadUrl: "downloads/any?version=2.0.0" });
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.FAILED, message: "HTTP 503", sequence: command.sequence }] });
  });

  it("lets only admins retry an upgrade, filled in afresh from the registry", async () => {
    const failed = (await admin.listCommands({ agentId: agent.agentId, state: CommandState.FAILED })).commands.find((c) => c.result?.message === "HTTP 503")!;
    await refused(() => operator.retryCommand({ id: failed.id }), "PermissionDenied", /^update_agent needs the admin role \(you act as operator\)/);
    const again = (await admin.retryCommand({ id: failed.id })).command!;
    expect(again.id).not.toBe(failed.id);
    const command = await delivered();
    expect(command.action.value).toMatchObject({ version: "2.0.0", downloadUrl: "downloads/any?version=2.0.0" });
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: command.sequence }] });
  });

  it("retries an update_agent stored before the registry existed from the registry, never from its old URL", async () => {
    // A command row as the earlier control plane stored it: an operator's URL and manifest, signed.
    const old = create(CommandSchema, {
      action: {
        case: "updateAgent",
        value: create(UpdateAgentSchema, { version: "2.0.0", downloadUrl: "http://attacker.example/agent.tgz", manifest: attackerManifest(), manifestSignature: new Uint8Array(64), keyId: cp.app.signer.activeKeyId }),
      },
    });
    const id = randomUUID();
    await cp.app.db.prisma.command.create({ data: { id, agentId: agent.agentId, type: "update_agent", state: "failed", action: Buffer.from(toBinary(CommandSchema, old)), createdBy: "oscar", finishedAt: new Date() } });
    await refused(() => operator.retryCommand({ id }), "PermissionDenied", /^update_agent needs the admin role/);
    await admin.retryCommand({ id });
    const command = await delivered();
    if (command.action.case !== "updateAgent") throw new Error("not an update_agent command");
    expect(command.action.value.downloadUrl).toBe("downloads/any?version=2.0.0");
    expect(fromBinary(ArtifactManifestSchema, command.action.value.manifest).sha256).not.toEqual(sha(Buffer.from("evil")));
    await agent.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: command.sequence }] });
  });
});

describe("installs by operators", () => {
  let host: TestAgent;
  beforeAll(async () => {
    host = await registerTestAgent(cp, await newRegistrationToken(cp));
    // What the host reported: two pending updates, and curl in its history (installed earlier).
    const now = new Date();
    const row = { agentId: host.agentId, repository: "bookworm-security", severity: "security", security: true, sizeBytes: 0n, rebootRequired: false };
    await cp.app.db.prisma.packageUpdate.createMany({
      data: [
        { ...row, source: "apt", name: "openssl", architecture: "amd64", currentVersion: "3.0.15-1~deb12u1", availableVersion: "3.0.17-1~deb12u2" },
        { ...row, source: "apt", name: "libssl3", architecture: "amd64", currentVersion: "3.0.15-1~deb12u1", availableVersion: "3.0.17-1~deb12u2" },
      ],
    });
    await cp.app.db.prisma.updateEvent.create({ data: { agentId: host.agentId, time: now, kind: "installed", source: "apt", name: "curl", architecture: "amd64", version: "7.88.1-10+deb12u8" } });
  });

  const ref = (source: string, name: string, version = "", architecture = "") => ({ $typeName: "redflag.v1.PackageRef" as const, source, name, version, architecture });
  const install = (...packages: ReturnType<typeof ref>[]): CreateCommandRequest["action"] => ({ case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages, sources: [] } });
  const dryRun = (...packages: ReturnType<typeof ref>[]): CreateCommandRequest["action"] => ({ case: "dryRunUpdate", value: { $typeName: "redflag.v1.DryRunUpdate", packages } });
  const change = (kind: PackageChangeKind, name: string, from: string, to: string): PackageChange =>
    ({ $typeName: "redflag.v1.PackageChange", kind, source: "apt", name, fromVersion: from, toVersion: to, architecture: "amd64" }) as PackageChange;
  const confirm = (dryRunCommandId: string, changes: PackageChange[]): CreateCommandRequest["action"] => ({
    case: "confirmDependencies",
    value: { $typeName: "redflag.v1.ConfirmDependencies", dryRunCommandId, changes },
  });
  const rollback = (name: string, to: string): CreateCommandRequest["action"] => ({
    case: "rollbackUpdate",
    value: { $typeName: "redflag.v1.RollbackUpdate", package: ref("apt", name), targetVersion: to },
  });
  const versions = (...packages: ReturnType<typeof ref>[]): CreateCommandRequest["action"] => ({
    case: "listPackageVersions",
    value: { $typeName: "redflag.v1.ListPackageVersions", packages },
  });
  const clear = async () => {
    await cp.app.db.prisma.command.updateMany({ where: { agentId: host.agentId, state: "pending" }, data: { state: "cancelled" } });
  };

  it("installs and simulates what the host reported", async () => {
    await operator.createCommand({ agentId: host.agentId, action: install(ref("apt", "openssl"), ref("apt", "libssl3", "3.0.17-1~deb12u2", "amd64")) });
    await operator.createCommand({ agentId: host.agentId, action: dryRun(ref("apt", "openssl")) });
    // An install of packages and one of sources cannot be one pending command.
    await clear();
    await operator.createCommand({ agentId: host.agentId, action: { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [], sources: ["apt"] } } });
    await clear();
  });

  it.each<[string, () => CreateCommandRequest["action"], RegExp]>([
    ["an install of a package the host never reported", () => install(ref("apt", "openssl"), ref("apt", "netcat-traditional")), /^install_updates\.packages\[1\] apt:netcat-traditional is not a pending update this agent reported; operators install and roll back updates of what a host reported; only an admin may name anything else$/],
    ["an install from another source than the one reported", () => install(ref("dnf", "openssl")), /^install_updates\.packages\[0\] dnf:openssl is not a pending update/],
    ["an install of another architecture", () => install(ref("apt", "openssl", "", "i386")), /^install_updates\.packages\[0\] apt:openssl \(i386\) is not a pending update/],
    ["a dry run of a package the host never reported", () => dryRun(ref("apt", "nmap")), /^dry_run_update\.packages\[0\] apt:nmap is not a pending update this agent reported/],
    ["a rollback of a package the host never reported", () => rollback("netcat-traditional", "1.10-47"), /^rollback_update\.package apt:netcat-traditional is a package this agent never reported/],
    ["a version listing of a package the host never reported", () => versions(ref("apt", "curl"), ref("apt", "netcat-traditional")), /^list_package_versions\.packages\[1\] apt:netcat-traditional is a package this agent never reported/],
    ["a confirmation without a dry run", () => confirm("", [change(PackageChangeKind.INSTALL, "netcat-traditional", "", "1.10-47")]), /^confirm_dependencies\.dry_run_command_id must name the dry run being confirmed/],
    ["a confirmation of a dry run that does not exist", () => confirm(randomUUID(), [change(PackageChangeKind.INSTALL, "netcat-traditional", "", "1.10-47")]), /^confirm_dependencies\.dry_run_command_id [0-9a-f-]{36} is not a dry run of this agent/],
  ])("refuses an operator's %s (PermissionDenied), queues nothing", async (_, action, message) => {
    await refused(() => operator.createCommand({ agentId: host.agentId, action: action() }), "PermissionDenied", message);
  });

  it("rolls back a package the host reported before, and asks which versions it can go back to", async () => {
    await operator.createCommand({ agentId: host.agentId, action: rollback("curl", "7.88.1-10+deb12u5") });
    await operator.createCommand({ agentId: host.agentId, action: versions(ref("apt", "curl"), ref("apt", "openssl")) });
    await clear();
  });

  it("confirms exactly what the host's own dry run found, and nothing else", async () => {
    const found = [change(PackageChangeKind.UPGRADE, "openssl", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2"), change(PackageChangeKind.INSTALL, "libfoo1", "", "1.2-1")];
    const queued = (await operator.createCommand({ agentId: host.agentId, action: dryRun(ref("apt", "openssl")) })).command!;
    const command = await delivered(host);
    await host.client.reportResults({
      results: [{ commandId: command.id, outcome: CommandOutcome.SUCCEEDED, message: "2 packages would change", sequence: command.sequence, detail: { case: "dryRunUpdate", value: { changes: found } } }],
    });

    // The same set in another order is the same set.
    await operator.createCommand({ agentId: host.agentId, action: confirm(queued.id, [found[1]!, found[0]!]) });
    await clear();
    // One more package slipped in, one changed version, or one left out: not what the host found.
    for (const changes of [[...found, change(PackageChangeKind.INSTALL, "netcat-traditional", "", "1.10-47")], [found[0]!, change(PackageChangeKind.INSTALL, "libfoo1", "", "6.6.6")], [found[0]!]]) {
      await refused(
        () => operator.createCommand({ agentId: host.agentId, action: confirm(queued.id, changes) }),
        "PermissionDenied",
        new RegExp(`^confirm_dependencies\\.changes are not the 2 changes dry run ${queued.id} reported; confirm exactly what it found`),
      );
    }
    // Another host's dry run cannot be confirmed here.
    await refused(() => operator.createCommand({ agentId: agent.agentId, action: confirm(queued.id, found) }), "PermissionDenied", /is not a dry run of this agent/);
  });

  it("refuses to confirm a dry run that failed", async () => {
    const queued = (await operator.createCommand({ agentId: host.agentId, action: dryRun(ref("apt", "openssl")) })).command!;
    const command = await delivered(host);
    await host.client.reportResults({ results: [{ commandId: command.id, outcome: CommandOutcome.FAILED, message: "apt-get -s failed", sequence: command.sequence }] });
    await refused(
      () => operator.createCommand({ agentId: host.agentId, action: confirm(queued.id, [change(PackageChangeKind.UPGRADE, "openssl", "1", "2")]) }),
      "FailedPrecondition",
      /^dry run [0-9a-f-]{36} did not succeed; only the changes of a successful dry run can be confirmed$/,
    );
  });

  it("lets an admin name packages the host did not report (the agent still installs only updates of what is installed)", async () => {
    await admin.createCommand({ agentId: host.agentId, action: install(ref("apt", "netcat-traditional")) });
    await admin.createCommand({ agentId: host.agentId, action: rollback("netcat-traditional", "1.10-47") });
    await admin.createCommand({ agentId: host.agentId, action: versions(ref("apt", "netcat-traditional")) });
    await clear();
  });

  it.each([
    ["a .deb file", ref("apt", "tmp/evil.deb")],
    ["a URL", ref("dnf", "https://evil.example/bash-9.rpm")],
    ["a dnf group", ref("dnf", "@development-tools")],
    ["a zypper pattern", ref("zypper", "pattern:lamp_server")],
    ["an apt target release", ref("apt", "curl/sid")],
    ["a pacman repository", ref("pacman", "evil/bash")],
    ["a flatpakref URL", ref("flatpak", "https://evil.example/app.flatpakref")],
    ["a winget ID with a source", ref("winget", "msstore:9NBLGGH4NNS1")],
    ["a Homebrew formula by URL", ref("brew", "https://evil.example/x.rb")],
    ["a Homebrew name four levels deep", ref("brew", "a/b/c/d")],
  ])("refuses a package named as %s, whoever asks (InvalidArgument)", async (_, pkg) => {
    await refused(() => admin.createCommand({ agentId: host.agentId, action: install(pkg) }), "InvalidArgument", /^install_updates\.packages\[0\]\.name ".*" is not a valid package name/);
  });

  it("takes Homebrew taps and Docker references as names", async () => {
    await admin.createCommand({ agentId: host.agentId, action: install(ref("brew", "user/tap/formula"), ref("brew", "node@20"), ref("docker", "ghcr.io/org/app:1.2")) });
    await clear();
  });
});

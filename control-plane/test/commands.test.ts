import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ApiTokenService } from "@redflag/gen/api_token_service_pb";
import { AuthService } from "@redflag/gen/auth_service_pb";
import { CommandOutcome, CommandSchema, PackageChangeKind } from "@redflag/gen/command_pb";
import { CommandCreator, CommandService, CommandState } from "@redflag/gen/command_service_pb";
import { FleetService } from "@redflag/gen/fleet_service_pb";
import { Role } from "@redflag/gen/identity_pb";
import type { CreateCommandRequest } from "@redflag/gen/command_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
let agent: TestAgent;
beforeAll(async () => {
  cp = await startTestControlPlane();
  agent = await registerTestAgent(cp, await newRegistrationToken(cp));
});
afterAll(async () => {
  await cp?.close();
});

const ref = (source: string, name: string, version = "") => ({ $typeName: "redflag.v1.PackageRef" as const, source, name, version, architecture: "" });

describe("CreateCommand checks what each action asks", () => {
  it.each<[string, CreateCommandRequest["action"], RegExp]>([
    ["no action", { case: undefined }, /^an action is required/],
    ["install without packages or sources", { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [], sources: [] } }, /^install_updates needs packages, or sources/],
    ["install with an option for a name", { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [ref("apt", "--allow-unauthenticated")], sources: [] } }, /^install_updates\.packages\[0\]\.name "--allow-unauthenticated" is not a valid package name$/],
    ["install with shell syntax in a version", { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [ref("apt", "curl", "1;reboot")], sources: [] } }, /^install_updates\.packages\[0\]\.version "1;reboot" is not a valid version$/],
    ["install from a nonsense source", { case: "installUpdates", value: { $typeName: "redflag.v1.InstallUpdates", packages: [], sources: ["APT!"] } }, /^install_updates\.sources\[0\] "APT!" is not a package source name$/],
    ["dry run of nothing", { case: "dryRunUpdate", value: { $typeName: "redflag.v1.DryRunUpdate", packages: [] } }, /^dry_run_update\.packages must name at least one package$/],
    ["confirm without changes", { case: "confirmDependencies", value: { $typeName: "redflag.v1.ConfirmDependencies", dryRunCommandId: "", changes: [] } }, /^confirm_dependencies\.changes is empty/],
    [
      "confirm an upgrade without a version",
      {
        case: "confirmDependencies",
        value: {
          $typeName: "redflag.v1.ConfirmDependencies",
          dryRunCommandId: "",
          changes: [{ $typeName: "redflag.v1.PackageChange", kind: PackageChangeKind.UPGRADE, source: "apt", name: "curl", fromVersion: "1", toVersion: "", architecture: "" }],
        },
      },
      /^confirm_dependencies\.changes\[0\]\.to_version is required \(only a removal has none\)$/,
    ],
    ["rollback without a version", { case: "rollbackUpdate", value: { $typeName: "redflag.v1.RollbackUpdate", package: ref("apt", "curl"), targetVersion: "" } }, /^rollback_update\.target_version is required$/],
    ["a reboot a month away", { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: 30 * 86_400, message: "", force: false, preHook: "", postHook: "", hookTimeoutSeconds: 0 } }, /^reboot\.delay_seconds must be at most 604800/],
    // A hook is a name the host's owner installed, never a path or a command line.
    ["a reboot hook that is a path", { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: 0, message: "", force: false, preHook: "../../bin/sh", postHook: "", hookTimeoutSeconds: 0 } }, /^reboot\.pre_hook "\.\.\/\.\.\/bin\/sh" is not a hook name/],
    ["a reboot hook that is a command line", { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: 0, message: "", force: false, preHook: "", postHook: "curl x|sh", hookTimeoutSeconds: 0 } }, /^reboot\.post_hook "curl x\|sh" is not a hook name/],
    ["a reboot hook running an hour", { case: "reboot", value: { $typeName: "redflag.v1.Reboot", delaySeconds: 0, message: "", force: false, preHook: "drain", postHook: "", hookTimeoutSeconds: 3600 } }, /^reboot\.hook_timeout_seconds must be at most 1800/],
    ["a scan of a nonsense subsystem", { case: "scanUpdates", value: { $typeName: "redflag.v1.ScanUpdates", subsystems: ["apt; rm -rf /"] } }, /^scan_updates\.subsystems\[0\] "apt; rm -rf \/" is not a subsystem name/],
  ])("refuses %s with InvalidArgument and stores nothing", async (_, action, message) => {
    const before = await cp.app.db.prisma.command.count();
    const err = await cp.admin.commands.createCommand({ agentId: agent.agentId, action }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectError);
    expect(Code[(err as ConnectError).code]).toBe("InvalidArgument");
    expect((err as ConnectError).rawMessage).toMatch(message);
    expect(await cp.app.db.prisma.command.count()).toBe(before);
  });
});

describe("cancel, retry and the live feed", () => {
  it("cancels only what was not delivered, and retries only what did not succeed", async () => {
    const other = await registerTestAgent(cp, await newRegistrationToken(cp));
    const queued = (await cp.admin.commands.createCommand({ agentId: other.agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const cancelled = await cp.admin.commands.cancelCommand({ id: queued.id });
    expect(cancelled.command?.state).toBe(CommandState.CANCELLED);
    expect((await other.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
    await expect(cp.admin.commands.cancelCommand({ id: queued.id })).rejects.toMatchObject({ code: Code.FailedPrecondition, rawMessage: expect.stringMatching(/is cancelled; only a pending command can be cancelled/) });

    const sent = (await cp.admin.commands.createCommand({ agentId: other.agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const delivered = await other.client.pollCommands({ nonce: nonce() });
    expect(delivered.commands).toHaveLength(1);
    await expect(cp.admin.commands.cancelCommand({ id: sent.id })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(cp.admin.commands.retryCommand({ id: sent.id })).rejects.toMatchObject({ code: Code.FailedPrecondition, rawMessage: expect.stringMatching(/is sent; only a failed/) });

    const retried = (await cp.admin.commands.retryCommand({ id: queued.id })).command!;
    expect(retried.id).not.toBe(queued.id);
    expect(retried).toMatchObject({ state: CommandState.PENDING, type: queued.type, agentId: other.agentId });
    await expect(cp.admin.commands.retryCommand({ id: "00000000-0000-4000-8000-000000000000" })).rejects.toMatchObject({ code: Code.NotFound });
  });

  it("streams each change of a command as it happens", async () => {
    const watched = await registerTestAgent(cp, await newRegistrationToken(cp));
    const abort = new AbortController();
    const seen: { state: CommandState; id: string }[] = [];
    const stream = cp.admin.commands.watchEvents({ agentId: watched.agentId }, { signal: abort.signal });
    const reading = (async () => {
      for await (const event of stream) {
        if (event.kind !== "command") continue;
        seen.push({ state: event.command!.state, id: event.command!.id });
        if (event.command!.state === CommandState.SUCCEEDED) break;
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const cmd = (await cp.admin.commands.createCommand({ agentId: watched.agentId, action: { case: "collectSpecs", value: {} } })).command!;
    // Another agent's command is not in this feed.
    await cp.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } });
    await new Promise((r) => setTimeout(r, 50));
    const polled = await watched.client.pollCommands({ nonce: nonce() });
    await new Promise((r) => setTimeout(r, 50));
    const id = fromBinary(CommandSchema, polled.commands[0]!.command).id;
    await watched.client.reportResults({
      results: [{ commandId: id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: fromBinary(CommandSchema, polled.commands[0]!.command).sequence }],
    });
    await reading;
    abort.abort();
    expect(seen).toEqual([
      { state: CommandState.PENDING, id: cmd.id },
      { state: CommandState.SENT, id: cmd.id },
      { state: CommandState.SUCCEEDED, id: cmd.id },
    ]);
  });
});

describe("who queued a command", () => {
  const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });

  it("records the kind of the verified caller: the admin key, a person's session, their API token, and whoever retries", async () => {
    const target = await registerTestAgent(cp, await newRegistrationToken(cp));
    const byKey = (await cp.admin.fleet.setHeartbeat({ agentId: target.agentId, enabled: true, intervalSeconds: 5 })).command!;
    expect(byKey).toMatchObject({ createdBy: "admin.key", createdByKind: CommandCreator.ADMIN_KEY });

    // A username that looks like a key's name is still a person.
    const session = (await createClient(AuthService, as("")).setup({ username: "build-key", password: "correct horse battery staple" })).sessionToken;
    const bySession = (await createClient(FleetService, as(session)).setHeartbeat({ agentId: target.agentId, enabled: false })).command!;
    expect(bySession).toMatchObject({ createdBy: "build-key", createdByKind: CommandCreator.PERSON });

    const token = (await createClient(ApiTokenService, as(session)).createApiToken({ name: "ci", scope: Role.OPERATOR })).secret;
    const byToken = (await createClient(CommandService, as(token)).createCommand({ agentId: target.agentId, action: { case: "collectSpecs", value: {} } })).command!;
    expect(byToken).toMatchObject({ createdBy: "build-key", createdByKind: CommandCreator.API_TOKEN });
    expect((await cp.admin.commands.getCommand({ id: byToken.id })).command?.createdByKind).toBe(CommandCreator.API_TOKEN);

    // A retry is the retrier's command, not the original queuer's.
    await cp.admin.commands.cancelCommand({ id: byKey.id });
    const retried = (await createClient(CommandService, as(session)).retryCommand({ id: byKey.id })).command!;
    expect(retried).toMatchObject({ createdBy: "build-key", createdByKind: CommandCreator.PERSON });
    await cp.admin.commands.cancelCommand({ id: retried.id });
    const again = (await cp.admin.commands.retryCommand({ id: retried.id })).command!;
    expect(again).toMatchObject({ createdBy: "admin.key", createdByKind: CommandCreator.ADMIN_KEY });

    // Rows from before the column existed read as unspecified.
    await cp.app.db.prisma.command.update({ where: { id: byToken.id }, data: { createdByKind: "unknown" } });
    expect((await cp.admin.commands.getCommand({ id: byToken.id })).command?.createdByKind).toBe(CommandCreator.UNSPECIFIED);
  });
});

describe("CreateCommand idempotency keys", () => {
  const as = (secret: string) => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${secret}` })] });
  const specs = { case: "collectSpecs" as const, value: {} };
  const queued = (agentId: string) => cp.app.db.prisma.command.count({ where: { agentId } });
  const refusal = (call: Promise<unknown>) => call.then(() => undefined, (err: unknown) => ConnectError.from(err));

  it("queues one command for a retried create, and refuses the key for a different request", async () => {
    const target = await registerTestAgent(cp, await newRegistrationToken(cp));
    const key = "6f1c2a4e-0b7d-4a55-9d1e-3c2f8e7a9b10";
    const first = (await cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, idempotencyKey: key })).command!;
    const retry = (await cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, idempotencyKey: key })).command!;
    expect(retry.id).toBe(first.id);
    // Retries racing each other still queue one (a scan: a second collect_specs would merge).
    const scan = { case: "scanUpdates" as const, value: {} };
    const racing = await Promise.all(Array.from({ length: 5 }, () => cp.admin.commands.createCommand({ agentId: target.agentId, action: scan, idempotencyKey: "race-1" })));
    expect(new Set(racing.map((r) => r.command!.id)).size).toBe(1);
    expect(await queued(target.agentId)).toBe(2);
    // One audit entry per command queued, none for the answered retries.
    expect(await cp.app.db.prisma.auditEntry.count({ where: { action: "redflag.v1.CommandService/CreateCommand", target: `agent:${target.agentId}` } })).toBe(2);

    const other = await refusal(cp.admin.commands.createCommand({ agentId: target.agentId, action: { case: "reboot", value: {} }, idempotencyKey: key }));
    expect(other?.code).toBe(Code.FailedPrecondition);
    expect(other?.rawMessage).toBe(`idempotency_key "${key}" was already used for a different request (command ${first.id}); use a new key for a new command`);
    const longer = await refusal(cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, timeoutSeconds: 60, idempotencyKey: key }));
    expect(longer?.code).toBe(Code.FailedPrecondition);
    expect(await queued(target.agentId)).toBe(2);
  });

  // "build-key" is the person the test above set up.
  it("scopes keys to their caller and forgets them after their time", async () => {
    const target = await registerTestAgent(cp, await newRegistrationToken(cp));
    const session = (await createClient(AuthService, as("")).login({ username: "build-key", password: "correct horse battery staple" })).sessionToken;
    const token = (await createClient(ApiTokenService, as(session)).createApiToken({ name: "idempotent", scope: Role.OPERATOR })).secret;
    const byKey = (await cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, idempotencyKey: "nightly" })).command!;
    // Another caller with the same key (even a different request) gets its own command.
    const byToken = (await createClient(CommandService, as(token)).createCommand({ agentId: target.agentId, action: { case: "reboot", value: {} }, idempotencyKey: "nightly" })).command!;
    expect(byToken.id).not.toBe(byKey.id);
    expect(await queued(target.agentId)).toBe(2);

    // A day later the key is free again (the first command is done by then: a pending one
    // would take the request in).
    await cp.app.db.prisma.commandIdempotencyKey.updateMany({ where: { key: "nightly" }, data: { createdAt: new Date(Date.now() - 25 * 3600_000) } });
    await cp.admin.commands.cancelCommand({ id: byKey.id });
    const later = (await cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, idempotencyKey: "nightly" })).command!;
    expect(later.id).not.toBe(byKey.id);
    expect(await queued(target.agentId)).toBe(3);
  });

  it("refuses malformed keys with InvalidArgument and queues nothing", async () => {
    const target = await registerTestAgent(cp, await newRegistrationToken(cp));
    for (const key of ["x".repeat(129), "has space", "semi;colon", "ünïcode"]) {
      const err = await refusal(cp.admin.commands.createCommand({ agentId: target.agentId, action: specs, idempotencyKey: key }));
      expect(err?.code).toBe(Code.InvalidArgument);
      expect(err?.rawMessage).toBe("idempotency_key must be 1 to 128 of A-Z a-z 0-9 . _ : - (for example a UUID)");
    }
    expect(await queued(target.agentId)).toBe(0);
  });
});

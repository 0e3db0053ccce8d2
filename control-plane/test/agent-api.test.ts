import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { CommandOutcome, CommandSchema, SubsystemRunState, UpdateSeverity } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMAND_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { signingVectors } from "@redflag/common/signing/test-vectors";
import { generateKeyPair } from "../src/signing/keys.ts";
import {
  configIn,
  newRegistrationToken,
  nonce,
  randomMachineId,
  registerRequest,
  registerTestAgent,
  signedRenew,
} from "./support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_MAX_REQUEST_BYTES: "65536" });
});
afterAll(async () => {
  await cp?.close();
});

async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  expect(Code[ce.code]).toBe(Code[code]);
  if (message) expect(ce.rawMessage).toMatch(message);
  return ce;
}

const countAgents = () => cp.app.db.prisma.agent.count();

// A scan; a second one while the first is pending is merged into it, so `kind` picks another.
async function queue(agentId: string, kind: "scan" | "specs" = "scan") {
  const res = await cp.admin.commands.createCommand({
    agentId,
    action: kind === "scan" ? { case: "scanUpdates", value: { subsystems: ["apt"] } } : { case: "collectSpecs", value: {} },
  });
  return res.command!.id;
}

describe("Register", () => {
  it("enrols an agent and hands out credentials, pinned keys and config", async () => {
    const token = await newRegistrationToken(cp);
    const agent = await registerTestAgent(cp, token);
    const r = agent.registration;
    expect(r.agentId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.accessToken.split(".")).toHaveLength(3);
    expect(Buffer.from(r.refreshToken, "base64url")).toHaveLength(32);
    expect(timestampDate(r.accessTokenExpireTime!).getTime()).toBeGreaterThan(Date.now() + 3500_000);
    expect(r.trustedKeys.map((k) => k.keyId)).toEqual([cp.app.signingKeyId]);
    expect(r.signedConfig?.keyId).toBe(cp.app.signingKeyId);
    expect(configIn(agent, r.signedConfig)?.pollIntervalSeconds).toBeGreaterThan(0);
    expect(r.keySet?.signatures.map((s) => s.keyId)).toEqual([cp.app.signingKeyId]);
    const listed = await cp.admin.fleet.getAgent({ agentId: r.agentId });
    expect(listed.agent?.hostname).toBe("host-" + agent.machineId.slice(0, 6));
  });

  it("re-registering the same machine replaces its credentials instead of adding a twin", async () => {
    const token = await newRegistrationToken(cp, 1);
    const first = await registerTestAgent(cp, token);
    const before = await countAgents();
    // The same agent (its key proves it; see enrolment.test.ts for anyone else).
    const second = await registerTestAgent(cp, token, { machineId: first.machineId, key: first.key });
    expect(second.agentId).toBe(first.agentId);
    expect(await countAgents()).toBe(before);
    // Same token, same machine: no second seat was spent (the token has only one).
    await expectCode(first.client.pollCommands({ nonce: nonce() }), Code.Unauthenticated, /newer registration/);
    await expect(second.client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    // The old refresh family is revoked.
    await expectCode(cp.agentClient().renew(signedRenew(first, first.refreshToken)), Code.Unauthenticated);
  });

  it("refuses unknown, revoked and expired tokens with Unauthenticated and creates nothing", async () => {
    const before = await countAgents();
    const key = generateKeyPair();
    await expectCode(
      cp.agentClient().register(registerRequest("rfreg_not-a-real-token", randomMachineId(), key)),
      Code.Unauthenticated,
      /not valid/,
    );
    const revoked = await cp.admin.tokens.createRegistrationToken({ seats: 5 });
    await cp.admin.tokens.revokeRegistrationToken({ id: revoked.token!.id });
    await expectCode(
      cp.agentClient().register(registerRequest(revoked.secret, randomMachineId(), key)),
      Code.Unauthenticated,
      /revoked/,
    );
    const expired = await cp.admin.tokens.createRegistrationToken({ seats: 5 });
    await cp.app.db.prisma.registrationToken.update({
      where: { id: expired.token!.id },
      data: { expiresAt: new Date(Date.now() - 1000) },
    });
    await expectCode(
      cp.agentClient().register(registerRequest(expired.secret, randomMachineId(), key)),
      Code.Unauthenticated,
      /expired/,
    );
    expect(await countAgents()).toBe(before);
  });

  it("refuses a token with no seats left with ResourceExhausted", async () => {
    const token = await newRegistrationToken(cp, 2);
    await registerTestAgent(cp, token);
    await registerTestAgent(cp, token);
    const before = await countAgents();
    await expectCode(
      cp.agentClient().register(registerRequest(token, randomMachineId(), generateKeyPair())),
      Code.ResourceExhausted,
      /no seats left \(2 of 2 used\)/,
    );
    expect(await countAgents()).toBe(before);
  });

  it("never spends more seats than a token has when many machines register with it at once", async () => {
    const token = await newRegistrationToken(cp, 5);
    const before = await countAgents();
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, () =>
        cp
          .agentClient()
          .register(registerRequest(token, randomMachineId(), generateKeyPair()))
          .then(
            () => "registered",
            (err: unknown) => `${Code[ConnectError.from(err).code]}: ${ConnectError.from(err).rawMessage}`,
          ),
      ),
    );
    expect(outcomes.filter((o) => o === "registered")).toHaveLength(5);
    for (const o of outcomes.filter((o) => o !== "registered")) expect(o).toBe("ResourceExhausted: registration token has no seats left (5 of 5 used)");
    expect(await countAgents()).toBe(before + 5);
  });

  it("leaves one agent and one spent seat when first registrations of one machine race", async () => {
    const token = await newRegistrationToken(cp, 10);
    const machineId = randomMachineId();
    const key = generateKeyPair();
    const outcomes = await Promise.all(
      Array.from({ length: 6 }, () =>
        cp
          .agentClient()
          .register(registerRequest(token, machineId, key))
          .then(
            (r) => r.agentId,
            (e: unknown) => Code[ConnectError.from(e).code],
          ),
      ),
    );
    // The first becomes the machine's agent; the rest re-register it with its key (one at a
    // time, each proof newer than the last) or are refused as not newer, never a second agent.
    const agents = await cp.app.db.prisma.agent.findMany({ where: { machineId }, select: { id: true, registrationToken: { select: { usedSeats: true } } } });
    expect(agents).toHaveLength(1);
    expect(agents[0]!.registrationToken?.usedSeats).toBe(1);
    for (const o of outcomes) expect([agents[0]!.id, "PermissionDenied"]).toContain(o);
    expect(outcomes).toContain(agents[0]!.id);
  });

  it("refuses malformed fields with InvalidArgument naming the field", async () => {
    const token = await newRegistrationToken(cp);
    const ok = registerRequest(token, randomMachineId(), generateKeyPair());
    const cases: [Partial<typeof ok>, RegExp][] = [
      [{ machineId: "ABC" }, /machine_id/],
      [{ machineId: "g".repeat(64) }, /machine_id/],
      [{ agentPublicKey: new Uint8Array(31) }, /agent_public_key/],
      [{ hostname: "" }, /hostname is required/],
      [{ hostname: "x".repeat(300) }, /hostname is longer/],
      [{ hostname: "bad\nname" }, /control characters/],
      [{ os: undefined }, /os is required/],
      [{ os: { ...ok.os, family: 0 } }, /os.family/],
      [{ agentVersion: "" }, /agent_version/],
      [{ registrationToken: "" }, /registration_token/],
    ];
    const before = await countAgents();
    for (const [patch, message] of cases) {
      await expectCode(cp.agentClient().register({ ...ok, ...patch }), Code.InvalidArgument, message);
    }
    expect(await countAgents()).toBe(before);
    const tokenRow = await cp.admin.tokens.listRegistrationTokens({});
    expect(tokenRow.tokens.find((t) => token.startsWith(t.prefix))?.usedSeats).toBe(0);
  });
});

describe("authenticated calls", () => {
  it("refuse missing, malformed and expired access tokens with Unauthenticated", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    await expectCode(cp.agentClient({ "x-machine-id": agent.machineId }).pollCommands({ nonce: nonce() }), Code.Unauthenticated, /missing credentials/);
    await expectCode(
      cp.agentClient({ authorization: "Bearer abc.def.ghi", "x-machine-id": agent.machineId }).pollCommands({ nonce: nonce() }),
      Code.Unauthenticated,
      /not valid/,
    );
    const old = await cp.app.tokens.issue(agent.agentId, agent.machineId, 1, new Date(Date.now() - 2 * 3600_000));
    await expectCode(
      cp.agentClient({ authorization: `Bearer ${old.token}`, "x-machine-id": agent.machineId }).pollCommands({ nonce: nonce() }),
      Code.Unauthenticated,
      /expired/,
    );
  });

  it("refuse another machine ID with PermissionDenied and record a security event", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const commandId = await queue(agent.agentId);
    const other = randomMachineId();
    const stolen = cp.agentClient({ authorization: `Bearer ${agent.accessToken}`, "x-machine-id": other });
    await expectCode(stolen.pollCommands({ nonce: nonce() }), Code.PermissionDenied, /machine ID/);
    await expectCode(stolen.reportResults({ results: [] }), Code.PermissionDenied);
    const events = await cp.app.db.prisma.securityEvent.findMany({ where: { agentId: agent.agentId, type: "machine_id_mismatch" } });
    expect(events.length).toBe(2);
    expect(events[0]!.machineId).toBe(other);
    // Nothing was delivered to the impostor.
    expect((await cp.admin.commands.getCommand({ id: commandId })).command?.state).toBe(CommandState.PENDING);
  });
});

describe("Renew", () => {
  it("after a restore, renews a refresh token the database never saw once per agent, on the agent's signed request, and records it", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const other = await registerTestAgent(cp, await newRegistrationToken(cp));
    // Issued after the backup: the restored database does not know it.
    const unknown = "rt_issued_after_the_backup_0000000000000000000";
    await expectCode(cp.agentClient().renew(signedRenew(agent, unknown)), Code.Unauthenticated, /not valid/);
    const restore = await cp.app.db.prisma.restore.create({ data: { backupTakenAt: new Date(Date.now() - 3_600_000) } });
    try {
      // Signed with another key: still refused, whatever the restore.
      await expectCode(cp.agentClient().renew(signedRenew(agent, unknown, { signingKey: generateKeyPair() })), Code.Unauthenticated, /signature/);
      const renewed = await cp.agentClient().renew(signedRenew(agent, unknown));
      const fresh = cp.agentClient({ authorization: `Bearer ${renewed.accessToken}`, "x-machine-id": agent.machineId });
      await expect(fresh.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
      const events = await cp.app.db.prisma.securityEvent.findMany({ where: { type: "agent_recovered_after_restore" } });
      expect(events.map((e) => e.agentId)).toEqual([agent.agentId]);
      // Once: the agent has renewed since the restore, so another unknown token is refused.
      await expectCode(cp.agentClient().renew(signedRenew(agent, "rt_another_unknown_token_00000000000000000000")), Code.Unauthenticated, /not valid/);
      // Its token from the recovery rotates as any other, and the old token it held before the
      // restore is spent.
      await expect(cp.agentClient().renew(signedRenew(agent, renewed.refreshToken))).resolves.toBeDefined();
      await expectCode(cp.agentClient().renew(signedRenew(agent, agent.refreshToken)), Code.Unauthenticated);
      // Every other agent still gets its own one recovery.
      await expect(cp.agentClient().renew(signedRenew(other, unknown))).resolves.toBeDefined();
    } finally {
      await cp.app.db.prisma.restore.delete({ where: { id: restore.id } });
    }
  });

  it("rotates the refresh token; re-using a rotated one revokes the family and is recorded", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const renewed = await cp.agentClient().renew(signedRenew(agent, agent.refreshToken));
    expect(renewed.refreshToken).not.toBe(agent.refreshToken);
    const fresh = cp.agentClient({ authorization: `Bearer ${renewed.accessToken}`, "x-machine-id": agent.machineId });
    await expect(fresh.pollCommands({ nonce: nonce() })).resolves.toBeDefined();

    await expectCode(cp.agentClient().renew(signedRenew(agent, agent.refreshToken)), Code.Unauthenticated, /already used/);
    // The whole family is gone, including the token issued by the rotation.
    await expectCode(cp.agentClient().renew(signedRenew(agent, renewed.refreshToken)), Code.Unauthenticated, /revoked/);
    const events = await cp.app.db.prisma.securityEvent.count({ where: { agentId: agent.agentId, type: "refresh_token_reuse" } });
    expect(events).toBe(1);
  });

  it("stops the access tokens issued so far at once when a rotated refresh token is re-used", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const renewed = await cp.agentClient().renew(signedRenew(agent, agent.refreshToken));
    const latest = cp.agentClient({ authorization: `Bearer ${renewed.accessToken}`, "x-machine-id": agent.machineId });
    // Both access tokens are verified and cached, and so is the agent's registration.
    await expect(latest.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    await expect(agent.client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();

    await expectCode(cp.agentClient().renew(signedRenew(agent, agent.refreshToken)), Code.Unauthenticated, /already used/);
    for (const client of [latest, agent.client]) {
      await expectCode(client.pollCommands({ nonce: nonce() }), Code.Unauthenticated, /credentials were revoked/);
    }
  });

  it("answers the identical signed Renew again within the retry window (its answer was lost), and only that", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const request = signedRenew(agent, agent.refreshToken);
    const first = await cp.agentClient().renew(request);
    // The same bytes again: the answer carries the same refresh token, and nothing is revoked.
    const again = await cp.agentClient().renew(request);
    expect(again.refreshToken).toBe(first.refreshToken);
    for (const accessToken of [first.accessToken, again.accessToken]) {
      const client = cp.agentClient({ authorization: `Bearer ${accessToken}`, "x-machine-id": agent.machineId });
      await expect(client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    }
    expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: agent.agentId, type: "refresh_token_reuse" } })).toBe(0);

    // A new request with the spent token is re-use, even within the window.
    const next = await cp.agentClient().renew(signedRenew(agent, first.refreshToken));
    await expectCode(cp.agentClient().renew(signedRenew(agent, first.refreshToken)), Code.Unauthenticated, /already used/);
    await expectCode(cp.agentClient().renew(signedRenew(agent, next.refreshToken)), Code.Unauthenticated, /revoked/);
    expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: agent.agentId, type: "refresh_token_reuse" } })).toBe(1);
  });

  it("rotates a token once when Renews race for it: the identical request is answered twice, a different one is re-use", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const request = signedRenew(agent, agent.refreshToken);
    const [a, b] = await Promise.all([cp.agentClient().renew(request), cp.agentClient().renew(request)]);
    expect(a.refreshToken).toBe(b.refreshToken);
    const family = await cp.app.db.prisma.refreshToken.findMany({ where: { family: { agentId: agent.agentId } }, select: { rotatedAt: true } });
    expect(family.map((t) => t.rotatedAt === null).sort()).toEqual([false, true]);

    // Two different signed requests with one token (a copy of it elsewhere): one wins, the other
    // is re-use, which revokes both.
    const outcomes = await Promise.all(
      [signedRenew(agent, a.refreshToken), signedRenew(agent, a.refreshToken, { signTime: new Date(Date.now() - 1000) })].map((r) =>
        cp
          .agentClient()
          .renew(r)
          .then(
            () => "ok",
            (e: unknown) => ConnectError.from(e).rawMessage,
          ),
      ),
    );
    expect(outcomes.sort()).toEqual(["ok", "refresh token was already used; the agent's credentials are revoked"]);
    expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: agent.agentId, type: "refresh_token_reuse" } })).toBe(1);
  });

  it("takes the identical Renew for re-use once its successor was used", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const request = signedRenew(agent, agent.refreshToken);
    const first = await cp.agentClient().renew(request);
    await cp.agentClient().renew(signedRenew(agent, first.refreshToken));
    await expectCode(cp.agentClient().renew(request), Code.Unauthenticated, /already used/);
    expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: agent.agentId, type: "refresh_token_reuse" } })).toBe(1);
  });

  it("takes the identical Renew for re-use after the retry window", async () => {
    const short = await startTestControlPlane({ REDFLAG_RENEW_RETRY_WINDOW: "1s" });
    try {
      const agent = await registerTestAgent(short, await newRegistrationToken(short));
      const request = signedRenew(agent, agent.refreshToken);
      await short.agentClient().renew(request);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await expectCode(short.agentClient().renew(request), Code.Unauthenticated, /already used/);
    } finally {
      await short.close();
    }
  });

  it("needs the agent's own signature, a fresh sign time and the registered machine", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    await expectCode(
      cp.agentClient().renew(signedRenew(agent, agent.refreshToken, { signingKey: generateKeyPair() })),
      Code.Unauthenticated,
      /signature/,
    );
    await expectCode(
      cp.agentClient().renew(signedRenew(agent, agent.refreshToken, { signTime: new Date(Date.now() - 3600_000) })),
      Code.Unauthenticated,
      /clock/,
    );
    await expectCode(
      cp.agentClient().renew(signedRenew(agent, agent.refreshToken, { machineId: randomMachineId() })),
      Code.PermissionDenied,
    );
    const tampered = signedRenew(agent, agent.refreshToken);
    tampered.payload[tampered.payload.length - 1]! ^= 1;
    await expectCode(cp.agentClient().renew(tampered), Code.Unauthenticated);
    await expectCode(cp.agentClient().renew({ payload: new Uint8Array(0), signature: new Uint8Array(64) }), Code.InvalidArgument);
    // None of the refused attempts spent the refresh token.
    await expect(cp.agentClient().renew(signedRenew(agent, agent.refreshToken))).resolves.toBeDefined();
  });

  // With the identity point as the agent's key, one fixed signature passes ZIP-215 verification
  // (the library's default) over any payload: whoever holds the refresh token could renew
  // without any private key. Verification is strict (RFC 8032), as the agent's.
  it("refuses to enrol a small-order key, and signatures only ZIP-215 accepts from an agent enrolled with one before that", async () => {
    const token = await newRegistrationToken(cp);
    const { refused } = signingVectors();
    const smallOrder = { keyId: "small-order", publicKey: refused[0]!.publicKey, secretKey: new Uint8Array(32) };
    // Without a proof, as agents older than RegisterProof enrol: refused before any seat is spent.
    const { proof: _proof, proofSignature: _signature, ...request } = registerRequest(token, randomMachineId(), smallOrder);
    const agentsBefore = await countAgents();
    await expectCode(cp.agentClient().register(request), Code.InvalidArgument, /agent_public_key is not a usable Ed25519 public key/);
    expect(await countAgents()).toBe(agentsBefore);

    // An agent whose stored key is small-order (enrolled before Register refused such keys).
    const agent = await registerTestAgent(cp, token);
    await cp.app.db.prisma.agent.update({ where: { id: agent.agentId }, data: { publicKey: Buffer.from(smallOrder.publicKey) } });
    const enrolled = { agentId: agent.agentId, machineId: agent.machineId, key: smallOrder };
    for (const forged of refused) {
      const { payload } = signedRenew(enrolled, agent.registration.refreshToken);
      await expectCode(cp.agentClient().renew({ payload, signature: forged.signature }), Code.Unauthenticated, /renew signature does not verify/);
      // Nor does a RegisterProof "signed" that way vouch for the key.
      const other = registerRequest(token, randomMachineId(), smallOrder);
      await expectCode(cp.agentClient().register({ ...other, proofSignature: forged.signature }), Code.InvalidArgument, /agent_public_key is not a usable Ed25519 public key/);
    }
  });
});

describe("PollCommands", () => {
  it("delivers queued commands signed over PAE, with the poll's nonce and rising sequence numbers", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const ids = [await queue(agent.agentId), await queue(agent.agentId, "specs")];
    const n = nonce();
    const res = await agent.client.pollCommands({ nonce: n, maxCommands: 10 });
    expect(res.commands).toHaveLength(2);
    const pinned = agent.registration.trustedKeys[0]!;
    const decoded = res.commands.map((sc) => {
      expect(sc.keyId).toBe(pinned.keyId);
      expect(verifySignature(pinned.publicKey, COMMAND_TYPE, sc.command, sc.signature)).toBe(true);
      return fromBinary(CommandSchema, sc.command);
    });
    expect(decoded.map((c) => c.id)).toEqual(ids);
    expect(decoded.map((c) => c.sequence)).toEqual([1n, 2n]);
    expect(decoded.map((c) => c.action.case)).toEqual(["scanUpdates", "collectSpecs"]);
    for (const c of decoded) {
      expect(c.agentId).toBe(agent.agentId);
      expect(Buffer.from(c.nonce).equals(Buffer.from(n))).toBe(true);
      const ttl = timestampDate(c.expireTime!).getTime() - timestampDate(c.issueTime!).getTime();
      expect(ttl).toBe(600_000);
    }
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
    const later = await queue(agent.agentId);
    const next = await agent.client.pollCommands({ nonce: nonce() });
    expect(fromBinary(CommandSchema, next.commands[0]!.command)).toMatchObject({ id: later, sequence: 3n });
  });

  it("long-polls and answers early when a command is queued", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const started = Date.now();
    const poll = agent.client.pollCommands({ nonce: nonce(), waitSeconds: 30 });
    await new Promise((r) => setTimeout(r, 300));
    const id = await queue(agent.agentId);
    const res = await poll;
    expect(res.commands.map((c) => fromBinary(CommandSchema, c.command).id)).toEqual([id]);
    expect(Date.now() - started).toBeLessThan(25_000);
  });

  it("sends the config signed for this agent, with its issue time, only when the agent's revision differs", async () => {
    const before = Date.now();
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const registered = configIn(agent, agent.registration.signedConfig)!;
    expect(registered.agentId).toBe(agent.agentId);
    // When the holds were read: not after the answer, and not long before it.
    const issued = timestampDate(registered.issueTime!).getTime();
    expect(issued).toBeLessThanOrEqual(Date.now());
    expect(issued).toBeGreaterThan(before - 60_000);
    const revision = registered.revision;
    const same = await agent.client.pollCommands({ nonce: nonce(), status: { configRevision: revision } });
    expect(same.signedConfig).toBeUndefined();
    const stale = await agent.client.pollCommands({ nonce: nonce(), status: { configRevision: revision + 1n } });
    const polled = configIn(agent, stale.signedConfig)!;
    expect(polled.revision).toBe(revision);
    expect(polled.agentId).toBe(agent.agentId);
    expect(same.nextPollSeconds).toBeGreaterThan(0);
  });

  it("writes nothing on an idle poll: last-seen and status arrive in the batched flush", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    await agent.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0", uptimeSeconds: 42n } });
    const row = () => cp.app.db.prisma.agent.findUniqueOrThrow({ where: { id: agent.agentId } });
    expect((await row()).lastSeenAt).toBeNull();
    // Operators still see the agent as online: reads go through the buffer.
    const seen = (await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent!;
    expect(seen.status?.uptimeSeconds).toBe(42n);
    await cp.app.lastSeen.flush();
    expect((await row()).lastSeenAt).toBeInstanceOf(Date);
  });

  it("refuses bad nonces, waits and limits with InvalidArgument", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    await expectCode(agent.client.pollCommands({ nonce: new Uint8Array(8) }), Code.InvalidArgument, /nonce/);
    await expectCode(agent.client.pollCommands({ nonce: new Uint8Array(65) }), Code.InvalidArgument, /nonce/);
    await expectCode(agent.client.pollCommands({ nonce: nonce(), waitSeconds: 61 }), Code.InvalidArgument, /wait_seconds/);
    await expectCode(agent.client.pollCommands({ nonce: nonce(), maxCommands: 1000 }), Code.InvalidArgument, /max_commands/);
  });

  it("never hands one command to two concurrent polls", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const queued = new Set<string>();
    // collect_specs: a second scan while one is pending would be merged into it.
    for (let i = 0; i < 40; i++) queued.add(await queue(agent.agentId, "specs"));
    const polls = await Promise.all(
      Array.from({ length: 25 }, (_, i) => agent.client.pollCommands({ nonce: nonce(), maxCommands: 1 + (i % 3) })),
    );
    let delivered = polls.flatMap((p) => p.commands.map((c) => fromBinary(CommandSchema, c.command)));
    while (delivered.length < queued.size) {
      const more = await agent.client.pollCommands({ nonce: nonce(), maxCommands: 100 });
      if (more.commands.length === 0) break;
      delivered = delivered.concat(more.commands.map((c) => fromBinary(CommandSchema, c.command)));
    }
    const ids = delivered.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids)).toEqual(queued);
    const sequences = delivered.map((c) => c.sequence);
    expect(new Set(sequences).size).toBe(sequences.length);
  });
});

describe("ReportResults", () => {
  async function delivered(agent: Awaited<ReturnType<typeof registerTestAgent>>) {
    const id = await queue(agent.agentId);
    await agent.client.pollCommands({ nonce: nonce() });
    return id;
  }

  const scanResult = (commandId: string) => ({
    commandId,
    outcome: CommandOutcome.SUCCEEDED,
    message: "1 update",
    detail: {
      case: "scanUpdates" as const,
      value: {
        updates: [
          {
            source: "apt",
            name: "openssl",
            currentVersion: "3.0.11-1~deb12u2",
            availableVersion: "3.0.13-1~deb12u1",
            architecture: "amd64",
            repository: "bookworm-security",
            severity: UpdateSeverity.SECURITY,
            security: true,
          },
        ],
        subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: 1 }],
      },
    },
  });

  it("stores results once and acknowledges repeats without change", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const id = await delivered(agent);
    const first = await agent.client.reportResults({ results: [scanResult(id)] });
    expect(first.acknowledgedCommandIds).toEqual([id]);
    const again = await agent.client.reportResults({ results: [{ ...scanResult(id), message: "changed" }] });
    expect(again.acknowledgedCommandIds).toEqual([id]);
    const command = (await cp.admin.commands.getCommand({ id })).command!;
    expect(command.state).toBe(CommandState.SUCCEEDED);
    expect(command.result?.message).toBe("1 update");
    const updates = await cp.app.db.prisma.packageUpdate.findMany({ where: { agentId: agent.agentId } });
    expect(updates.map((u) => [u.name, u.severity, u.security])).toEqual([["openssl", "security", true]]);
    const fleet = (await cp.admin.fleet.getAgent({ agentId: agent.agentId })).agent!;
    expect(fleet).toMatchObject({ pendingUpdateCount: 1, securityUpdateCount: 1 });
    expect(fleet.lastScanTime).toBeDefined();
  });

  it("records scheduled scans once, in time order, without commands", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const scanOf = (name: string) => ({
      updates: [{ source: "apt", name, currentVersion: "1", availableVersion: "2", architecture: "amd64", severity: UpdateSeverity.UNKNOWN }],
      subsystems: [{ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: 1 }],
    });
    const newer = { id: randomUUID(), scanTime: timestampFromDate(new Date(Date.now() - 1000)), result: scanOf("curl") };
    const older = { id: randomUUID(), scanTime: timestampFromDate(new Date(Date.now() - 60_000)), result: scanOf("wget") };
    const res = await agent.client.reportResults({ scans: [newer] });
    expect(res.acknowledgedScanIds).toEqual([newer.id]);
    // A late retry of an older scan is acknowledged but does not replace the newer view.
    const late = await agent.client.reportResults({ scans: [older, newer] });
    expect(late.acknowledgedScanIds.sort()).toEqual([older.id, newer.id].sort());
    const names = (await cp.app.db.prisma.packageUpdate.findMany({ where: { agentId: agent.agentId } })).map((u) => u.name);
    expect(names).toEqual(["curl"]);
    await expectCode(
      agent.client.reportResults({ scans: [{ ...newer, id: "nope" }] }),
      Code.InvalidArgument,
      /scans\[0\]\.id/,
    );
    await expectCode(
      agent.client.reportResults({ scans: [{ ...newer, id: randomUUID(), scanTime: timestampFromDate(new Date(Date.now() + 3600_000)) }] }),
      Code.InvalidArgument,
      /future/,
    );
  });

  it("refuses results for commands not delivered to this agent", async () => {
    const a = await registerTestAgent(cp, await newRegistrationToken(cp));
    const b = await registerTestAgent(cp, await newRegistrationToken(cp));
    const forB = await delivered(b);
    const undelivered = await queue(a.agentId);
    const unknown = "00000000-0000-4000-8000-000000000000";
    const res = await a.client.reportResults({
      results: [scanResult(forB), scanResult(undelivered), scanResult(unknown)],
    });
    expect(res.acknowledgedCommandIds).toEqual([]);
    expect(res.refused.map((r) => r.commandId).sort()).toEqual([forB, undelivered, unknown].sort());
    expect((await cp.admin.commands.getCommand({ id: forB })).command?.state).toBe(CommandState.SENT);
    expect((await cp.admin.commands.getCommand({ id: undelivered })).command?.state).toBe(CommandState.PENDING);
    const events = await cp.app.db.prisma.securityEvent.count({ where: { agentId: a.agentId, type: "result_for_foreign_command" } });
    expect(events).toBe(1);
  });

  it("stores a batch of plain results in one statement and still refuses, as before, the ones it must", async () => {
    const a = await registerTestAgent(cp, await newRegistrationToken(cp));
    const b = await registerTestAgent(cp, await newRegistrationToken(cp));
    const specs = async (agent: typeof a) => {
      const id = await queue(agent.agentId, "specs");
      await agent.client.pollCommands({ nonce: nonce() });
      return id;
    };
    const ok = await specs(a);
    const cancelled = await specs(a);
    await cp.app.db.prisma.command.update({ where: { id: cancelled }, data: { state: "cancelled" } });
    const forB = await specs(b);
    const undelivered = await queue(a.agentId, "specs");
    const plain = (commandId: string, outcome = CommandOutcome.SUCCEEDED) => ({ commandId, outcome, message: `done ${commandId.slice(0, 4)}` });
    const res = await a.client.reportResults({ results: [plain(ok), plain(cancelled, CommandOutcome.FAILED), plain(forB), plain(undelivered)] });
    expect(res.acknowledgedCommandIds.sort()).toEqual([ok, cancelled].sort());
    expect(Object.fromEntries(res.refused.map((r) => [r.commandId, r.reason]))).toEqual({
      [forB]: "no such command was delivered to this agent",
      [undelivered]: "the command has not been delivered yet",
    });
    const state = async (id: string) => (await cp.admin.commands.getCommand({ id })).command!;
    expect((await state(ok)).state).toBe(CommandState.SUCCEEDED);
    expect((await state(ok)).result?.message).toBe(`done ${ok.slice(0, 4)}`);
    // A cancelled command keeps its state, with the result the agent sent.
    expect((await state(cancelled)).state).toBe(CommandState.CANCELLED);
    expect((await state(cancelled)).result?.outcome).toBe(CommandOutcome.FAILED);
    expect((await state(forB)).state).toBe(CommandState.SENT);
    expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: a.agentId, type: "result_for_foreign_command" } })).toBe(1);
    // Sent again (the acknowledgement was lost): acknowledged, nothing changes.
    const again = await a.client.reportResults({ results: [{ ...plain(ok), message: "changed" }] });
    expect(again.acknowledgedCommandIds).toEqual([ok]);
    expect((await state(ok)).result?.message).toBe(`done ${ok.slice(0, 4)}`);
  });

  it("refuses malformed results with InvalidArgument and stores none of the batch", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const id = await delivered(agent);
    await expectCode(
      agent.client.reportResults({ results: [scanResult(id), { commandId: "not-a-uuid", outcome: CommandOutcome.FAILED }] }),
      Code.InvalidArgument,
      /results\[1\]\.command_id/,
    );
    await expectCode(
      agent.client.reportResults({ results: [{ commandId: id, outcome: CommandOutcome.UNSPECIFIED }] }),
      Code.InvalidArgument,
      /outcome/,
    );
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.SENT);
  });

  it("refuses oversized requests", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const id = await delivered(agent);
    await expectCode(
      agent.client.reportResults({ results: [{ commandId: id, outcome: CommandOutcome.FAILED, message: "x".repeat(70_000) }] }),
      Code.ResourceExhausted,
    );
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.SENT);
  });

  it("times out sent commands that never report", async () => {
    const agent = await registerTestAgent(cp, await newRegistrationToken(cp));
    const id = await delivered(agent);
    await cp.app.db.prisma.command.update({ where: { id }, data: { sentAt: new Date(Date.now() - 3 * 3600_000) } });
    await cp.app.scheduler.tick();
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.TIMED_OUT);
    // A late result is still recorded.
    await agent.client.reportResults({ results: [{ commandId: id, outcome: CommandOutcome.FAILED, message: "late" }] });
    expect((await cp.admin.commands.getCommand({ id })).command?.state).toBe(CommandState.FAILED);
  });
});

// Item 6 of issue 13: a poll's answer can be lost after the claim committed (a crash, a dropped
// connection), so a delivered command without a result is delivered again after the lease.
describe("delivery after a lost poll answer", () => {
  let own: TestControlPlane;
  beforeAll(async () => {
    own = await startTestControlPlane({ REDFLAG_DELIVERY_LEASE: "1s", REDFLAG_MAX_DELIVERIES: "3" });
  });
  afterAll(async () => {
    await own?.close();
  });

  it("delivers the command again after the lease, freshly numbered, signed and nonce'd, found by the pending index without idle polls looking", async () => {
    const agent = await registerTestAgent(own, await newRegistrationToken(own));
    const id = (await own.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } })).command!.id;
    const lost = await agent.client.pollCommands({ nonce: nonce() });
    const first = fromBinary(CommandSchema, lost.commands[0]!.command);
    expect(first).toMatchObject({ id, sequence: 1n, firstSequence: 1n });
    // Within the lease nothing comes, however often the agent asks.
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);

    // After it, the next polls find it once the pending index has looked (every 10 s): idle
    // polls meanwhile are answered from memory.
    const claimsBefore = await claimCount(own);
    const n = nonce();
    let again: Awaited<ReturnType<typeof agent.client.pollCommands>> | undefined;
    await expect
      .poll(async () => (again = await agent.client.pollCommands({ nonce: n })).commands.length, { timeout: 20_000, interval: 250 })
      .toBe(1);
    const claims = (await claimCount(own)) - claimsBefore;
    expect(claims).toBeGreaterThanOrEqual(1);
    expect(claims).toBeLessThanOrEqual(2);
    const signed = again!.commands[0]!;
    const pinned = agent.registration.trustedKeys[0]!;
    expect(verifySignature(pinned.publicKey, COMMAND_TYPE, signed.command, signed.signature)).toBe(true);
    const second = fromBinary(CommandSchema, signed.command);
    expect(second).toMatchObject({ id, sequence: 2n, firstSequence: 1n });
    expect(Buffer.from(second.nonce).equals(Buffer.from(n))).toBe(true);
    expect(timestampDate(second.issueTime!).getTime()).toBeGreaterThan(timestampDate(first.issueTime!).getTime());
    expect(timestampDate(second.expireTime!).getTime()).toBeGreaterThan(timestampDate(first.expireTime!).getTime());
    expect((await own.admin.commands.getCommand({ id })).command).toMatchObject({ state: CommandState.SENT, deliveryCount: 2, sequence: 2n });

    // Its result ends it: never delivered again.
    await agent.client.reportResults({ results: [{ commandId: id, outcome: CommandOutcome.SUCCEEDED, message: "ok", sequence: 2n }] });
    await new Promise((r) => setTimeout(r, 1200));
    expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
  });

  it("stops after max_deliveries and times the command out instead of bouncing it forever", async () => {
    const agent = await registerTestAgent(own, await newRegistrationToken(own));
    const id = (await own.admin.commands.createCommand({ agentId: agent.agentId, action: { case: "collectSpecs", value: {} } })).command!.id;
    for (let delivery = 1; delivery <= 3; delivery++) {
      await expect.poll(async () => (await agent.client.pollCommands({ nonce: nonce() })).commands.length, { timeout: 20_000, interval: 250 }).toBe(1);
      expect((await own.admin.commands.getCommand({ id })).command?.deliveryCount).toBe(delivery);
    }
    await new Promise((r) => setTimeout(r, 1200));
    for (let i = 0; i < 3; i++) expect((await agent.client.pollCommands({ nonce: nonce() })).commands).toHaveLength(0);
    // The result timeout after the last delivery ends it.
    await own.app.db.prisma.command.update({ where: { id }, data: { sentAt: new Date(Date.now() - 3 * 3600_000) } });
    await own.app.scheduler.tick();
    expect((await own.admin.commands.getCommand({ id })).command).toMatchObject({ state: CommandState.TIMED_OUT, deliveryCount: 3 });
  });
});

// Claims run so far (the poll path's counter in /metrics).
async function claimCount(cp: TestControlPlane): Promise<number> {
  const text = await (await fetch(`${cp.url}/metrics`)).text();
  return [...text.matchAll(/^redflag_poll_claims_total\{result="(?:empty|delivered)"\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
}

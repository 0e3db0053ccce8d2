import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "@redflag/gen/audit_service_pb";
import { TrustedKeySetSchema } from "@redflag/gen/common_pb";
import { AgentHealth } from "@redflag/gen/fleet_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEY_SET_TYPE, verifySignature } from "@redflag/common/signing/envelope";
import { generateKeyPair } from "../src/signing/keys.ts";
import { newRegistrationToken, nonce, randomMachineId, registerProof, registerRequest, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// Register for a machine the control plane already knows: only the agent holding the key on
// record (or one an admin let through) may replace it, and a decommissioned agent stays out.
let cp: TestControlPlane;
let security: ReturnType<typeof createClient<typeof SecurityService>>;
let auditLog: ReturnType<typeof createClient<typeof AuditService>>;

beforeAll(async () => {
  cp = await startTestControlPlane();
  const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] });
  security = createClient(SecurityService, transport);
  auditLog = createClient(AuditService, transport);
});
afterAll(async () => {
  await cp?.close();
});

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the call to fail").toBeInstanceOf(ConnectError);
  return err as ConnectError;
}

const row = (agentId: string) => cp.app.db.prisma.agent.findUniqueOrThrow({ where: { id: agentId } });
const seatsUsed = async (token: string) => (await cp.admin.tokens.listRegistrationTokens({})).tokens.find((t) => token.startsWith(t.prefix))!.usedSeats;
const events = async (type: string, agentId: string) => (await security.listSecurityEvents({ type, pageSize: 500 })).events.filter((e) => e.agentId === agentId);

describe("taking over a registered machine", () => {
  let token: string;
  let victim: TestAgent;
  beforeAll(async () => {
    // A fleet token shared by many hosts, as homelabs do.
    token = await newRegistrationToken(cp, 10);
    victim = await registerTestAgent(cp, token);
  });

  it("is refused with PermissionDenied, a critical security event and nothing changed, when the request does not prove the victim's key", async () => {
    const before = await row(victim.agentId);
    const seats = await seatsUsed(token);
    const attacker = generateKeyPair();
    const attempts = [
      // No proof at all (what an attacker who only read the machine ID could send).
      { ...registerRequest(token, victim.machineId, attacker, "evil"), proof: new Uint8Array(), proofSignature: new Uint8Array() },
      // A proof of the attacker's own key.
      registerRequest(token, victim.machineId, attacker, "evil"),
      // The victim's public key presented, proof signed by the attacker.
      { ...registerRequest(token, victim.machineId, victim.key, "evil"), ...registerProof(victim.machineId, victim.key, { signer: attacker }) },
    ];
    for (const request of attempts) {
      const err = await refusal(cp.agentClient().register(request));
      expect(Code[err.code]).toBe("PermissionDenied");
      expect(err.rawMessage).toMatch(new RegExp(`^this machine is already registered as agent ${victim.agentId}, and the (request does not prove possession of that agent's key|registration proof is not signed by that agent's key); if the host was reinstalled or lost its key, an admin can allow one re-registration: redflag agents allow-reregistration ${victim.agentId}$`));
    }
    const after = await row(victim.agentId);
    expect({ ...after, updatedAt: before.updatedAt }).toEqual(before);
    expect(await seatsUsed(token)).toBe(seats);
    // The victim carries on with the credentials it had.
    await expect(victim.client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    const recorded = await events("registration_refused", victim.agentId);
    expect(recorded.map((e) => [e.severity, JSON.parse(e.detailJson).reason])).toEqual([
      ["critical", "proof not signed by the agent's key"],
      ["critical", "proof not signed by the agent's key"],
      ["critical", "no proof of the agent's key"],
    ]);
    expect(recorded[0]).toMatchObject({ machineId: victim.machineId, message: `a registration for the machine of agent ${victim.agentId} was refused: proof not signed by the agent's key` });
  });

  it("cannot replay the victim's own registration, bend its proof to another key, or use a stale one", async () => {
    const own = registerRequest(token, victim.machineId, victim.key);
    const first = await cp.agentClient().register(own);
    expect(first.agentId).toBe(victim.agentId);
    // The exact request again (a captured one): the proof was used.
    const replayed = await refusal(cp.agentClient().register(own));
    expect([Code[replayed.code], replayed.rawMessage]).toEqual(["PermissionDenied", "this registration proof was already used; the agent signs a new one for every registration"]);
    // The victim's signed proof with the attacker's key in the request: it binds the victim's key only.
    const bent = await refusal(cp.agentClient().register({ ...own, agentPublicKey: generateKeyPair().publicKey }));
    expect([Code[bent.code], bent.rawMessage]).toEqual(["InvalidArgument", "proof.agent_public_key must be the request's agent_public_key"]);
    const otherMachine = await refusal(cp.agentClient().register({ ...own, machineId: randomMachineId() }));
    expect([Code[otherMachine.code], otherMachine.rawMessage]).toEqual(["InvalidArgument", "proof.machine_id must be the request's machine_id"]);
    // Signed an hour ago: outside the allowed clock skew.
    const stale = { ...registerRequest(token, victim.machineId, victim.key), ...registerProof(victim.machineId, victim.key, { signTime: new Date(Date.now() - 3600_000) }) };
    const old = await refusal(cp.agentClient().register(stale));
    expect([Code[old.code], old.rawMessage]).toEqual(["PermissionDenied", expect.stringMatching(/^the registration proof was signed 36\d\ds away from the server's clock; check the agent's time$/)]);
    expect((await events("registration_refused", victim.agentId)).slice(0, 2).map((e) => JSON.parse(e.detailJson).reason)).toEqual([
      "proof signed too far from the server's clock",
      "proof replayed",
    ]);
  });

  it("refuses malformed proofs with InvalidArgument", async () => {
    const ok = registerRequest(token, victim.machineId, victim.key);
    const cases: [Partial<typeof ok>, string][] = [
      [{ proofSignature: new Uint8Array(63) }, "proof_signature must be 64 bytes (Ed25519)"],
      [{ proof: new Uint8Array() }, "proof must be 1 to 512 bytes (a serialized redflag.v1.RegisterProof)"],
      [{ proof: new Uint8Array(513) }, "proof must be 1 to 512 bytes (a serialized redflag.v1.RegisterProof)"],
      [{ proof: new Uint8Array([0xff, 0xff]) }, "proof is not a serialized redflag.v1.RegisterProof"],
    ];
    for (const [patch, message] of cases) {
      const err = await refusal(cp.agentClient().register({ ...ok, ...patch }));
      expect([Code[err.code], err.rawMessage]).toEqual(["InvalidArgument", message]);
    }
  });

  it("lets the agent itself register again with a fresh proof, recorded as an info event", async () => {
    const again = await registerTestAgent(cp, token, { machineId: victim.machineId, key: victim.key });
    expect(again.agentId).toBe(victim.agentId);
    await expect(again.client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    const [event] = await events("agent_reregistered", victim.agentId);
    expect(event).toMatchObject({ severity: "info", message: `host-${victim.machineId.slice(0, 6)} registered again, proving possession of its key` });
    expect(JSON.parse(event!.detailJson)).toEqual({ via: "proof", keyChanged: false, wasDecommissioned: false });
  });

  it("a new machine's proof must be signed by the key it registers", async () => {
    const machineId = randomMachineId();
    const key = generateKeyPair();
    const err = await refusal(cp.agentClient().register({ ...registerRequest(token, machineId, key), ...registerProof(machineId, key, { signer: generateKeyPair() }) }));
    expect([Code[err.code], err.rawMessage]).toEqual(["PermissionDenied", "proof_signature does not verify with agent_public_key"]);
    expect(await cp.app.db.prisma.agent.count({ where: { machineId } })).toBe(0);
  });
});

describe("an admin's permission to register again", () => {
  it("lets exactly one registration through, without the old key, until it expires", async () => {
    const token = await newRegistrationToken(cp, 5);
    const host = await registerTestAgent(cp, token);
    const reinstalled = generateKeyPair();
    expect(Code[(await refusal(cp.agentClient().register(registerRequest(token, host.machineId, reinstalled)))).code]).toBe("PermissionDenied");

    const bad = await refusal(cp.admin.fleet.allowReregistration({ agentId: host.agentId, validFor: { seconds: 30n } }));
    expect([Code[bad.code], bad.rawMessage]).toEqual(["InvalidArgument", "valid_for must be from 1 minute to 7 days"]);
    const missing = await refusal(cp.admin.fleet.allowReregistration({ agentId: "00000000-0000-4000-8000-000000000000" }));
    expect(Code[missing.code]).toBe("NotFound");

    const allowed = await cp.admin.fleet.allowReregistration({ agentId: host.agentId });
    const until = timestampDate(allowed.allowedUntil!).getTime();
    expect(until).toBeGreaterThan(Date.now() + 3500_000);
    expect(until).toBeLessThanOrEqual(Date.now() + 3600_000);
    expect(allowed.agent?.reregistrationAllowedUntil).toEqual(allowed.allowedUntil);

    const back = await cp.agentClient().register(registerRequest(token, host.machineId, reinstalled));
    expect(back.agentId).toBe(host.agentId);
    expect(Buffer.from((await row(host.agentId)).publicKey)).toEqual(Buffer.from(reinstalled.publicKey));
    expect((await cp.admin.fleet.getAgent({ agentId: host.agentId })).agent?.reregistrationAllowedUntil).toBeUndefined();
    const [event] = await events("agent_reregistered", host.agentId);
    expect(event).toMatchObject({ severity: "warning", message: `host-${host.machineId.slice(0, 6)} registered again as an admin allowed` });
    expect(JSON.parse(event!.detailJson)).toEqual({ via: "allowed", keyChanged: true, wasDecommissioned: false, allowedBy: "admin.key" });

    // Used up: a second host with yet another key is refused.
    const err = await refusal(cp.agentClient().register(registerRequest(token, host.machineId, generateKeyPair())));
    expect(Code[err.code]).toBe("PermissionDenied");

    // A permission that ran out lets nothing through.
    await cp.admin.fleet.allowReregistration({ agentId: host.agentId, validFor: { seconds: 60n } });
    await cp.app.db.prisma.agent.update({ where: { id: host.agentId }, data: { reregistrationAllowedUntil: new Date(Date.now() - 1000) } });
    expect(Code[(await refusal(cp.agentClient().register(registerRequest(token, host.machineId, generateKeyPair())))).code]).toBe("PermissionDenied");
    expect((await cp.admin.fleet.getAgent({ agentId: host.agentId })).agent?.reregistrationAllowedUntil).toBeUndefined();
  });

  it("is spent once even when two registrations race for it", async () => {
    const token = await newRegistrationToken(cp, 5);
    const host = await registerTestAgent(cp, token);
    await cp.admin.fleet.allowReregistration({ agentId: host.agentId });
    const outcomes = await Promise.all(
      [generateKeyPair(), generateKeyPair(), generateKeyPair()].map((k) =>
        cp
          .agentClient()
          .register(registerRequest(token, host.machineId, k))
          .then(
            () => "ok",
            (e: unknown) => Code[ConnectError.from(e).code],
          ),
      ),
    );
    expect(outcomes.sort()).toEqual(["PermissionDenied", "PermissionDenied", "ok"]);
  });
});

describe("a decommissioned agent", () => {
  it("stays out, even with its own key, until an admin lets it back (audited)", async () => {
    const token = await newRegistrationToken(cp, 1);
    const host = await registerTestAgent(cp, token);
    await cp.admin.fleet.decommissionAgent({ agentId: host.agentId });

    const err = await refusal(cp.agentClient().register(registerRequest(token, host.machineId, host.key)));
    expect([Code[err.code], err.rawMessage]).toEqual([
      "PermissionDenied",
      `this machine's agent ${host.agentId} was decommissioned and stays out until an admin lets it back: redflag agents allow-reregistration ${host.agentId}`,
    ]);
    expect((await cp.admin.fleet.getAgent({ agentId: host.agentId })).agent?.health).toBe(AgentHealth.DECOMMISSIONED);
    const [refused] = await events("registration_refused", host.agentId);
    expect(refused).toMatchObject({ severity: "warning" });
    expect(JSON.parse(refused!.detailJson).reason).toBe("agent decommissioned");

    await cp.admin.fleet.allowReregistration({ agentId: host.agentId, validFor: { seconds: 600n } });
    const entries = (await auditLog.listAuditEntries({ pageSize: 500 })).entries.filter((e) => e.target === `agent:${host.agentId}`);
    const allow = entries.find((e) => e.action === "redflag.v1.FleetService/AllowReregistration");
    expect(allow).toMatchObject({ actorName: "admin.key", outcome: "ok" });
    expect(JSON.parse(allow!.afterJson)).toMatchObject({ decommissioned: true });

    const back = await registerTestAgent(cp, token, { machineId: host.machineId, key: host.key });
    expect(back.agentId).toBe(host.agentId);
    await expect(back.client.pollCommands({ nonce: nonce() })).resolves.toBeDefined();
    expect((await cp.admin.fleet.getAgent({ agentId: host.agentId })).agent?.health).not.toBe(AgentHealth.DECOMMISSIONED);
    const [event] = await events("agent_reregistered", host.agentId);
    expect(event).toMatchObject({ severity: "warning", message: expect.stringMatching(/registered again as an admin allowed \(it was decommissioned\)$/) });
  });
});

describe("the key set in the Register answer", () => {
  it("is the trusted keys signed by each of them, issued when the key was made, the same after a restart", async () => {
    const token = await newRegistrationToken(cp);
    const first = (await registerTestAgent(cp, token)).registration.keySet!;
    const set = fromBinary(TrustedKeySetSchema, first.keySet);
    expect(set.keys.map((k) => k.keyId)).toEqual([cp.app.signingKeyId]);
    const key = await cp.app.db.prisma.signingKey.findUniqueOrThrow({ where: { id: cp.app.signingKeyId } });
    expect(timestampDate(set.issueTime!)).toEqual(key.createdAt);
    expect(first.signatures.map((s) => s.keyId)).toEqual([cp.app.signingKeyId]);
    expect(verifySignature(key.publicKey, KEY_SET_TYPE, first.keySet, first.signatures[0]!.signature)).toBe(true);

    cp = await cp.restart();
    const again = (await registerTestAgent(cp, await newRegistrationToken(cp))).registration.keySet!;
    expect(Buffer.from(again.keySet)).toEqual(Buffer.from(first.keySet));
  });
});

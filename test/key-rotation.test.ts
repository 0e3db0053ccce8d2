import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandOutcome } from "@redflag/gen/command_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import type { SignedKeySet } from "@redflag/gen/common_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reloadSigningKeys } from "../control-plane/src/domain/signing-keys.ts";
import { keyPairFromSecret, unseal } from "../control-plane/src/signing/keys.ts";
import { loadMasterKey } from "../control-plane/src/signing/master-key.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { injectedCommand, startMitm } from "./support/mitm.ts";
import { run } from "./support/processes.ts";

// A signing-key rotation reaches a real agent: on its next poll it accepts the new key set
// (signed by the key it pinned at registration) and verifies commands signed by the new key;
// when the grace ends it drops the old key.
describe("signing-key rotation with a real agent", () => {
  let cp: TestControlPlane;
  let root: string;
  beforeAll(async () => {
    cp = await startTestControlPlane();
    root = await mkdtemp(path.join(tmpdir(), "rf-rotate-"));
  });
  afterAll(async () => {
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("follows the rotation and keeps running commands", async () => {
    const stateDir = path.join(root, "agent");
    const env = { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_LONG_POLL_SECONDS: "0" };
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    expect((await run(["agent/src/main.ts", "register", "--server", cp.url, "--token", secret, "--state-dir", stateDir], { env })).code).toBe(0);
    const agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
    const pinned = async () => (JSON.parse(await readFile(path.join(stateDir, "pinned-keys.json"), "utf8")) as { keys: { keyId: string }[] }).keys.map((k) => k.keyId).sort();
    const oldId = cp.app.signingKeyId;
    expect(await pinned()).toEqual([oldId]);

    const security = createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
    const newId = (await security.rotateSigningKey({})).activeKey!.keyId;
    const cmd = (await cp.admin.commands.createCommand({ agentId, action: { case: "collectSpecs", value: {} } })).command!;
    const once = await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
    expect(once.code, once.stderr).toBe(0);
    expect(once.stderr).toContain("command-signing keys updated");
    expect((await cp.admin.commands.getCommand({ id: cmd.id })).command?.state).toBe(CommandState.SUCCEEDED);
    expect(await pinned()).toEqual([newId, oldId].sort());

    // Grace over: the old key leaves the set, and the agent drops it.
    await cp.app.db.prisma.signingKey.update({ where: { id: oldId }, data: { retiredAt: new Date() } });
    await reloadSigningKeys(cp.app.db.prisma, await loadMasterKey(undefined, cp.dataDir), cp.app.signer);
    expect((await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env })).code).toBe(0);
    expect(await pinned()).toEqual([newId]);
  });

  it("refuses a captured key set replayed after the grace, and with it the retired key's commands", async () => {
    // The agent talks through a man in the middle that records every key set it sees.
    const mitm = await startMitm(cp.url);
    try {
      const stateDir = path.join(root, "replay");
      const env = { REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"), REDFLAG_AGENT_LONG_POLL_SECONDS: "0" };
      const agentRun = () => run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env });
      const { secret, signingKeyFingerprint } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
      const reg = await run(["agent/src/main.ts", "register", "--server", mitm.url, "--token", secret, "--fingerprint", signingKeyFingerprint, "--state-dir", stateDir], { env });
      expect(reg.code, reg.stderr).toBe(0);
      const pinned = async () => (JSON.parse(await readFile(path.join(stateDir, "pinned-keys.json"), "utf8")) as { keys: { keyId: string }[] }).keys.map((k) => k.keyId).sort();
      const captured: SignedKeySet[] = [];
      mitm.onPoll = (res) => {
        if (res.keySet) captured.push(res.keySet);
        return res;
      };

      const security = createClient(SecurityService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [headerInterceptor({ authorization: `Bearer ${cp.adminKey}` })] }));
      const oldId = cp.app.signer.activeKeyId;
      const newId = (await security.rotateSigningKey({})).activeKey!.keyId;
      expect((await agentRun()).code).toBe(0);
      expect(await pinned()).toEqual([newId, oldId].sort());
      expect(captured).toHaveLength(1);

      // Grace over: the agent drops the old key.
      const masterKey = await loadMasterKey(undefined, cp.dataDir);
      await cp.app.db.prisma.signingKey.update({ where: { id: oldId }, data: { retiredAt: new Date() } });
      await reloadSigningKeys(cp.app.db.prisma, masterKey, cp.app.signer);
      expect((await agentRun()).code).toBe(0);
      expect(await pinned()).toEqual([newId]);

      // Replayed: the captured set (validly signed by the new key, which the agent pins), and a
      // command signed by the retired key, whose secret the attacker got hold of.
      const row = await cp.app.db.prisma.signingKey.findUniqueOrThrow({ where: { id: oldId } });
      const retired = keyPairFromSecret(unseal(masterKey, `redflag.signing-key.${oldId}`, row.privateKeyEnc));
      const { agentId } = JSON.parse(await readFile(path.join(stateDir, "agent.json"), "utf8")) as { agentId: string };
      const injected = randomUUID();
      mitm.onPoll = (res, req) => ({
        ...res,
        keySet: captured[0],
        commands: [
          ...res.commands,
          injectedCommand(injected, agentId, req.nonce, retired),
        ],
      });
      const replayed = await agentRun();
      expect(replayed.code, replayed.stderr).toBe(0);
      expect(replayed.stderr).toMatch(/"reason":"key set issued \S+ is not newer than the one this agent holds \(\S+\): an old set replayed","msg":"signing-key update refused/);
      expect(await pinned()).toEqual([newId]);
      const result = mitm.reports.flatMap((r) => r.results).find((r) => r.commandId === injected);
      expect(result).toMatchObject({ outcome: CommandOutcome.REJECTED, message: expect.stringContaining(`unknown signing key ${oldId}`) });
    } finally {
      await mitm.close();
    }
  });
});

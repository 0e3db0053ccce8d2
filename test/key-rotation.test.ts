import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CommandState } from "@redflag/gen/command_service_pb";
import { SecurityService } from "@redflag/gen/security_service_pb";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reloadSigningKeys } from "../control-plane/src/services/security-service.ts";
import { loadMasterKey } from "../control-plane/src/signing/master-key.ts";
import { headerInterceptor, startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
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
    await cp.app.db.prisma.signingKey.update({ where: { id: oldId }, data: { retiredAt: new Date(Date.now() - 1000) } });
    await reloadSigningKeys(cp.app.db.prisma, await loadMasterKey(undefined, cp.dataDir), cp.app.signer);
    expect((await run(["agent/src/main.ts", "run", "--once", "--state-dir", stateDir], { env })).code).toBe(0);
    expect(await pinned()).toEqual([newId]);
  });
});

import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createAgentApi, createAgentTransport, type AgentApi, type AgentTransport } from "../agent/src/client.ts";
import { generateKeyPair } from "../agent/src/trust/envelope.ts";
import { silentLogger } from "../agent/src/log.ts";
import { registrationFromResponse } from "../agent/src/register.ts";
import { createSession } from "../agent/src/session.ts";
import { openJournal } from "../agent/src/state/journal.ts";
import { registrationFile } from "../agent/src/state/registration.ts";
import { newRegistrationToken, nonce, registerRequest } from "../control-plane/test/support/agents.ts";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";

let cp: TestControlPlane;
let stateDir: string;
let transport: AgentTransport;
beforeAll(async () => {
  cp = await startTestControlPlane();
  stateDir = await mkdtemp(path.join(tmpdir(), "redflag-renew-"));
  transport = await createAgentTransport(cp.url, undefined);
});
afterAll(async () => {
  transport?.close();
  await cp?.close();
  await rm(stateDir, { recursive: true, force: true });
});

// The agent's own session code against a real control plane, with the answer to its first Renew
// lost on the way back (the control plane did rotate the refresh token).
it("an agent whose Renew answer was lost sends the same request again and keeps its credentials", async () => {
  const api = createAgentApi(transport.transport);
  const key = generateKeyPair();
  const machineId = randomBytes(32).toString("hex");
  const token = await newRegistrationToken(cp);
  const res = await api.register(registerRequest(token, machineId, { keyId: "", ...key }));
  const registered = registrationFromResponse(res, { serverUrl: cp.url, caFile: undefined, token }, new Date(), undefined);
  // An access token near the end of its life, so the next call renews first.
  const registration = { ...registered, accessTokenIssueTime: new Date(Date.now() - 3540_000), accessTokenExpireTime: new Date(Date.now() + 60_000) };

  const sent: Buffer[] = [];
  let lose = 1;
  const lossy: AgentApi = {
    ...api,
    async renew(req, signal) {
      sent.push(Buffer.from(req.payload!));
      const answer = await api.renew(req, signal);
      if (lose-- > 0) throw new ConnectError("the connection dropped before the answer arrived", Code.Unavailable);
      return answer;
    },
  };
  const session = createSession({
    api: lossy,
    file: registrationFile(stateDir),
    registration,
    journal: await openJournal(stateDir),
    pins: new Map(res.trustedKeys.map((k) => [k.keyId, k.publicKey])),
    key,
    machineId,
    logger: silentLogger,
  });
  const poll = () => session.call((creds) => api.pollCommands({ nonce: nonce(), waitSeconds: 0 }, creds));

  await expect(poll()).rejects.toMatchObject({ code: Code.Unavailable });
  await expect(poll()).resolves.toBeDefined();

  expect(sent).toHaveLength(2);
  expect(sent[1]!.equals(sent[0]!)).toBe(true);
  // Renewed, not revoked and enrolled again.
  expect(session.registration.refreshToken).not.toBe(registered.refreshToken);
  expect(session.registration.registerTime).toEqual(registered.registerTime);
  expect(await cp.app.db.prisma.securityEvent.count({ where: { agentId: res.agentId, type: "refresh_token_reuse" } })).toBe(0);
  const agent = await cp.app.db.prisma.agent.findUniqueOrThrow({ where: { id: res.agentId } });
  expect(agent.credentialGeneration).toBe(1);
});

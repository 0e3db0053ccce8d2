import { CommandState } from "@redflag/gen/command_service_pb";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { run } from "./support/processes.ts";

// A real agent process facing a control plane whose signing key it never pinned: every command
// is rejected with the reason, reported, and never run.
describe("an agent and a signing key it did not pin", () => {
  let cp: TestControlPlane;
  let stateDir: string;
  const env = {
    REDFLAG_AGENT_MACHINE_ID_SEED: randomBytes(8).toString("hex"),
    REDFLAG_AGENT_APT_REFRESH: "0",
    REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
  };
  const agent = (...args: string[]) => run(["agent/src/main.ts", ...args, "--state-dir", stateDir], { env });

  beforeAll(async () => {
    cp = await startTestControlPlane();
    stateDir = path.join(await mkdtemp(path.join(tmpdir(), "rf-agent-")), "state");
  });
  afterAll(async () => {
    await cp?.close();
    await rm(path.dirname(stateDir), { recursive: true, force: true });
  });

  it("rejects the command and reports why", async () => {
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    const reg = await agent("register", "--server", cp.url, "--token", secret);
    expect(reg.code, reg.stderr).toBe(0);
    const pinned = cp.app.signingKeyId;

    // Replace the control plane's signing key behind the agent's back.
    await cp.app.db.prisma.signingKey.updateMany({ data: { active: false, retiredAt: new Date() } });
    cp = await cp.restart();
    expect(cp.app.signingKeyId).not.toBe(pinned);

    const [agentRow] = (await cp.admin.fleet.listAgents({})).agents;
    const created = await cp.admin.commands.createCommand({
      agentId: agentRow!.id,
      action: { case: "collectSpecs", value: {} },
    });
    const once = await agent("run", "--once");
    expect(once.code, once.stderr).toBe(0);
    const command = (await cp.admin.commands.getCommand({ id: created.command!.id })).command!;
    expect(command.state).toBe(CommandState.REJECTED);
    expect(command.result?.message).toMatch(new RegExp(`unknown signing key ${cp.app.signingKeyId}`));
    expect(command.result?.detail.case).toBeUndefined();
  });
});

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { PollCommandsResponseSchema, RegisterResponseSchema } from "@redflag/gen/agent_service_pb";
import { CommandState } from "@redflag/gen/command_service_pb";
import { PackageResultState } from "@redflag/gen/command_pb";
import { AgentConfigSchema, type SignedAgentConfig, SignedAgentConfigSchema } from "@redflag/gen/common_pb";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestControlPlane, type TestControlPlane } from "../control-plane/test/support/control-plane.ts";
import { createFakeApt, type FakeApt } from "./support/fake-apt.ts";
import { forgetConfigRevision, rewriteFields, startMitmProxy, stripHoldsFromPollAnswer, type MitmProxy } from "./support/mitm-proxy.ts";
import { run } from "./support/processes.ts";

const POLL = "/redflag.v1.AgentService/PollCommands";
const REGISTER = "/redflag.v1.AgentService/Register";

// Issue 13, item 7, end to end: a real control plane, real agent processes on a host whose apt is
// a stateful fake, and a man in the middle on the agent's connection. The operator holds openssl;
// the attacker strips the holds from the poll answer (keeping the revision), replays an older
// config, or hands one agent another's config. The agent refuses each, keeps its last verified
// config, and openssl stays where it is.
// Installing with apt needs root; these machines run the tests as root.
describe.runIf(process.getuid?.() === 0)("the agent config and a man in the middle", () => {
  let cp: TestControlPlane;
  let proxy: MitmProxy;
  let root: string;
  let apt: FakeApt;
  let agentId: string;
  // Every signed config the control plane answered with, in order.
  const seen: SignedAgentConfig[] = [];
  const env = (seed: string) => ({
    REDFLAG_AGENT_MACHINE_ID_SEED: seed,
    REDFLAG_AGENT_APT_REFRESH: "0",
    REDFLAG_AGENT_LONG_POLL_SECONDS: "0",
    PATH: `${apt.bin}:${process.env.PATH}`,
  });
  const seedA = randomBytes(8).toString("hex");
  const stateDir = (name: string) => path.join(root, name);

  const agent = async (name: string, seed: string, ...args: string[]) => {
    const out = await run(["agent/src/main.ts", ...args, "--state-dir", stateDir(name)], { env: env(seed), timeoutMs: 60_000 });
    expect(out.code, out.stderr).toBe(0);
    return out;
  };
  const cli = async (...args: string[]) => {
    const out = await run(["control-plane/src/cli/main.ts", "--server", cp.url, "--api-key", cp.adminKey, ...args]);
    expect(out.code, out.stderr).toBe(0);
    return out.stdout;
  };
  // The config agent A applies, from its state directory (root-only, trusted local state).
  const appliedByA = async () => {
    const saved = JSON.parse(await readFile(path.join(stateDir("a"), "agent.json"), "utf8")) as { agentConfig: string };
    return fromBinary(AgentConfigSchema, Buffer.from(saved.agentConfig, "base64"));
  };
  const opened = (signed: SignedAgentConfig) => fromBinary(AgentConfigSchema, signed.config);
  // Puts `signed` into a PollCommands answer in place of whatever config it carried.
  const withConfig = (body: Uint8Array, signed: SignedAgentConfig) => {
    const rest = rewriteFields(body, { 5: () => null });
    const writer = new BinaryWriter().raw(rest);
    writer.tag(5, WireType.LengthDelimited).bytes(toBinary(SignedAgentConfigSchema, signed));
    return writer.finish();
  };
  const watch = (p: string, body: Uint8Array) => {
    const signed =
      p === POLL ? fromBinary(PollCommandsResponseSchema, body).signedConfig : p === REGISTER ? fromBinary(RegisterResponseSchema, body).signedConfig : undefined;
    if (signed) seen.push(signed);
    return body;
  };

  beforeAll(async () => {
    cp = await startTestControlPlane();
    proxy = await startMitmProxy(cp.url);
    root = await mkdtemp(path.join(tmpdir(), "rf-signed-config-"));
    apt = await createFakeApt(root, {
      installed: ["openssl amd64 3.0.15-1~deb12u1", "curl amd64 7.88.1-10+deb12u14"],
      available: ["openssl amd64 3.0.17-1~deb12u2 bookworm-security", "curl amd64 7.88.1-10+deb12u15 bookworm-security"],
    });
    proxy.response = watch;
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 2 });
    // Enrolled through the man in the middle, who passes registration through untouched.
    await agent("a", seedA, "register", "--server", proxy.url, "--token", secret);
    agentId = (await cp.admin.fleet.listAgents({})).agents[0]!.id;
  });
  afterAll(async () => {
    await proxy?.close();
    await cp?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("keeps a held package held when the holds are stripped from the poll answer", async () => {
    await cli("holds", "set", "--source", "apt", "--name", "openssl", "--reason", "waiting for the vendor's build");
    await agent("a", seedA, "run", "--once");
    expect((await appliedByA()).holds).toMatchObject([{ source: "apt", name: "openssl" }]);

    // From now on the control plane is made to resend the config on every poll, and the holds are
    // cut out of it on the way back; the revision stays what the agent has.
    proxy.request = (p, body) => (p === POLL ? forgetConfigRevision(body) : body);
    proxy.response = (p, body) => (p === POLL ? stripHoldsFromPollAnswer(watch(p, body)) : body);
    const queued = JSON.parse(await cli("--json", "commands", "queue", "--agent", agentId, "--type", "install_updates", "--package", "apt:openssl", "--package", "apt:curl")) as {
      command: { id: string };
    };
    const out = await agent("a", seedA, "run", "--once");
    proxy.request = undefined;
    proxy.response = watch;

    expect(out.stderr).toContain("agent config refused; keeping the last verified config");
    expect(out.stderr).toContain(`signature does not verify with pinned key ${cp.app.signingKeyId}`);
    expect((await appliedByA()).holds).toMatchObject([{ source: "apt", name: "openssl" }]);
    const installed = await apt.installed();
    expect(installed.get("openssl")).toBe("3.0.15-1~deb12u1");
    expect(installed.get("curl")).toBe("7.88.1-10+deb12u15");
    const command = (await cp.admin.commands.getCommand({ id: queued.command.id })).command!;
    expect(command.state).toBe(CommandState.SUCCEEDED);
    if (command.result?.detail.case !== "installUpdates") throw new Error("no install detail");
    expect(command.result.detail.value.packages.map((p) => [p.name, p.state, p.reason])).toEqual([
      ["openssl", PackageResultState.SKIPPED, "held by the agent config (openssl): waiting for the vendor's build"],
      ["curl", PackageResultState.INSTALLED, ""],
    ]);
  });

  it("refuses an older config replayed and another agent's config, and keeps the holds", async () => {
    const mine = seen.map(opened).filter((c) => c.agentId === agentId);
    // The config A got at registration, before openssl was held.
    const beforeHold = seen.find((s) => opened(s).agentId === agentId && opened(s).holds.length === 0)!;
    expect(beforeHold).toBeDefined();
    expect(mine.some((c) => c.holds.length > 0)).toBe(true);

    proxy.request = (p, body) => (p === POLL ? forgetConfigRevision(body) : body);
    proxy.response = (p, body) => (p === POLL ? withConfig(body, beforeHold) : body);
    const replayed = await agent("a", seedA, "run", "--once");
    expect(replayed.stderr).toContain("agent config refused; keeping the last verified config");
    expect(replayed.stderr).toMatch(/config revision \d+ issued at \S+ is not newer than the one applied/);
    expect((await appliedByA()).holds).toMatchObject([{ name: "openssl" }]);

    // A second host enrols through the same man in the middle, who hands its config (signed by
    // the same key) to A.
    proxy.request = undefined;
    proxy.response = watch;
    const { secret } = await cp.admin.tokens.createRegistrationToken({ seats: 1 });
    await agent("b", randomBytes(8).toString("hex"), "register", "--server", proxy.url, "--token", secret);
    const foreign = seen.at(-1)!;
    expect(opened(foreign).agentId).not.toBe(agentId);
    proxy.request = (p, body) => (p === POLL ? forgetConfigRevision(body) : body);
    proxy.response = (p, body) => (p === POLL ? withConfig(body, foreign) : body);
    const swapped = await agent("a", seedA, "run", "--once");
    expect(swapped.stderr).toContain(`config is for agent ${opened(foreign).agentId}, not this one`);
    expect((await appliedByA()).holds).toMatchObject([{ name: "openssl" }]);

    // Left alone, A is sent the config it applies once more: nothing to refuse, nothing changes.
    proxy.response = watch;
    const clean = await agent("a", seedA, "run", "--once");
    proxy.request = undefined;
    expect(clean.stderr).not.toContain("agent config refused");
    expect((await appliedByA()).holds).toMatchObject([{ name: "openssl" }]);
  });
});

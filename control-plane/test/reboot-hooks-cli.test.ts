import { fromBinary } from "@bufbuild/protobuf";
import { CommandSchema } from "@redflag/gen/command_pb";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newRegistrationToken, nonce, registerTestAgent, type TestAgent } from "./support/agents.ts";
import { runInProcess } from "./support/cli.ts";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.ts";

// redflag commands queue --type reboot with hooks, in process against a real control plane: what
// the agent receives (the hook names, their limit, a command limit that covers the pre-hook), and
// that a hook that is not a name, a limit out of bounds or a hook option that would do nothing is
// refused and queues nothing.

let cp: TestControlPlane;
let web: TestAgent;
let config: string;
const admin = (args: string[]) => runInProcess(["--server", cp.url, "--api-key", cp.adminKey, ...args], { env: { REDFLAG_CONFIG_DIR: config } });
const queue = (...args: string[]) => admin(["commands", "queue", "--agent", "web-9", ...args]);

// What the agent is sent on its next poll (which delivers it: the next reboot may be queued).
async function delivered() {
  const res = await web.client.pollCommands({ nonce: nonce(), status: { agentVersion: "0.1.0" } });
  return res.commands.map((c) => fromBinary(CommandSchema, c.command));
}

const queued = async () => (await cp.admin.commands.listCommands({ agentId: web.agentId, pageSize: 50 })).commands;

beforeAll(async () => {
  cp = await startTestControlPlane({ REDFLAG_SWEEP_INTERVAL_MS: "3600000" });
  config = await mkdtemp(path.join(os.tmpdir(), "rf-cli-hooks-"));
  web = await registerTestAgent(cp, await newRegistrationToken(cp), { hostname: "web-9" });
});
afterAll(async () => {
  await cp?.close();
  await rm(config, { recursive: true, force: true });
});

describe("redflag commands queue --type reboot with hooks", () => {
  it("names the options in its help", async () => {
    const help = await runInProcess(["commands", "queue", "--help"]);
    expect(help.code).toBe(0);
    const text = help.stdout.replace(/\s+/g, " ");
    expect(text).toContain("--pre-hook <name> reboot: run this hook before the reboot is scheduled; a failure cancels the reboot.");
    expect(text).toContain("--post-hook <name> reboot: run this hook when the agent starts after the reboot.");
    expect(text).toContain("--hook-timeout <duration> reboot: time limit of each hook, 1s to 30m (default 5m)");
  });

  it("sends the hooks and their limit to the agent, with a command limit that covers the pre-hook", async () => {
    const run = await queue("--type", "reboot", "--force", "--pre-hook", "drain", "--post-hook", "undrain.sh", "--hook-timeout", "15m");
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    const [sent] = await delivered();
    expect(sent?.id).toBe(id);
    expect(sent?.action).toMatchObject({ case: "reboot", value: { force: true, preHook: "drain", postHook: "undrain.sh", hookTimeoutSeconds: 900 } });
    // The pre-hook's 15 minutes plus 2 for the rest.
    expect(sent?.timeoutSeconds).toBe(1020);

    // The default hook limit (5m, sent as 0) fits in the 10 minutes a hooked reboot has at least.
    const pre = await queue("--type", "reboot", "--pre-hook", "drain");
    expect(pre.code, pre.stderr).toBe(0);
    const [second] = await delivered();
    expect(second?.action).toMatchObject({ case: "reboot", value: { preHook: "drain", postHook: "", hookTimeoutSeconds: 0 } });
    expect(second?.timeoutSeconds).toBe(600);

    // A post-hook runs after the restart, outside the command: the command keeps the agent's limit,
    // and a --timeout given is kept as given.
    const post = await queue("--type", "reboot", "--post-hook", "undrain", "--hook-timeout", "30s");
    expect(post.code, post.stderr).toBe(0);
    const [third] = await delivered();
    expect(third?.action).toMatchObject({ case: "reboot", value: { preHook: "", postHook: "undrain", hookTimeoutSeconds: 30 } });
    expect(third?.timeoutSeconds).toBe(0);
    const timed = await queue("--type", "reboot", "--pre-hook", "drain", "--hook-timeout", "1m", "--timeout", "20m");
    expect(timed.code, timed.stderr).toBe(0);
    const [fourth] = await delivered();
    expect(fourth?.timeoutSeconds).toBe(1200);
    expect(fourth?.action).toMatchObject({ case: "reboot", value: { preHook: "drain", hookTimeoutSeconds: 60 } });
  });

  it("refuses a hook that is not a name, a limit out of bounds and hook options that would do nothing; nothing is queued", async () => {
    const before = (await queued()).length;
    const refused: [string[], RegExp][] = [
      [["--type", "reboot", "--pre-hook", "../../bin/sh"], /^redflag: InvalidArgument: reboot\.pre_hook "\.\.\/\.\.\/bin\/sh" is not a hook name: letters, digits/],
      [["--type", "reboot", "--post-hook", "/usr/local/bin/undrain"], /^redflag: InvalidArgument: reboot\.post_hook "\/usr\/local\/bin\/undrain" is not a hook name/],
      [["--type", "reboot", "--pre-hook", "-rf"], /^redflag: InvalidArgument: reboot\.pre_hook "-rf" is not a hook name/],
      [["--type", "reboot", "--pre-hook", "drain", "--hook-timeout", "0s"], /^redflag: --hook-timeout must be from 1s to 30m\n$/],
      [["--type", "reboot", "--pre-hook", "drain", "--hook-timeout", "31m"], /^redflag: --hook-timeout must be from 1s to 30m\n$/],
      [["--type", "reboot", "--hook-timeout", "2m"], /^redflag: --hook-timeout limits the hooks of a reboot: give --pre-hook or --post-hook too\n$/],
      [["--type", "scan_updates", "--pre-hook", "drain"], /^redflag: --pre-hook, --post-hook and --hook-timeout are for --type reboot, not scan_updates\n$/],
      [["--type", "reboot", "--pre-hook", "drain", "--hook-timeout", "10m", "--timeout", "5m"], /^redflag: --timeout 5m leaves the pre-hook no time to finish \(its limit is 10m\): give a longer --timeout, or leave it out\n$/],
      [["--type", "reboot", "--pre-hook", "drain", "--hook-timeout", "soon"], /argument 'soon' is invalid\. "soon" is not a duration/],
    ];
    for (const [args, message] of refused) {
      const run = await queue(...args);
      expect(run.code, args.join(" ")).not.toBe(0);
      expect(run.stdout).toBe("");
      expect(run.stderr, args.join(" ")).toMatch(message);
    }
    expect(await queued()).toHaveLength(before);
    expect(await delivered()).toEqual([]);
  });
});

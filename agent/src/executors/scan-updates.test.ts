import { create } from "@bufbuild/protobuf";
import { AgentConfigSchema } from "@redflag/gen/common_pb";
import { CommandOutcome, CommandSchema, ScanUpdatesSchema, SubsystemRunState } from "@redflag/gen/command_pb";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../log.ts";
import { executeCommand } from "./index.ts";

const scan = (subsystems: string[] = []) =>
  create(CommandSchema, { id: "c", sequence: 1n, action: { case: "scanUpdates", value: create(ScanUpdatesSchema, { subsystems }) } });
const opts = { agentConfig: undefined, aptRefresh: false, env: process.env, logger: silentLogger };

describe("scan_updates", () => {
  it("runs the real APT scanner", async () => {
    const result = await executeCommand(scan(), opts);
    expect(result.outcome, result.message).toBe(CommandOutcome.SUCCEEDED);
    if (result.detail.case !== "scanUpdates") throw new Error("no scan detail");
    const { updates, subsystems } = result.detail.value;
    expect(subsystems).toHaveLength(1);
    expect(subsystems[0]).toMatchObject({ subsystem: "apt", state: SubsystemRunState.RAN, updateCount: updates.length });
    expect(subsystems[0]!.duration).toBeDefined();
    expect(result.message).toBe(`found ${updates.length} update(s), ${updates.filter((u) => u.security).length} security`);
  });

  it("skips subsystems this agent does not have, and apt when the config disables it", async () => {
    const explicit = await executeCommand(scan(["dnf"]), opts);
    expect(explicit.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(explicit.detail.value).toMatchObject({
      subsystems: [{ subsystem: "dnf", state: SubsystemRunState.SKIPPED, message: "dnf is not supported by this agent yet" }],
    });
    const disabled = await executeCommand(scan(), {
      ...opts,
      agentConfig: create(AgentConfigSchema, { subsystems: [{ name: "apt", enabled: false }] }),
    });
    expect(disabled.message).toBe("no package source to scan on this host");
    expect(disabled.detail.value).toMatchObject({ subsystems: [{ subsystem: "apt", state: SubsystemRunState.SKIPPED }] });
  });

  it("reports NOT_PRESENT where apt is missing", async () => {
    const result = await executeCommand(scan(), { ...opts, env: { PATH: "/nonexistent" } });
    expect(result.outcome).toBe(CommandOutcome.SUCCEEDED);
    expect(result.detail.value).toMatchObject({ subsystems: [{ subsystem: "apt", state: SubsystemRunState.NOT_PRESENT }] });
  });
});
